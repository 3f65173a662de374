"""The recorder's asyncio + Redis adapter: finds running songs, holds a recording
lease per room, reads the tap of the last occupied bucket and appends it to the take.

* the **maintenance** loop: heartbeat, renewal of the recording leases;
* the **scan** loop: every ``poll_ms``, the rooms with a running song (or a
  take left on disk by a recorder that died) whose lease is free get a task;
* one **room task** per recorded room, and under it one **take** task per
  song (the next song's take starts while the last one's is finishing):
  keeps its tap subscribed, reads the tap stream (and the input stream for
  stems), feeds :class:`recorder.core.TakeCore` what Redis says and performs
  what it decides (which tap, the song's end, silence for audio that never
  came); file writes and the FLAC and Ogg Opus of a finished take run in
  worker threads. A finished recording is announced to the room's pages
  (a ``recording`` event on ``bb:{R}:events``).

The lease (``bb:{R}:reclease``) uses the mixer's compare-and-set scripts, so a
room's songs are recorded by exactly one live recorder; a successor continues
the take's file from where it stops (the tap stream still holds a few
seconds of windows, so a short takeover loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from redis.asyncio import Redis

from common import keys, records
from common.clock import now_samples
from common.commands import Envelope, SubscribeTap, encode_envelope
from common.constants import SAMPLE_RATE
from common.errors import ValidationError, WireError
from common.events import Recorded, Reply, decode_event, encode_event
from common.lease import RELEASE_SCRIPT, RENEW_SCRIPT, LeaseResult
from common.records import Member, RecorderStatus, RoomMeta, Song
from common.redisclient import REDIS_ERRORS, command_room, xread_keys
from common.settings import RecorderSettings
from common.streams import parse_entries, parse_xread
from common.tracks import song_origin
from common.wire import decode_tap
from recorder import files
from recorder.core import (
    Finish,
    Retap,
    SaveInfo,
    TakeAction,
    TakeCore,
    last_bucket_delay,
    played_by,
    recording_delay,
    starts_take,
)
from recorder.stems import StemWriter
from recorder.take import TakeInfo

__all__ = ["RecorderService", "RecorderStatus"]

log = logging.getLogger(__name__)

REDIS_FAILURES: Final = (*REDIS_ERRORS, RuntimeError, OSError)
SUBSCRIBER: Final = "recorder"
"""The tap subscription's name: the same for every recorder, so a successor renews it."""
SUBSCRIBE_EVERY_S: Final = 2.0
SUBSCRIBE_TTL_S: Final = 10.0
TAP_SILENT_S: Final = 1.0
"""A tap that sends nothing for this long during a song: look for the mixer's refusal."""


class RecorderService:
    """Records every running song of the rooms it holds the recording lease of."""

    def __init__(self, settings: RecorderSettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.root = Path(settings.recordings_dir)
        self.counters: Counter[str] = Counter()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: set[tuple[str, int, int]] = set()
        """(room, song number, start) of the takes this process finished: never again."""
        self._started = time.time()
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; room tasks are cancelled, their takes stay on disk."""
        (self.root / files.TAKES).mkdir(parents=True, exist_ok=True)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._loop(stop, 0.5, self.maintain))
                group.create_task(self._loop(stop, self.settings.poll_ms / 1000, self.scan))
        finally:
            await self._shutdown()

    async def _loop(self, stop: asyncio.Event, period_s: float, step: Any) -> None:
        while not stop.is_set():
            try:
                await step()
            except REDIS_FAILURES as exc:
                self.counters["redis_errors"] += 1
                log.warning("redis unavailable: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period_s)

    async def _shutdown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(*REDIS_FAILURES):
            for room in list(self._tasks):
                await self._release(keys=[keys.room_reclease(room)], args=[self._id])
            await self.redis.delete(keys.recorder_heartbeat(self._id))

    @property
    def _id(self) -> str:
        return self.settings.recorder_id

    def status(self) -> RecorderStatus:
        return RecorderStatus(
            id=self._id,
            pid=os.getpid(),
            started=self._started,
            rooms=sorted(self._tasks),
            counters=dict(self.counters),
        )

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())) or "nothing"

    # --- maintenance -------------------------------------------------------------------

    async def maintain(self) -> None:
        """Heartbeat, and renew every lease we record under (a lost one stops its task)."""
        await self.redis.set(
            keys.recorder_heartbeat(self._id),
            records.encode(self.status()),
            px=self.settings.heartbeat_ttl_ms,
        )
        for room, task in list(self._tasks.items()):
            if task.done():
                continue
            result = await self._renew(
                keys=[keys.room_reclease(room)], args=[self._id, self.settings.lease_ttl_ms]
            )
            if result == LeaseResult.LOST:
                log.warning("room %s: recording lease lost, another recorder goes on", room)
                self.counters["leases_lost"] += 1
                task.cancel()

    async def scan(self) -> None:
        """Start a room task for each room with a song to record and a free lease."""
        for room, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[room]
        active: Any = await self.redis.smembers(keys.ACTIVE_ROOMS)
        leftover = {info.room for info in self._takes_on_disk()}
        rooms = sorted(({bytes(r).decode() for r in active} | leftover) - set(self._tasks))
        # One round trip for every room's song record.
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.hget(keys.room_song(room), "state")
            raw_songs: list[Any] = await pipe.execute()
        for room, raw in zip(rooms, raw_songs, strict=True):
            if room in self._tasks:
                continue
            # A take a dead recorder left is finished even when its room is gone.
            wanted = room in leftover
            song = self._decode_song(room, raw)
            if song is not None and song.start_pos is not None:
                this = (room, song.number, song.start_pos)
                wanted = wanted or (song.running and this not in self._finished)
            if not wanted:
                continue
            result = await self._renew(
                keys=[keys.room_reclease(room)], args=[self._id, self.settings.lease_ttl_ms]
            )
            if result == LeaseResult.LOST:
                continue
            self._tasks[room] = asyncio.create_task(self._record_room(room), name=f"rec-{room}")

    def _takes_on_disk(self) -> list[TakeInfo]:
        found = []
        for path in (self.root / files.TAKES).glob("*.json"):
            info = files.read_info(path)
            if info is not None:
                found.append(info)
        return found

    async def _song(self, room: str) -> Song | None:
        return self._decode_song(room, await self.redis.hget(keys.room_song(room), "state"))

    def _decode_song(self, room: str, raw: Any) -> Song | None:
        if raw is None:
            return None
        try:
            return records.decode(raw, Song)
        except ValidationError as exc:
            log.debug("room %s: unreadable song record: %s", room, exc)
            self.counters["bad_song_records"] += 1
            return None

    # --- one room ----------------------------------------------------------------------

    async def _record_room(self, room: str) -> None:
        """Record the room's songs while we hold its lease: a take left behind, the running
        song, and each song that starts meanwhile, in takes of their own. Our tap lags the
        room by seconds and a take's files take seconds to write, so the next song often
        starts before the last take is done; its take starts at once, while the tap and
        input streams still hold its first seconds."""
        takes: dict[int, asyncio.Task[bool]] = {}
        try:
            for info in [i for i in self._takes_on_disk() if i.room == room]:
                takes[info.number] = self._start_take(info)  # left behind by a dead recorder
            while True:
                song = await self._song(room)
                if song is not None and song.start_pos is not None:
                    done = (room, song.number, song.start_pos) in self._finished
                    if starts_take(song, set(takes), max(takes, default=None), done):
                        info = await self._new_or_existing(room, song)
                        takes[song.number] = self._start_take(info)
                pending = [t for t in takes.values() if not t.done()]
                if not pending:
                    break
                await asyncio.wait(pending, timeout=self.settings.poll_ms / 1000)
        except REDIS_FAILURES as exc:
            log.warning("room %s: redis failed while recording (%s); retried", room, exc)
            self.counters["redis_errors"] += 1
            return
        except Exception:
            log.exception("room %s: recording failed", room)
            self.counters["failures"] += 1
        else:
            if any(t.result() for t in takes.values() if not t.cancelled()):
                return  # a take met a Redis failure: the room is scanned again, lease kept
        finally:
            # Stopped early (cancelled, or failed): the takes stay on disk, and the next
            # holder of the lease carries them on.
            for task in takes.values():
                task.cancel()
        with contextlib.suppress(*REDIS_FAILURES):
            await self._release(keys=[keys.room_reclease(room)], args=[self._id])

    def _start_take(self, info: TakeInfo) -> asyncio.Task[bool]:
        return asyncio.create_task(
            self._take(info), name=f"rec-{info.room}-{info.number}-{info.start_pos}"
        )

    async def _take(self, info: TakeInfo) -> bool:
        """Record one take; True when Redis failed (to be carried on by the next scan)."""
        try:
            await self._record(info)
        except asyncio.CancelledError:
            raise
        except REDIS_FAILURES as exc:
            log.warning("room %s: redis failed while recording (%s); retried", info.room, exc)
            self.counters["redis_errors"] += 1
            return True
        except Exception:
            log.exception("room %s: recording song %d failed", info.room, info.number)
            self.counters["failures"] += 1
        return False

    async def _new_or_existing(self, room: str, song: Song) -> TakeInfo:
        assert song.start_pos is not None
        _pcm, info_path = files.take_paths(self.root, room, song.number, song.start_pos)
        info = files.read_info(info_path)
        if info is not None:
            return info
        members, meta = await self._room(room)
        leader = next((m.name for m in members if m.singer_id == song.leader), "")
        # The song's own material, not what the leader has chosen since it started.
        played = played_by(song, song.number, song.start_pos)
        info = TakeInfo(
            room=room,
            number=song.number,
            start_pos=song.start_pos,
            delay=recording_delay(meta, members),
            leader=leader,
            created=time.time(),
            track_id=played.track.id if played.track else None,
            origin=song_origin(song.start_pos, played.metronome) if played.track else None,
            stems=song.recording.stems,
            # Stems in bucket order: the leader first.
            singers={m.singer_id: m.name for m in sorted(members, key=lambda m: m.delay)}
            if song.recording.stems
            else {},
            clicks=played.metronome if song.recording.metronome and played.metronome.on else None,
        )
        await asyncio.to_thread(files.write_info, info_path, info)
        log.info(
            "room %s: recording song %d (tap delay %d%s)",
            room,
            info.number,
            info.delay,
            ", stems" if info.stems else "",
        )
        self.counters["takes"] += 1
        return info

    async def _members(self, room: str) -> list[Member]:
        raw: Any = await self.redis.hgetall(keys.room_members(room))
        return self._decode_members(raw)

    def _decode_members(self, raw: Any) -> list[Member]:
        members = []
        for value in raw.values():
            try:
                members.append(records.decode(value, Member))
            except ValidationError:
                self.counters["bad_member_records"] += 1
        return members

    async def _room(self, room: str) -> tuple[list[Member], RoomMeta]:
        """The room's members and settings, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.room_members(room))
            pipe.hgetall(keys.room_meta(room))
            raw_members, raw_meta = await pipe.execute()
        try:
            meta = records.decode_meta(raw_meta)
        except ValidationError:
            self.counters["bad_meta_records"] += 1
            meta = RoomMeta()
        return self._decode_members(raw_members), meta

    async def _look(self, room: str) -> tuple[Song | None, list[Member], RoomMeta]:
        """The song record, members and settings of a room, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.room_song(room), "state")
            pipe.hgetall(keys.room_members(room))
            pipe.hgetall(keys.room_meta(room))
            raw_song, raw_members, raw_meta = await pipe.execute()
        try:
            meta = records.decode_meta(raw_meta)
        except ValidationError:
            self.counters["bad_meta_records"] += 1
            meta = RoomMeta()
        return self._decode_song(room, raw_song), self._decode_members(raw_members), meta

    async def _record(self, info: TakeInfo) -> None:
        """Feed one take's core (recorder/core.py) what Redis says, perform what it decides."""
        pcm, info_path = files.take_paths(self.root, info.room, info.number, info.start_pos)
        core = TakeCore(info, files.pcm_samples(pcm))
        if core.take.written:
            log.info(
                "room %s: carrying on song %d at %d samples",
                info.room,
                info.number,
                core.take.written,
            )
            self.counters["takes_resumed"] += 1
        tap_key, in_key = keys.room_tap(info.room, info.delay), keys.room_in(info.room)
        cursors = {tap_key: b"0-0"}
        stems = StemWriter(self.root, info) if info.stems else None
        if stems is not None:
            # Each singer's chunks, as the mixer reads them (everything Redis still holds:
            # positions outside the song are dropped, and a rewrite is harmless).
            cursors[in_key] = b"0-0"
        next_subscribe = next_look = 0.0
        last_progress = next_tap_check = time.monotonic()
        finish: Finish | None = None
        with pcm.open("ab") as out:
            while finish is None:
                now = time.monotonic()
                actions: list[TakeAction] = []
                if now >= next_subscribe:
                    await self._subscribe(info)
                    next_subscribe = now + SUBSCRIBE_EVERY_S
                if now >= next_look:
                    next_look = now + self.settings.poll_ms / 1000
                    song, members, meta = await self._look(info.room)
                    if stems is not None:
                        stems.members(members)
                    actions += core.observe(song, members, meta, now_samples())
                else:
                    actions += core.tick(now_samples())
                if not actions and now - last_progress > TAP_SILENT_S and now >= next_tap_check:
                    next_tap_check = now + TAP_SILENT_S
                    fallback = await self._tap_refused(info)
                    if fallback is not None:
                        actions += core.refused(fallback)
                for action in actions:
                    if (
                        isinstance(action, Retap)
                        and keys.room_tap(info.room, action.delay) != tap_key
                    ):
                        del cursors[tap_key]
                        tap_key = keys.room_tap(info.room, action.delay)
                        cursors[tap_key] = b"0-0"
                        next_subscribe = 0.0
                        log.info(
                            "room %s: song %d follows the tap at %d",
                            info.room,
                            info.number,
                            action.delay,
                        )
                    elif isinstance(action, SaveInfo):
                        await asyncio.to_thread(files.write_info, info_path, info)
                    elif isinstance(action, Finish):
                        finish = action
                if finish is not None or any(isinstance(a, Retap) for a in actions):
                    continue
                wait_ms = max(1, min(500, int(1000 * (next_look - time.monotonic()))))
                reply = await xread_keys(self.redis, cursors, count=100, block_ms=wait_ms)
                chunks: list[bytes] = []
                for key, entries in parse_xread(reply):
                    if entries:
                        cursors[key] = entries[-1][0]
                    if stems is not None and key == in_key:
                        values = [value for _id, value in entries]
                        if await asyncio.to_thread(stems.write, values, core.take.limit):
                            await asyncio.to_thread(files.write_info, info_path, info)
                        continue
                    for _entry_id, value in entries if key == tap_key else ():
                        chunks += self._place(core, value)
                if chunks:
                    last_progress = time.monotonic()
                    await asyncio.to_thread(out.write, b"".join(chunks))
        if stems is not None:
            self.counters.update(stems.counters)
        if finish.missing:
            log.warning(
                "room %s: no audio for song %d's last %.1f s (silence)",
                info.room,
                info.number,
                finish.missing / SAMPLE_RATE,
            )
            self.counters["missing_samples"] += finish.missing
        track = await self._track(info)
        flac = await asyncio.to_thread(files.finish, self.root, info, finish.length, track)
        self.counters["recordings"] += 1
        self._finished.add((info.room, info.number, info.start_pos))
        log.info(
            "room %s: song %d recorded: %s (%.1f s)",
            info.room,
            info.number,
            flac.name,
            finish.length / SAMPLE_RATE,
        )
        await asyncio.to_thread(self._retention)
        await self._announce(info, finish.length, flac.name)

    def _place(self, core: TakeCore, value: bytes | None) -> list[bytes]:
        """What a tap window adds to the take, as bytes to append (none: nothing)."""
        try:
            window = decode_tap(value or b"")
        except WireError as exc:
            log.debug("bad tap window: %s", exc)
            self.counters["bad_windows"] += 1
            return []
        placed = core.place(window.start, len(window.samples))
        out: list[bytes] = []
        if placed.silence:
            self.counters["gap_samples"] += placed.silence
            out.append(bytes(2 * placed.silence))
        if placed.hi > placed.lo:
            out.append(files.to_int16(window.samples[placed.lo : placed.hi]))
            self.counters["samples"] += placed.hi - placed.lo
        return out

    async def _announce(self, info: TakeInfo, length: int, flac: str) -> None:
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

    async def _subscribe(self, info: TakeInfo) -> None:
        envelope = Envelope(
            singer=SUBSCRIBER,
            gw=self._id,
            cmd=SubscribeTap(delay_s=info.delay / SAMPLE_RATE, ttl_s=SUBSCRIBE_TTL_S),
        )
        # As a gateway does: the room stays active (and owned) while it is recorded.
        await command_room(self.redis, info.room, encode_envelope(envelope))

    async def _tap_refused(self, info: TakeInfo) -> int | None:
        """The tap sends nothing: did the mixer refuse it (rounds that leave no room in the
        ring for it)? Then the last possible bucket's tap, which always fits."""
        raw: Any = await self.redis.xrevrange(keys.room_events(info.room), count=200)
        for _entry_id, value in parse_entries(raw):
            try:
                event = decode_event(value)
            except ValidationError:
                continue
            if not (
                isinstance(event, Reply)
                and event.singer == SUBSCRIBER
                and event.gw == self._id
                and event.cmd == "subscribe_tap"
            ):
                continue
            if event.ok:
                return None  # accepted: the mixer is slow or the room silent
            members, meta = await self._room(info.room)
            fallback = last_bucket_delay(meta, [m.delay for m in members])
            self.counters["taps_refused"] += 1
            if fallback == info.delay:
                log.error(
                    "room %s: the mixer refused the recorder's tap (%s) and no other fits",
                    info.room,
                    event.message,
                )
                return None
            log.warning(
                "room %s: the mixer refused the recorder's tap at %d (%s); recording the "
                "last bucket's tap at %d instead",
                info.room,
                info.delay,
                event.message,
                fallback,
            )
            return fallback
        return None

    async def _track(self, info: TakeInfo) -> Any:
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

    def _retention(self) -> None:
        s = self.settings
        for rec in files.to_delete(
            files.scan(self.root), s.recordings_keep, s.recordings_max_mb * 1024 * 1024
        ):
            files.remove(self.root, rec)
            self.counters["recordings_deleted"] += 1
