"""Taking a room over: its state, links and checkpoint read from Redis into a new host.

A mixer that has just won a room's lease reads what the last owner wrote
(mixer/store.py), the members' links, and the failover checkpoint; with a
readable checkpoint the ring carries on where the last owner stopped and the
input stream is replayed from the checkpoint's cursor, else the room starts
silent at the present.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio import Redis

from common import keys, records
from common.clock import now_samples
from common.constants import SAMPLE_RATE
from common.errors import ValidationError
from common.link import parse_links
from common.records import Checkpoint
from common.settings import MixerSettings
from mixer import store
from mixer.host import HostCounters, HostTiming, RoomHost
from mixer.owned import OwnedRoom

__all__ = ["adopt"]

log = logging.getLogger(__name__)


async def adopt(
    redis: Redis,
    room: str,
    settings: MixerSettings,
    timing: HostTiming,
    counters: HostCounters,
) -> tuple[OwnedRoom, bool]:
    """The room as its new owner runs it, and whether its ring came from a checkpoint.

    Raises a Redis error when Redis fails meanwhile (the caller gives the lease back).
    """
    state, ctl_cursor, meta = await store.load_room(redis, room, settings)
    raw_links: Any = await redis.hgetall(keys.room_links(room))
    raw_checkpoint = await store.read_checkpoint(redis, room)
    now = now_samples()
    owned = OwnedRoom(
        host=RoomHost(
            room,
            state,
            now,
            links=parse_links(raw_links),
            timing=timing,
            mixer_id=settings.mixer_id,
            counters=counters,
            meta=meta,
        ),
        # Without a checkpoint, audio queued before we owned the room is stale by now:
        # start at the present.
        in_cursor=f"{int(time.time() * 1000)}-0".encode(),
        ctl_cursor=ctl_cursor,
    )
    restored = False
    if raw_checkpoint:
        try:
            entries = [records.decode(raw, Checkpoint) for raw in raw_checkpoint]
            if owned.host.restore(entries, now):
                owned.in_cursor = entries[-1].in_cursor.encode()
                restored = True
                log.info(
                    "room %s: ring restored from a checkpoint %.1f s old",
                    room,
                    (now - entries[-1].clock) / SAMPLE_RATE,
                )
        except ValidationError as exc:
            log.warning("room %s: unreadable checkpoint (%s); starting silent", room, exc)
    log.info("room %s: now owned by %s (%d members)", room, settings.mixer_id, len(state.members))
    return owned, restored
