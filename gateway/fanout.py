"""Tap audio from the mixers to the browsers: read once, encode once, fan out.

One task XREADs every tap stream (``bb:{R}:tap:{D}``) that a local session
listens to; the key set is rebuilt on every read, with a short BLOCK so a new
tap is picked up quickly.  Each tap has one Opus encoder in this gateway and
its pcm16 form is computed once, so the codec cost is per tap, not per
listener; every listener gets the same bytes in its own bounded queue
(:meth:`Session.send_audio`), where a slow client loses its own oldest frames.

Reads are paced: after a delivery the next read waits ``period_ms`` (200 ms
by default), so each listener gets the mixer's ~100 ms windows two at a
time, in one socket write.  A tap that only a concert's listeners hear (no
member: gateway/listeners.py) is held longer, ``listener_period_ms`` (400 ms
by default), so each of its thousands of sockets gets one write per 400 ms
of audio: the kernel's send is most of a listener's cost.  Per listener that halves the writes, the
wake-ups and the client's receive work; the frames still leave about
``lead`` - 0.2 s before their play time, which is what the lead is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from redis.asyncio import Redis

from common import keys
from common.clock import now_samples
from common.codec import OpusEncoder, float_to_pcm16
from common.constants import OPUS_FRAME_SAMPLES
from common.errors import ValidationError, WireError
from common.protocol import encode_downstream_opus, encode_downstream_pcm16
from common.redisclient import REDIS_ERRORS, xread_keys
from common.streams import Entry, newest_id, parse_xread
from common.wire import TapWindow, decode_tap
from gateway.metrics import Metrics
from gateway.outbox import binary_frames
from gateway.retry import back_off
from gateway.session import Session
from gateway.worker import CodecWorker

log = logging.getLogger(__name__)

_BLOCK_MS: Final = 100
_COUNT: Final = 50
"""Windows read per tap per XREAD: 5 s of audio at the mixer's ~100 ms windows."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tap window, ready to send: the message per codec (None: nobody uses it)."""

    frames: int
    opus: bytes | None
    pcm16: bytes | None


@dataclass(eq=False)
class Tap:
    """One (room, delay) this gateway listens to, and who listens."""

    room: str
    delay: int
    mix: str = "full"
    sessions: set[Session] = field(default_factory=set)
    codecs: dict[str, int] = field(default_factory=dict)
    """How many of the sessions use each codec (the codecs encoded)."""
    members: int = 0
    """Sessions of room members (not listeners): while there are any, nothing is held."""
    held: list[Encoded] = field(default_factory=list)
    """Encoded windows of a listeners-only tap waiting for ``listener_period_ms`` of audio."""
    last_id: bytes | None = None
    next_start: int | None = None
    encoder: OpusEncoder | None = None

    @property
    def key(self) -> str:
        return keys.room_tap(self.room, self.delay, self.mix)

    def encode(self, windows: list[TapWindow], opus: bool, pcm16: bool) -> list[Encoded]:
        """Encode windows in order (in a worker thread: one call at a time per tap)."""
        out: list[Encoded] = []
        for window in windows:
            if window.start != self.next_start and self.encoder is not None:
                self.encoder.reset()
            self.next_start = window.start + window.samples.shape[0]
            opus_msg = pcm_msg = None
            if opus:
                if self.encoder is None:
                    self.encoder = OpusEncoder()
                packets = self.encoder.encode_frames(window.samples)
                opus_msg = encode_downstream_opus(self.delay, window.start, packets)
            if pcm16:
                pcm = float_to_pcm16(window.samples)
                pcm_msg = encode_downstream_pcm16(self.delay, window.start, pcm)
            out.append(Encoded(window.samples.shape[0] // OPUS_FRAME_SAMPLES, opus_msg, pcm_msg))
        return out


class Fanout:
    """Subscriptions of sessions to taps, and the task that serves them."""

    def __init__(
        self,
        redis: Redis,
        metrics: Metrics,
        worker: CodecWorker,
        *,
        period_ms: float = 200.0,
        listener_period_ms: float = 400.0,
    ) -> None:
        if period_ms < 0 or listener_period_ms < 0:
            raise ValueError(f"periods must be >= 0, got {period_ms}, {listener_period_ms}")
        self._hold_frames = round(listener_period_ms / 20)
        self._redis = redis
        self._metrics = metrics
        self._worker = worker
        self._period_s = period_ms / 1000
        self._taps: dict[tuple[str, int, str], Tap] = {}
        self._of_session: dict[Session, Tap] = {}
        self._changed = asyncio.Event()

    def subscribe(self, session: Session, room: str, delay: int, mix: str = "full") -> None:
        """Make ``session`` listen to the tap ``(delay, mix)`` of ``room`` (and no other)."""
        current = self._of_session.get(session)
        if current is not None and (current.room, current.delay, current.mix) == (room, delay, mix):
            return
        self.unsubscribe(session)
        tap = self._taps.get((room, delay, mix))
        if tap is None:
            tap = self._taps[(room, delay, mix)] = Tap(room, delay, mix)
            self._changed.set()
        tap.sessions.add(session)
        codec = session.member.codec if session.member is not None else ""
        tap.codecs[codec] = tap.codecs.get(codec, 0) + 1
        tap.members += _is_member(session)
        self._of_session[session] = tap
        session.delay = delay
        session.mix = mix

    def unsubscribe(self, session: Session) -> None:
        tap = self._of_session.pop(session, None)
        if tap is None:
            return
        session.clear_audio()
        tap.sessions.discard(session)
        codec = session.member.codec if session.member is not None else ""
        tap.codecs[codec] = tap.codecs.get(codec, 0) - 1
        tap.members -= _is_member(session)
        if not tap.sessions:
            # The encoder is not closed here: an encode job may still be using it
            # in a worker thread.  It is freed when the last reference goes.
            del self._taps[(tap.room, tap.delay, tap.mix)]

    @property
    def taps(self) -> int:
        return len(self._taps)

    async def run(self) -> None:
        """Serve the taps forever; Redis errors back off and retry."""
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            if not self._taps:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                await self._start_new_taps()
                streams = {tap.key: tap.last_id or b"$" for tap in self._taps.values()}
                reply = parse_xread(
                    await xread_keys(self._redis, streams, count=_COUNT, block_ms=_BLOCK_MS)
                )
            except (*REDIS_ERRORS, ValidationError) as exc:
                failures += 1
                await back_off(self._metrics, failures, "reading taps", exc)
                continue
            failures = 0
            if reply:
                delivered = loop.time()
                await self._deliver(reply)
                # Let the next windows gather; a new tap wakes the loop early.
                pause = delivered + self._period_s - loop.time()
                if pause > 0:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await self._changed.wait()

    async def _start_new_taps(self) -> None:
        # A new tap starts after the newest window already in its stream, so the
        # first read neither replays the backlog nor misses what arrives meanwhile.
        new = [tap for tap in self._taps.values() if tap.last_id is None]
        if not new:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for tap in new:
                pipe.xrevrange(tap.key, count=1)
            newest = await pipe.execute()
        for tap, entries in zip(new, newest, strict=True):
            tap.last_id = newest_id(entries)

    async def _deliver(self, reply: list[tuple[str, list[Entry]]]) -> None:
        now = now_samples()
        jobs: list[tuple[Tap, Callable[[], list[Encoded]]]] = []
        by_key = {tap.key: tap for tap in self._taps.values()}
        for key, entries in reply:
            tap = by_key.get(key)
            if tap is None or not entries:
                continue
            tap.last_id = entries[-1][0]
            windows = self._fresh_windows(tap, entries, now)
            opus = tap.codecs.get("opus", 0) > 0
            pcm16 = tap.codecs.get("pcm16", 0) > 0
            if windows and (opus or pcm16):
                jobs.append((tap, _bind(tap, windows, opus, pcm16)))
        if not jobs:
            return
        # One codec job per tap (a tap's windows in order, by one worker call).
        results = await self._worker.run([job for _, job in jobs])
        for (tap, _), encoded in zip(jobs, results, strict=True):
            self._metrics.inc(
                "frames_encoded_total", sum(e.frames for e in encoded if e.opus is not None)
            )
            tap.held += encoded
            if not tap.members and sum(e.frames for e in tap.held) < self._hold_frames:
                continue  # listeners only: gather listener_period_ms of audio per write
            batch, tap.held = tap.held, []
            # The frames of this delivery, built once for every session of the tap.
            framed = {
                "opus": (
                    binary_frames([e.opus for e in batch if e.opus is not None]),
                    sum(e.frames for e in batch if e.opus is not None),
                ),
                "pcm16": (
                    binary_frames([e.pcm16 for e in batch if e.pcm16 is not None]),
                    sum(e.frames for e in batch if e.pcm16 is not None),
                ),
            }
            for session in list(tap.sessions):
                member = session.member
                if member is None:
                    continue
                data, frames = framed[member.codec]
                if data:
                    session.send_audio(data, frames)

    def _fresh_windows(self, tap: Tap, entries: list[Entry], now: int) -> list[TapWindow]:
        windows: list[TapWindow] = []
        # Where the next window should start: the tap's own mark moves only when the
        # batch is encoded, so within one read the expectation advances here.
        expected = tap.next_start
        for _, data in entries:
            self._metrics.inc("windows_in_total")
            try:
                window = decode_tap(data or b"")
            except WireError as exc:
                log.debug("tap %s: skipping a bad window: %s", tap.key, exc)
                continue
            if (window.room, window.delay, window.mix) != (tap.room, tap.delay, tap.mix):
                log.debug("tap %s: window for another tap (%s)", tap.key, window.delay)
                continue
            # Frames for position p play at p + delay; past that they are useless.
            if window.start + window.samples.shape[0] + tap.delay < now:
                self._metrics.inc("windows_stale_total")
                continue
            if expected is not None and window.start != expected:
                self._metrics.inc("tap_gaps_total")
            expected = window.start + window.samples.shape[0]
            windows.append(window)
        return windows


def _is_member(session: Session) -> int:
    return int(session.member is None or session.member.role != "listener")


def _bind(
    tap: Tap, windows: list[TapWindow], opus: bool, pcm16: bool
) -> Callable[[], list[Encoded]]:
    return lambda: tap.encode(windows, opus, pcm16)
