"""One song's recording in progress: which positions go where in the file (pure).

A take records song positions ``[start_pos, end)`` of one room: file sample
``i`` is position ``start_pos + i``. Tap windows arrive in position order but
may overlap what is already written (a successor re-reads the tap stream) or
leave a gap (a recorder died, the mixer skipped frames): :meth:`Take.place`
says how much silence to write first and which part of the window follows.
No I/O, no clock: the adapter (recorder/service.py) feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

import msgspec

from common.constants import SAMPLE_RATE
from common.records import Metronome

__all__ = ["MAX_SONG_SAMPLES", "Placement", "Take", "TakeInfo", "clip"]

MAX_SONG_SAMPLES: Final = 60 * 60 * SAMPLE_RATE
"""A song is cut at 60 minutes."""


class TakeInfo(msgspec.Struct, kw_only=True):
    """What a successor needs to carry on a take (kept next to its audio, as JSON).

    ``delay`` is the tap (samples) the take reads, ``origin`` where the
    backing track's sample 0 plays (None without a track). With ``stems``,
    each singer's own audio goes to a file of its own; ``singers`` (id ->
    name, in the order their stems are listed) names them. ``clicks`` is the
    song's metronome when its clicks go into the mix.
    """

    room: str
    number: int
    start_pos: int
    delay: int
    leader: str = ""
    created: float = 0.0
    track_id: str | None = None
    origin: int | None = None
    end_pos: int | None = None
    stems: bool = False
    singers: dict[str, str] = msgspec.field(default_factory=dict)
    clicks: Metronome | None = None


class Placement(NamedTuple):
    """Write ``silence`` zero samples, then ``window[lo:hi]`` (``lo == hi``: nothing)."""

    silence: int
    lo: int
    hi: int


@dataclass
class Take:
    """The write frontier of one take: ``written`` samples are in its file."""

    start_pos: int
    written: int = 0
    end_pos: int | None = None

    def __post_init__(self) -> None:
        if self.written < 0:
            raise ValueError(f"written must be >= 0, got {self.written}")

    @property
    def limit(self) -> int:
        """The position where the take stops: the song's end, or 60 minutes in."""
        cut = self.start_pos + MAX_SONG_SAMPLES
        return cut if self.end_pos is None else min(self.end_pos, cut)

    @property
    def frontier(self) -> int:
        """The next position to write."""
        return self.start_pos + self.written

    @property
    def done(self) -> bool:
        return self.frontier >= self.limit

    def end(self, end_pos: int) -> None:
        """The song ended at ``end_pos`` (never before what is written)."""
        self.end_pos = max(end_pos, self.start_pos)

    def place(self, start: int, n: int) -> Placement:
        """Where a window of ``n`` samples at position ``start`` goes; advances ``written``."""
        frontier, limit = self.frontier, self.limit
        lo_pos = max(start, frontier)
        hi_pos = min(start + n, limit)
        if hi_pos <= lo_pos:
            return Placement(0, 0, 0)
        silence = lo_pos - frontier
        self.written += silence + (hi_pos - lo_pos)
        return Placement(silence, lo_pos - start, hi_pos - start)

    def pad_to_end(self) -> int:
        """Silence still owed when the song's end is known and the tap stopped short."""
        missing = max(0, self.limit - self.frontier) if self.end_pos is not None else 0
        self.written += missing
        return missing


def clip(start_pos: int, limit: int, start: int, n: int) -> tuple[int, int, int] | None:
    """Where a singer's chunk of ``n`` samples at position ``start`` goes in a stem of a
    take that covers ``[start_pos, limit)``: ``(file offset, lo, hi)`` meaning
    ``chunk[lo:hi]`` is written at sample ``offset``; None when none of it is in the song."""
    lo_pos, hi_pos = max(start, start_pos), min(start + n, limit)
    if hi_pos <= lo_pos:
        return None
    return lo_pos - start_pos, lo_pos - start, hi_pos - start
