"""Writing to the browsers: one transport write per session per pass.

Sessions queue what they have to say (gateway/session.py) and mark
themselves here; a flush pass then writes, for each marked session, all its
queued WebSocket frames in one ``transport.write``.  With ~100 listeners on a
tap, that is one system call per listener per tap window, instead of one per
message plus a task wake-up per message with a writer task per session.

Frames are built here (RFC 6455 §5.2: FIN, opcode, unmasked length) because
aiohttp writes each message separately.  aiohttp still owns the handshake,
the reading side, pings and the close frame; they interleave with ours at
frame boundaries, which WebSocket allows.  A session whose transport buffer
is over ``max_buffer_bytes`` is skipped and retried a little later, so a slow
client never blocks a pass; meanwhile its own bounded queue drops its oldest
audio.  Urgent messages (``pong``: its timing matters to clock sync) are
flushed at once; everything else after ``linger_ms``, which lets audio
and state that arrive together leave together; level meters are "lazy":
they ride along with the next write (see :meth:`Outbox.mark`).
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gateway.session import Session

OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
_FIN: Final = 0x80
_LEN16: Final = struct.Struct("!BBH")
_LEN64: Final = struct.Struct("!BBQ")

RETRY_S: Final = 0.05
"""How soon a session skipped for a full transport buffer is tried again."""


def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked, unfragmented server frame (RFC 6455 §5.2)."""
    first = _FIN | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return _LEN16.pack(first, 126, length)
    return _LEN64.pack(first, 127, length)


def binary_frames(messages: list[bytes]) -> bytes:
    """``messages`` as consecutive binary frames, ready to write (built once for many)."""
    parts: list[bytes] = []
    for message in messages:
        parts += (frame_header(OP_BINARY, len(message)), message)
    return b"".join(parts)


class Outbox:
    """Flush passes over the sessions that have something to send."""

    def __init__(
        self,
        *,
        linger_ms: float = 10.0,
        lazy_ms: float = 250.0,
        max_buffer_bytes: int = 256 * 1024,
    ) -> None:
        self.linger_s = linger_ms / 1000
        self.lazy_s = lazy_ms / 1000
        self.max_buffer_bytes = max_buffer_bytes
        self._dirty: set[Session] = set()
        self._lazy: set[Session] = set()
        self._now: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._lazy_timer: asyncio.TimerHandle | None = None

    def mark(self, session: Session, *, urgent: bool = False, lazy: bool = False) -> None:
        """``session`` has queued frames: write them at the next pass.

        ``lazy`` frames wait for the session's next ordinary write, or
        ``lazy_ms`` at most (sessions on a tap get audio every ~100 ms).
        """
        loop = asyncio.get_running_loop()
        if lazy:
            self._lazy.add(session)
            if self._lazy_timer is None:
                self._lazy_timer = loop.call_later(self.lazy_s, self._flush_lazy)
            return
        self._dirty.add(session)
        if urgent:
            if self._now is None:
                self._now = loop.call_soon(self._flush)
        elif self._later is None and self._now is None:
            self._later = loop.call_later(self.linger_s, self._flush)

    def _flush_lazy(self) -> None:
        self._lazy_timer = None
        lazy, self._lazy = self._lazy, set()
        for session in lazy:
            self.mark(session)

    def _flush(self) -> None:
        for handle in (self._now, self._later):
            if handle is not None:
                handle.cancel()
        self._now = self._later = None
        dirty, self._dirty = self._dirty, set()
        blocked = [s for s in dirty if not s.write_queued(self.max_buffer_bytes)]
        if blocked:
            self._dirty.update(blocked)
            self._later = asyncio.get_running_loop().call_later(RETRY_S, self._flush)

    def close(self) -> None:
        for handle in (self._now, self._later, self._lazy_timer):
            if handle is not None:
                handle.cancel()
        self._now = self._later = self._lazy_timer = None
        self._dirty.clear()
        self._lazy.clear()
