"""What the recorder reads from a room in Redis and says to it.

The song record, members and settings (decoded, unreadable records counted
and skipped), the recording lease (``bb:{R}:reclease``, with the mixer's
compare-and-set scripts), the tap subscription the recorder renews as a
gateway would, the mixer's refusal of that tap, the backing track, and the
``recording`` event that tells the room's pages a recording is listed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis

from common import keys, records
from common.commands import Envelope, SubscribeTap, encode_envelope
from common.constants import SAMPLE_RATE
from common.errors import ValidationError
from common.events import Recorded, Reply, decode_event, encode_event
from common.lease import RELEASE_SCRIPT, RENEW_SCRIPT, LeaseResult
from common.records import Member, RoomMeta, Song
from common.redisclient import REDIS_ERRORS, command_room
from common.streams import parse_entries
from recorder import files
from recorder.take import TakeInfo

__all__ = ["REDIS_FAILURES", "SUBSCRIBER", "SUBSCRIBE_EVERY_S", "SUBSCRIBE_TTL_S", "RoomIO"]

log = logging.getLogger(__name__)

REDIS_FAILURES: Final = (*REDIS_ERRORS, RuntimeError, OSError)
SUBSCRIBER: Final = "recorder"
"""The tap subscription's name: the same for every recorder, so a successor renews it."""
SUBSCRIBE_EVERY_S: Final = 2.0
SUBSCRIBE_TTL_S: Final = 10.0


class RoomIO:
    """The Redis side of recording, for the recorder ``recorder_id``."""

    def __init__(
        self, redis: Redis, recorder_id: str, lease_ttl_ms: int, counters: Counter[str]
    ) -> None:
        self.redis = redis
        self.recorder_id = recorder_id
        self.lease_ttl_ms = lease_ttl_ms
        self.counters = counters
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    # --- the recording lease ---------------------------------------------------------

    async def renew(self, room: str) -> bool:
        """Take or keep the room's recording lease; False when another recorder holds it."""
        result = await self._renew(
            keys=[keys.room_reclease(room)], args=[self.recorder_id, self.lease_ttl_ms]
        )
        return bool(result != LeaseResult.LOST)

    async def release(self, room: str) -> None:
        await self._release(keys=[keys.room_reclease(room)], args=[self.recorder_id])

    # --- reads ------------------------------------------------------------------------

    async def active_rooms(self) -> set[str]:
        active: Any = await self.redis.smembers(keys.ACTIVE_ROOMS)
        return {bytes(r).decode() for r in active}

    async def songs(self, rooms: list[str]) -> list[Song | None]:
        """Every room's song record, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.hget(keys.room_song(room), "state")
            raw_songs: list[Any] = await pipe.execute()
        return [self._song(room, raw) for room, raw in zip(rooms, raw_songs, strict=True)]

    async def song(self, room: str) -> Song | None:
        return self._song(room, await self.redis.hget(keys.room_song(room), "state"))

    async def room(self, room: str) -> tuple[list[Member], RoomMeta]:
        """The room's members and settings, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.room_members(room))
            pipe.hgetall(keys.room_meta(room))
            raw_members, raw_meta = await pipe.execute()
        return self._members(raw_members), self._meta(raw_meta)

    async def look(self, room: str) -> tuple[Song | None, list[Member], RoomMeta]:
        """The song record, members and settings of a room, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.room_song(room), "state")
            pipe.hgetall(keys.room_members(room))
            pipe.hgetall(keys.room_meta(room))
            raw_song, raw_members, raw_meta = await pipe.execute()
        return self._song(room, raw_song), self._members(raw_members), self._meta(raw_meta)

    async def track(self, info: TakeInfo) -> npt.NDArray[np.float32] | None:
        """The take's backing track, decoded (in a worker thread); None without one."""
        if info.track_id is None:
            return None
        data: Any = await self.redis.get(keys.room_track(info.room, info.track_id))
        if data is None:
            log.warning(
                "room %s: backing track %s is gone; recorded without it", info.room, info.track_id
            )
            return None
        try:
            return await asyncio.to_thread(files.decode_track, bytes(data))
        except (RuntimeError, ValueError) as exc:
            log.warning("room %s: backing track unreadable (%s)", info.room, exc)
            return None

    def _song(self, room: str, raw: Any) -> Song | None:
        if raw is None:
            return None
        try:
            return records.decode(raw, Song)
        except ValidationError as exc:
            log.debug("room %s: unreadable song record: %s", room, exc)
            self.counters["bad_song_records"] += 1
            return None

    def _members(self, raw: Any) -> list[Member]:
        members = []
        for value in raw.values():
            try:
                members.append(records.decode(value, Member))
            except ValidationError:
                self.counters["bad_member_records"] += 1
        return members

    def _meta(self, raw: Any) -> RoomMeta:
        try:
            return records.decode_meta(raw)
        except ValidationError:
            self.counters["bad_meta_records"] += 1
            return RoomMeta()

    # --- the tap ----------------------------------------------------------------------

    async def subscribe(self, info: TakeInfo) -> None:
        """Keep the take's tap subscribed (as a gateway does: the room stays active, and
        owned, while it is recorded)."""
        envelope = Envelope(
            singer=SUBSCRIBER,
            gw=self.recorder_id,
            cmd=SubscribeTap(delay_s=info.delay / SAMPLE_RATE, ttl_s=SUBSCRIBE_TTL_S),
        )
        await command_room(self.redis, info.room, encode_envelope(envelope))

    async def tap_refusal(self, info: TakeInfo) -> str | None:
        """The mixer's answer to our tap subscription when it refused it (its message),
        None when it accepted it or has not answered."""
        raw: Any = await self.redis.xrevrange(keys.room_events(info.room), count=200)
        for _entry_id, value in parse_entries(raw):
            try:
                event = decode_event(value)
            except ValidationError:
                continue
            if (
                isinstance(event, Reply)
                and event.singer == SUBSCRIBER
                and event.gw == self.recorder_id
                and event.cmd == "subscribe_tap"
            ):
                return None if event.ok else event.message
        return None

    # --- writes -----------------------------------------------------------------------

    async def announce(self, info: TakeInfo, length: int, flac: str) -> None:
        """Tell the room's pages (through their gateways) that the recording is listed."""
        event = Recorded(
            song=info.number, start_pos=info.start_pos, end_pos=info.start_pos + length, flac=flac
        )
        try:
            await self.redis.xadd(
                keys.room_events(info.room),
                {b"d": encode_event(event)},
                maxlen=keys.EVENTS_MAXLEN,
                approximate=True,
            )
        except REDIS_FAILURES as exc:
            # The recording is on disk and listed; a page finds it on its next look.
            log.warning("room %s: could not announce song %d: %s", info.room, info.number, exc)
            self.counters["redis_errors"] += 1
