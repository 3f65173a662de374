"""Recording one take: the loop that reads Redis, calls the take's core, and writes.

It keeps the take's tap subscribed, reads the tap stream (and the input
stream for stems), feeds :class:`recorder.core.TakeCore` what Redis says and
performs what it decides (which tap, the song's end, silence for audio that
never came). Every file write, and the FLAC and Ogg Opus of the finished
take, runs in a worker thread; the finished recording is announced to the
room's pages and the retention rule applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Final

from common import keys
from common.clock import now_samples
from common.constants import SAMPLE_RATE
from common.errors import WireError
from common.redisclient import xread_keys
from common.settings import RecorderSettings
from common.streams import parse_xread
from common.wire import decode_tap
from recorder import files
from recorder.core import Finish, Retap, SaveInfo, TakeAction, TakeCore, last_bucket_delay
from recorder.discovery import Finished
from recorder.roomio import SUBSCRIBE_EVERY_S, RoomIO
from recorder.stems import StemWriter
from recorder.take import TakeInfo

__all__ = ["TAP_SILENT_S", "TakeRecorder"]

log = logging.getLogger(__name__)

TAP_SILENT_S: Final = 1.0
"""A tap that sends nothing for this long during a song: look for the mixer's refusal."""


class TakeRecorder:
    """Records takes under ``root``; counts into ``counters``, adds to ``finished``."""

    def __init__(
        self,
        settings: RecorderSettings,
        root: Path,
        io: RoomIO,
        counters: Counter[str],
        finished: set[Finished],
    ) -> None:
        self.settings = settings
        self.root = root
        self.io = io
        self.counters = counters
        self.finished = finished

    async def record(self, info: TakeInfo) -> None:
        """Feed one take's core what Redis says, perform what it decides, finish it."""
        pcm, info_path = files.take_paths(self.root, info.room, info.number, info.start_pos)
        core = TakeCore(info, await asyncio.to_thread(files.pcm_samples, pcm))
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
        out = await asyncio.to_thread(pcm.open, "ab")
        try:
            while finish is None:
                now = time.monotonic()
                actions: list[TakeAction] = []
                if now >= next_subscribe:
                    await self.io.subscribe(info)
                    next_subscribe = now + SUBSCRIBE_EVERY_S
                if now >= next_look:
                    next_look = now + self.settings.poll_ms / 1000
                    song, members, meta = await self.io.look(info.room)
                    if stems is not None:
                        stems.members(members)
                    actions += core.observe(song, members, meta, now_samples())
                else:
                    actions += core.tick(now_samples())
                if not actions and now - last_progress > TAP_SILENT_S and now >= next_tap_check:
                    next_tap_check = now + TAP_SILENT_S
                    fallback = await self._fallback(info)
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
                reply = await xread_keys(self.io.redis, cursors, count=100, block_ms=wait_ms)
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
        finally:
            await asyncio.to_thread(out.close)
        if stems is not None:
            self.counters.update(stems.counters)
        await self._finish(info, finish)

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

    async def _fallback(self, info: TakeInfo) -> int | None:
        """The tap sends nothing: did the mixer refuse it (rounds that leave no room in the
        ring for it)? Then the last possible bucket's tap, which always fits."""
        refusal = await self.io.tap_refusal(info)
        if refusal is None:
            return None  # accepted (the mixer is slow or the room silent), or no answer
        members, meta = await self.io.room(info.room)
        fallback = last_bucket_delay(meta, [m.delay for m in members])
        self.counters["taps_refused"] += 1
        if fallback == info.delay:
            log.error(
                "room %s: the mixer refused the recorder's tap (%s) and no other fits",
                info.room,
                refusal,
            )
            return None
        log.warning(
            "room %s: the mixer refused the recorder's tap at %d (%s); recording the "
            "last bucket's tap at %d instead",
            info.room,
            info.delay,
            refusal,
            fallback,
        )
        return fallback

    async def _finish(self, info: TakeInfo, finish: Finish) -> None:
        """Write the take's FLAC and Ogg Opus, apply retention, and announce it."""
        if finish.missing:
            log.warning(
                "room %s: no audio for song %d's last %.1f s (silence)",
                info.room,
                info.number,
                finish.missing / SAMPLE_RATE,
            )
            self.counters["missing_samples"] += finish.missing
        track = await self.io.track(info)
        flac = await asyncio.to_thread(files.finish, self.root, info, finish.length, track)
        self.counters["recordings"] += 1
        self.finished.add((info.room, info.number, info.start_pos))
        log.info(
            "room %s: song %d recorded: %s (%.1f s)",
            info.room,
            info.number,
            flac.name,
            finish.length / SAMPLE_RATE,
        )
        await asyncio.to_thread(self._retention)
        await self.io.announce(info, finish.length, flac.name)

    def _retention(self) -> None:
        s = self.settings
        for rec in files.to_delete(
            files.scan(self.root), s.recordings_keep, s.recordings_max_mb * 1024 * 1024
        ):
            files.remove(self.root, rec)
            self.counters["recordings_deleted"] += 1
