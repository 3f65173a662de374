"""Keeping the tracks and images of rooms in use from expiring; forgetting expired ones.

A room is in use while it has a connected member. Its material keys carry a
TTL of ``material_ttl_s``, renewed every third of it (the planner,
mixer/planner.py, says when, and which rooms); the material of a room left
alone for that long expires with nothing else to clean up. A key found
missing (it expired before someone came back) is dropped from the room's
state, so no page asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from redis.asyncio import Redis

from mixer import store
from mixer.owned import OwnedRoom

__all__ = ["keeping_material", "refresh_material"]

log = logging.getLogger(__name__)


def keeping_material(rooms: Iterable[OwnedRoom]) -> set[str]:
    """The rooms that list tracks or images and have a connected member."""
    return {
        owned.name
        for owned in rooms
        if any(owned.state.material.blob_ids())
        and any(m.connected for m in owned.state.members.values())
    }


async def refresh_material(redis: Redis, rooms: list[OwnedRoom], ttl_s: float) -> None:
    """Renew the TTL of every track and image of ``rooms``; forget the ones gone."""
    ttl_ms = round(ttl_s * 1000)
    work = [(owned, store.blob_keys(owned.name, owned.state)) for owned in rooms]
    if not work:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for _owned, blobs in work:
            for _kind, _id, key in blobs:
                pipe.pexpire(key, ttl_ms)
        results = iter(await pipe.execute())
    for owned, blobs in work:
        gone = [(kind, blob_id) for kind, blob_id, _key in blobs if not next(results)]
        if gone:
            log.info("room %s: %d expired track(s)/image(s) forgotten", owned.name, len(gone))
            owned.state.forget_material(
                {i for k, i in gone if k == "track"}, {i for k, i in gone if k == "image"}
            )
