"""The recorder's asyncio + Redis adapter: finds running songs, holds a recording
lease per room, and records each song of those rooms in a take of its own.

* the **maintenance** loop: heartbeat, renewal of the recording leases;
* the **scan** loop: every ``poll_ms``, the rooms with a running song (or a
  take left on disk by a recorder that died) whose lease is free get a task
  (recorder/discovery.py decides which);
* one **room task** per recorded room, and under it one **take** task per
  song (the next song's take starts while the last one's is finishing); a
  take is recorded by recorder/taking.py, which feeds
  :class:`recorder.core.TakeCore` what Redis says (recorder/roomio.py) and
  performs what it decides. Every file read and write runs in a worker thread.

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
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from common.heartbeat import Heartbeat
from common.records import RecorderStatus, Song
from common.settings import RecorderSettings
from recorder import files
from recorder.core import starts_take
from recorder.discovery import Finished, new_take, wanted
from recorder.roomio import (
    REDIS_FAILURES,
    SUBSCRIBE_EVERY_S,
    SUBSCRIBE_TTL_S,
    SUBSCRIBER,
    RoomIO,
)
from recorder.take import TakeInfo
from recorder.taking import TakeRecorder

__all__ = [
    "SUBSCRIBER",
    "SUBSCRIBE_EVERY_S",
    "SUBSCRIBE_TTL_S",
    "RecorderService",
    "RecorderStatus",
]

log = logging.getLogger(__name__)


class RecorderService:
    """Records every running song of the rooms it holds the recording lease of."""

    def __init__(self, settings: RecorderSettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.root = Path(settings.recordings_dir)
        self.counters: Counter[str] = Counter()
        self.beat = Heartbeat.recorder(settings.recorder_id, settings.heartbeat_ttl_ms)
        self.io = RoomIO(redis, settings.recorder_id, settings.lease_ttl_ms, self.counters)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: set[Finished] = set()
        self.takes = TakeRecorder(settings, self.root, self.io, self.counters, self._finished)
        self._started = time.time()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; room tasks are cancelled, their takes stay on disk."""
        await asyncio.to_thread((self.root / files.TAKES).mkdir, parents=True, exist_ok=True)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._loop(stop, 0.5, self.maintain))
                group.create_task(self._loop(stop, self.settings.poll_ms / 1000, self.scan))
        finally:
            await self._shutdown()

    async def _loop(
        self, stop: asyncio.Event, period_s: float, step: Callable[[], Awaitable[None]]
    ) -> None:
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
                await self.io.release(room)
            await self.beat.drop(self.redis)

    def status(self) -> RecorderStatus:
        return RecorderStatus(
            id=self.settings.recorder_id,
            pid=os.getpid(),
            started=self._started,
            rooms=sorted(self._tasks),
            counters=dict(self.counters),
        )

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())) or "nothing"

    # --- maintenance and discovery -----------------------------------------------------

    async def maintain(self) -> None:
        """Heartbeat, and renew every lease we record under (a lost one stops its task)."""
        await self.beat.beat(self.redis, self.status(), time.time())
        for room, task in list(self._tasks.items()):
            if task.done():
                continue
            if not await self.io.renew(room):
                log.warning("room %s: recording lease lost, another recorder goes on", room)
                self.counters["leases_lost"] += 1
                task.cancel()

    async def scan(self) -> None:
        """Start a room task for each room with a song to record and a free lease."""
        for room, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[room]
        active = await self.io.active_rooms()
        leftover = {info.room for info in await self._takes_on_disk()}
        rooms = sorted((active | leftover) - set(self._tasks))
        songs = await self.io.songs(rooms)  # one round trip
        for room, song in zip(rooms, songs, strict=True):
            if room in self._tasks or not wanted(room, song, leftover, self._finished):
                continue
            if await self.io.renew(room):
                self._tasks[room] = asyncio.create_task(self._record_room(room), name=f"rec-{room}")

    async def _takes_on_disk(self) -> list[TakeInfo]:
        """The takes left in the takes folder (read in a worker thread)."""
        return await asyncio.to_thread(files.takes_on_disk, self.root)

    # --- one room ----------------------------------------------------------------------

    async def _record_room(self, room: str) -> None:
        """Record the room's songs while we hold its lease: a take left behind, the running
        song, and each song that starts meanwhile, in takes of their own. Our tap lags the
        room by seconds and a take's files take seconds to write, so the next song often
        starts before the last take is done; its take starts at once, while the tap and
        input streams still hold its first seconds."""
        takes: dict[int, asyncio.Task[bool]] = {}
        try:
            for info in [i for i in await self._takes_on_disk() if i.room == room]:
                takes[info.number] = self._start_take(info)  # left behind by a dead recorder
            while True:
                song = await self.io.song(room)
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
            await self.io.release(room)

    def _start_take(self, info: TakeInfo) -> asyncio.Task[bool]:
        return asyncio.create_task(
            self._take(info), name=f"rec-{info.room}-{info.number}-{info.start_pos}"
        )

    async def _take(self, info: TakeInfo) -> bool:
        """Record one take; True when Redis failed (to be carried on by the next scan)."""
        try:
            await self.takes.record(info)
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
        info = await asyncio.to_thread(files.read_info, info_path)
        if info is not None:
            return info
        members, meta = await self.io.room(room)
        info = new_take(room, song, members, meta, time.time())
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
