"""One browser connection: who it is, its limits, and its bounded send queues.

Everything sent to a client goes through :meth:`Session.send_json` or
:meth:`Session.send_audio`, which only queue; the :class:`gateway.outbox.Outbox`
writes the queues, so a slow socket only ever delays (and drops) its own
frames.  Control messages (JSON) are few and must arrive in order, so they
have priority and a queue of their own; audio is bounded in frames and loses
its oldest frames first.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from aiohttp import WSMsgType, web

from common.codes import Code
from common.protocol import CodecName, dumps, error_message
from common.records import Role
from gateway.metrics import Metrics
from gateway.outbox import OP_TEXT, Outbox, frame_header
from gateway.roommaterial import RoomMaterial

log = logging.getLogger(__name__)

MAX_CONTROL_QUEUE: Final = 256
"""Queued JSON messages before a client counts as unresponsive and is closed."""

CLOSE_DEADLINE_S: Final = 5.0
"""How long a closed connection may take to finish the close before it is dropped."""

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009


class RateLimiter:
    """A token bucket: ``rate`` per second, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def allow(self, now: float) -> bool:
        """Take one token if there is one (``now`` in seconds, monotonic)."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class ErrorThrottle:
    """At most one error message per code per ``interval_s`` (drops are still counted)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def allow(self, code: str, now: float) -> bool:
        last = self._last.get(code)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[code] = now
        return True


@dataclass(slots=True)
class Identity:
    """Who the connection is, once ``hello`` succeeded."""

    room: str
    singer: str
    name: str
    role: Role | Literal["listener"]
    codec: CodecName


@dataclass(eq=False)
class Session:
    """Per-connection state; compared by identity (sessions live in sets).

    Nothing here blocks: messages are queued, and the :class:`Outbox` writes
    them (:meth:`write_queued`).  ``transport`` is None only in unit tests.
    """

    ws: web.WebSocketResponse
    metrics: Metrics
    audio_queue_frames: int
    conn: str
    outbox: Outbox = field(default_factory=Outbox)
    transport: asyncio.Transport | None = None
    member: Identity | None = None
    delay: int | None = None
    """The tap this session listens to (its member's delay in the latest state)."""
    mix: str = "full"
    """Which mix of that tap: its member's ``hears`` in the latest state."""
    joined: bool = False
    """True once ``welcome`` is queued: only then may room events and audio follow."""
    material: RoomMaterial | None = None
    """The room material last sent (:meth:`send_material`)."""
    throttle: ErrorThrottle = field(default_factory=ErrorThrottle)
    close_deadline_s: float = CLOSE_DEADLINE_S
    _control: deque[bytes] = field(default_factory=deque)
    _audio: deque[tuple[bytes, int]] = field(default_factory=deque)
    _audio_frames: int = 0
    _latest: bytes | None = None
    _close: tuple[int, str] | None = None
    _closer: asyncio.Task[None] | None = None
    _closed: asyncio.Event = field(default_factory=asyncio.Event)
    _deadline: asyncio.TimerHandle | None = None

    @property
    def closing(self) -> bool:
        return self._close is not None

    # --- queueing (never blocks the caller) ----------------------------------------

    def send_json(
        self, message: dict[str, object] | bytes, *, urgent: bool = False, lazy: bool = False
    ) -> None:
        """Queue a JSON message: a dict, or UTF-8 JSON serialised once for many sessions.

        ``lazy``: it leaves with the session's next write (its audio, for a listener),
        within the outbox's ``lazy_ms``, instead of costing a write of its own; it still
        keeps its place among the control messages."""
        if self._close is not None:
            return
        if len(self._control) >= MAX_CONTROL_QUEUE:
            # A client that does not read even its control messages is gone in
            # all but name; closing it frees its queues.
            log.info("closing %s: %d control messages unread", self.conn, len(self._control))
            self._control.clear()
            self.close(CLOSE_POLICY, "not reading")
            return
        self._control.append(
            message if isinstance(message, bytes) else dumps(message).encode("utf-8")
        )
        self.outbox.mark(self, urgent=urgent, lazy=lazy)

    def send_material(self, material: RoomMaterial, *, lazy: bool = False) -> None:
        """Queue what this page needs to hold ``material``: nothing when it holds it (the
        same object, or one of the same version and content), its ``cues`` message when
        it holds the material this one extends, else its ``material`` message
        (:meth:`RoomMaterial.message_for`); ``lazy`` as for :meth:`send_json`. Call
        before each ``state``."""
        held = self.material
        if held is material:
            return
        self.material = material
        text = material.message_for(held)
        if text is not None:
            self.send_json(text, lazy=lazy)

    def send_latest(self, message: bytes) -> None:
        """Queue a message that only matters until the next one (level meters).

        It replaces any such message still queued and leaves with the next
        audio write instead of costing a write of its own.
        """
        if self._close is None:
            self._latest = message
            self.outbox.mark(self, lazy=True)

    def send_error(
        self,
        code: Code,
        message: str,
        *,
        req: int | None = None,
        now: float | None = None,
        fatal: bool | None = None,
    ) -> None:
        """Send an error; without ``req`` it is throttled per code (``now`` given)."""
        if req is None and now is not None and not self.throttle.allow(str(code), now):
            return
        self.metrics.inc("errors_sent_total")
        self.send_json(error_message(code, message, req=req, fatal=fatal), urgent=True)

    def send_audio(self, framed: bytes, frames: int) -> None:
        """Send downstream audio: ``framed`` is one or more whole WebSocket binary frames
        (:func:`gateway.outbox.binary_frames`, built once for every session of a tap)
        holding ``frames`` 20 ms frames.

        With nothing else queued and room in the socket's buffer, it is written
        at once (one ``transport.write``, no queue, no flush pass: the path of a
        concert's thousands of listeners).  Otherwise it is queued, at most
        ``audio_queue_frames`` frames, losing the oldest first (counted in
        ``frames_dropped_total``), and the outbox writes it with the rest.
        """
        if self._close is not None:
            return
        transport = self.transport
        if (
            transport is not None
            and not self._audio
            and not self._control
            and self._latest is None
            and not transport.is_closing()
            and not self.ws.closed
            and transport.get_write_buffer_size() <= self.outbox.max_buffer_bytes
        ):
            transport.write(framed)
            self.metrics.inc("frames_out_total", frames)
            return
        self._audio.append((framed, frames))
        self._audio_frames += frames
        while self._audio_frames > self.audio_queue_frames and len(self._audio) > 1:
            _, dropped = self._audio.popleft()
            self._audio_frames -= dropped
            self.metrics.inc("frames_dropped_total", dropped)
        self.outbox.mark(self)

    def clear_audio(self) -> None:
        """Forget queued audio (when the session moves to another tap)."""
        self._audio.clear()
        self._audio_frames = 0

    @property
    def queued_frames(self) -> int:
        return self._audio_frames

    def close(self, code: int, reason: str = "") -> None:
        """Send the queued control messages (not the audio), then close with ``code``.

        From now on nothing the client sends is processed (:meth:`closed_to`);
        a client that does not let the close finish (it never reads, so its
        buffer stays full, or it never answers the close frame) is dropped
        after ``close_deadline_s``.
        """
        if self._close is None:
            self._close = (code, reason)
            self.clear_audio()
            if self.transport is not None:
                self._deadline = asyncio.get_running_loop().call_later(
                    self.close_deadline_s, self._drop
                )
        self.outbox.mark(self, urgent=True)

    def closed_to(self, kind: WSMsgType) -> bool:
        """True once :meth:`close` was called: a message of ``kind`` received now is
        not processed (data messages are counted as dropped, ``after_close``)."""
        if self._close is None:
            return False
        if kind in {WSMsgType.TEXT, WSMsgType.BINARY}:
            self.metrics.drop("after_close")
        return True

    def _drop(self) -> None:
        self._deadline = None
        if self._closed.is_set():
            return
        log.info("dropping %s: the close did not finish in %g s", self.conn, self.close_deadline_s)
        self.metrics.drop("close_timeout")
        if self.transport is not None:
            self.transport.abort()
        self._closed.set()

    async def wait_closed(self, timeout_s: float) -> None:
        """Wait for the close asked by :meth:`close` (abort the transport on timeout)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._closed.wait()
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()

    # --- writing (called by the outbox) ----------------------------------------------

    def write_queued(self, max_buffer_bytes: int) -> bool:
        """Write every queued frame in one transport write; False if the buffer is full."""
        transport = self.transport
        if transport is None or self.ws.closed or transport.is_closing():
            self._control.clear()
            self._latest = None
            self.clear_audio()
            if self._close is not None:
                self._closed.set()
            return True
        if transport.get_write_buffer_size() > max_buffer_bytes:
            return False
        parts: list[bytes] = []
        while self._control:
            text = self._control.popleft()
            parts += (frame_header(OP_TEXT, len(text)), text)
        if self._latest is not None:
            parts += (frame_header(OP_TEXT, len(self._latest)), self._latest)
            self._latest = None
        frames = 0
        while self._audio:
            framed, n = self._audio.popleft()
            parts.append(framed)
            frames += n
        self._audio_frames = 0
        if parts:
            transport.write(b"".join(parts))
            self.metrics.inc("frames_out_total", frames)
        if self._close is not None and self._closer is None:
            code, reason = self._close
            self._closer = asyncio.get_running_loop().create_task(
                self._close_ws(code, reason.encode("utf-8")[:120])
            )
        return True

    async def _close_ws(self, code: int, reason: bytes) -> None:
        try:
            await self.ws.close(code=code, message=reason)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s: close failed: %s", self.conn, exc)
        finally:
            self._closed.set()
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None


def connection_ids() -> Callable[[], str]:
    """A generator of short connection ids unique within this process."""
    counter = itertools.count(1)
    return lambda: f"c{next(counter)}"
