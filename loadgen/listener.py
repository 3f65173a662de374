"""Simulated listeners: thousands of listen-only WebSockets, cheap on the client side.

A listener (docs/protocol.md, ``role: "listener"``) sends ``hello`` and then
only receives.  Thousands of them share the load generator's cores with the
servers, so they do not use aiohttp: each is a plain :class:`asyncio.Protocol`
that does the WebSocket handshake itself and walks the frames of each chunk
the socket delivers.  For a binary frame it reads only the 16-byte
downstream header (delay, start, frame count) and skips the payload without
copying it; text frames (``welcome``, ``state``, ``error``) are looked at
only for their type.  There is no per-message task, future or object.

Every listener counts the frames it receives by play time (position + delay)
into the measurement windows, so that a frame that never came is *missing*.
A sample of them (``full``: ~100 by default) also syncs its clock with pings
as the page does (a burst of 8, then every 2 s) and counts a frame *late*
when it arrives after its play time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import urlsplit

from common.constants import OPUS_FRAME_SAMPLES
from common.protocol import DOWNSTREAM_HEADER, KIND_DOWNSTREAM, dumps, hello_message
from loadgen.clock import ClockEstimator
from loadgen.stats import Windows

log = logging.getLogger(__name__)

PING_BURST: Final = 8
PING_BURST_S: Final = 0.15
PING_S: Final = 2.0
_HEADER_END: Final = b"\r\n\r\n"
_LEN16: Final = struct.Struct("!H")
_LEN64: Final = struct.Struct("!Q")
_OP_TEXT: Final = 0x1
_OP_BINARY: Final = 0x2
_OP_CLOSE: Final = 0x8
_OP_PING: Final = 0x9
_ZERO_MASK: Final = b"\0\0\0\0"
_FRAME: Final = OPUS_FRAME_SAMPLES
CONNECT_TIMEOUT_S: Final = 15.0


@dataclass(frozen=True)
class ListenerSpec:
    """One listener of the plan: where, when, and whether it measures lateness."""

    index: int
    room: str
    url: str
    join_at: float
    full: bool = False
    password: str | None = None


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3; a zero mask leaves the payload as is)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + _LEN16.pack(n)
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + _LEN64.pack(n)
    return header + _ZERO_MASK + payload


@dataclass
class ListenerCounts:
    """What one listener saw in one window (frames by play time)."""

    received: int = 0
    late: int = 0


class Listener(asyncio.Protocol):
    """One listen-only WebSocket (see the module docstring)."""

    def __init__(self, spec: ListenerSpec, windows: Windows) -> None:
        self.spec = spec
        self.windows = windows
        self.counts = [ListenerCounts() for _ in range(len(windows))]
        self.estimator = ClockEstimator() if spec.full else None
        self.transport: asyncio.Transport | None = None
        self.joined_at: float | None = None
        self.closed_at: float | None = None
        self.error: str | None = None
        self.delay: int | None = None
        self.frames = 0
        self.late = 0
        self.unsynced = 0
        self._upgraded = False
        self._buffer = b""
        self._skip = 0
        self._pings: dict[int, float] = {}
        self._ping_task: asyncio.Task[None] | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's
        self.transport = cast(asyncio.Transport, transport)
        parts = urlsplit(self.spec.url)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = time.time()
        if self._ping_task is not None:
            self._ping_task.cancel()
        if exc is not None and self.error is None:
            self.error = f"connection lost: {exc}"
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(_OP_CLOSE, struct.pack("!H", 1000)))
            self.transport.close()

    # --- receiving -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        skip = self._skip
        if skip >= len(data):  # inside a binary payload: nothing to look at
            self._skip = skip - len(data)
            return
        if not self._upgraded:
            self._handshake(data)
            return
        buf = self._buffer + data if self._buffer else data
        self._buffer = b""
        self._skip = 0
        self._frames(buf, skip)

    def _handshake(self, data: bytes) -> None:
        buf = self._buffer + data
        end = buf.find(_HEADER_END)
        if end < 0:
            self._buffer = buf
            return
        status = buf[: buf.find(b"\r\n")]
        if b" 101 " not in status:
            self._fail(f"handshake refused: {status.decode(errors='replace')}")
            return
        self._upgraded = True
        self._buffer = b""
        assert self.transport is not None
        hello = hello_message(
            self.spec.room, f"Listener {self.spec.index}", role="listener",
            password=self.spec.password,
        )  # fmt: skip
        self.transport.write(client_frame(_OP_TEXT, dumps(hello).encode()))
        rest = buf[end + len(_HEADER_END) :]
        if rest:
            self._frames(rest, 0)

    def _frames(self, buf: bytes, pos: int) -> None:
        n = len(buf)
        while pos < n:
            if n - pos < 2:
                break
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = _LEN16.unpack_from(buf, pos + 2)[0]
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = _LEN64.unpack_from(buf, pos + 2)[0]
                head = 10
            opcode = first & 0x0F
            body = pos + head
            end = body + length
            if opcode == _OP_BINARY:
                if n - body < DOWNSTREAM_HEADER.size:
                    break
                self._on_audio(buf, body)
                if end > n:
                    self._skip = end - n
                    return
            else:
                if end > n:
                    break  # text and control frames are read whole
                self._on_control(opcode, buf[body:end])
            pos = end
        if pos < n:
            self._buffer = buf[pos:]

    def _on_audio(self, buf: bytes, at: int) -> None:
        kind, _, count, delay, start = DOWNSTREAM_HEADER.unpack_from(buf, at)
        if kind != KIND_DOWNSTREAM or count <= 0:
            return
        self.frames += count
        self.delay = delay
        play = start + delay
        index = self.windows.at(play)
        last = self.windows.at(play + (count - 1) * _FRAME)
        if index is not None and index == last:
            self.counts[index].received += count
        elif index is not None or last is not None:
            for k in range(count):
                w = self.windows.at(play + k * _FRAME)
                if w is not None:
                    self.counts[w].received += 1
        estimator = self.estimator
        if estimator is None:
            return
        if not estimator.ready:
            self.unsynced += count
            return
        now = estimator.room_clock(time.time() * 1000)
        if play < now:
            late = min(count, -((play - now) // _FRAME))
            self.late += late
            for k in range(late):
                w = self.windows.at(play + k * _FRAME)
                if w is not None:
                    self.counts[w].late += 1

    def _on_control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == _OP_PING:
            self.transport.write(client_frame(0xA, payload))
        elif opcode == _OP_CLOSE:
            if self.error is None and self.joined_at is None:
                self.error = "closed before welcome"
            self.transport.close()
        elif opcode == _OP_TEXT:
            self._on_text(payload)

    def _on_text(self, payload: bytes) -> None:
        head = payload[:40]
        if self.joined_at is None and b'"welcome"' in head:
            self.joined_at = time.time()
            if self.estimator is not None:
                self._ping_task = asyncio.get_running_loop().create_task(self._ping())
        elif b'"error"' in head:
            message: dict[str, Any] = json.loads(payload)
            self.error = self.error or str(message.get("code"))
        elif b'"pong"' in head and self.estimator is not None:
            message = json.loads(payload)
            ping = message.get("id")
            sent = self._pings.pop(ping, None) if isinstance(ping, int) else None
            clock = message.get("clock")
            if sent is not None and isinstance(clock, int):
                self.estimator.add(sent, time.time() * 1000, clock)

    async def _ping(self) -> None:
        for n in range(1_000_000):
            if self.transport is None or self.transport.is_closing():
                return
            t = time.time() * 1000
            self._pings[n] = t
            ping = dumps({"type": "ping", "id": n, "t": t}).encode()
            self.transport.write(client_frame(_OP_TEXT, ping))
            await asyncio.sleep(PING_BURST_S if n < PING_BURST else PING_S)

    def _fail(self, reason: str) -> None:
        self.error = self.error or reason
        if self.transport is not None:
            self.transport.close()

    # --- reporting --------------------------------------------------------------------------

    def connected_through(self, start: float, end: float) -> bool:
        return (
            self.joined_at is not None
            and self.joined_at <= start
            and (self.closed_at is None or self.closed_at >= end)
        )


@dataclass
class ListenerWindow:
    """Listeners' figures of one window, summed over listeners (JSON-ready)."""

    listeners: int = 0
    """Planned to be there for the whole window."""
    connected: int = 0
    expected: int = 0
    received: int = 0
    full: int = 0
    full_received: int = 0
    late: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def merge(self, other: dict[str, Any]) -> None:
        for name in ("listeners", "connected", "expected", "received", "full"):
            setattr(self, name, getattr(self, name) + int(other[name]))
        self.full_received += int(other["full_received"])
        self.late += int(other["late"])
        for code, n in other["errors"].items():
            self.errors[code] = self.errors.get(code, 0) + int(n)

    def to_json(self) -> dict[str, Any]:
        missing = max(0, self.expected - self.received)
        return {
            "listeners": self.listeners,
            "connected": self.connected,
            "expected": self.expected,
            "received": self.received,
            "missing_fraction": missing / self.expected if self.expected else 0.0,
            "full": self.full,
            "full_received": self.full_received,
            "late": self.late,
            "late_fraction": self.late / self.full_received if self.full_received else 0.0,
            "errors": dict(sorted(self.errors.items())),
        }


def expected_frames(lo: int, hi: int, delay: int) -> int:
    """Frames ``k`` (positions ``k * 960``) whose play time ``k * 960 + delay`` is in [lo, hi)."""
    return -((delay - hi) // _FRAME) - -((delay - lo) // _FRAME)


def window_report(
    listeners: list[Listener], windows: Windows, index: int, start: float, end: float
) -> dict[str, Any]:
    """One window over ``listeners`` (those planned to be there throughout it)."""
    lo, hi = windows.bounds[index]
    out = ListenerWindow()
    for listener in listeners:
        if listener.spec.join_at > start:
            continue
        out.listeners += 1
        counts = listener.counts[index]
        if listener.connected_through(start, end):
            out.connected += 1
        if listener.error is not None:
            out.errors[listener.error] = out.errors.get(listener.error, 0) + 1
        delay = listener.delay
        out.expected += expected_frames(lo, hi, delay if delay is not None else 0)
        out.received += counts.received
        if listener.spec.full:
            out.full += 1
            out.full_received += counts.received
            out.late += counts.late
    return out.to_json()


async def connect(spec: ListenerSpec, windows: Windows) -> Listener:
    """Open one listener's socket (the handshake and hello follow in the protocol)."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(spec.url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    _, listener = await loop.create_connection(lambda: Listener(spec, windows), host, port)
    return listener


async def run_listeners(
    specs: list[ListenerSpec],
    windows: Windows,
    stop_at: float,
    stop: asyncio.Event,
    listeners: list[Listener],
) -> None:
    """Connect ``specs`` at their times into ``listeners``, keep them until ``stop_at``
    (or ``stop``), then close them."""
    pending: set[asyncio.Task[None]] = set()

    async def open_one(spec: ListenerSpec) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                listeners.append(await connect(spec, windows))
        except (OSError, TimeoutError) as exc:
            dead = Listener(spec, windows)
            dead.error = f"connect: {exc.__class__.__name__}"
            listeners.append(dead)

    for spec in sorted(specs, key=lambda s: s.join_at):
        if stop.is_set():
            break
        wait = spec.join_at - time.time()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stop.wait()
        task = asyncio.create_task(open_one(spec))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending, return_exceptions=True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, stop_at - time.time())):
            await stop.wait()
    for listener in listeners:
        listener.close()
