"""Accounting for the load generator: what each simulated singer saw, by window.

Pure: no I/O, no clock, no asyncio; ``now`` (the singer's estimate of the
room clock, in samples) is always an argument.

Downstream frames are accounted by position.  Frame ``k`` of the tap with
delay ``D`` covers positions ``[k*F, (k+1)*F)`` (F = 960) and plays at room
time ``k*F + D``; it is **on time** when it arrives at or before that, and
**late** after it.  Frames that never arrive between the first frame a
singer received on a tap and the end of the run are **missing**; so are
frames still absent ``horizon`` after their play time (a frame that turns
up even later is also counted as ``stale``).  Each frame is accounted in the
measurement window that contains its play time; frames outside every window
are not accounted.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE

MARGIN_EDGES_MS: Final = (
    -2000, -1000, -500, -200, -100, -50, -20, 0,
    20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1500, 2000, 5000,
)  # fmt: skip
"""Bins for how long before its play time a message's first frame arrived (ms)."""

LAG_EDGES_MS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
"""Bins for how long after its scheduled time an upstream message left (ms)."""

DEFAULT_HORIZON: Final = 2 * SAMPLE_RATE
"""Frames still absent this long after their play time are counted missing."""

MAX_AHEAD_FRAMES: Final = 60 * SAMPLE_RATE // OPUS_FRAME_SAMPLES
"""A frame further than 60 s ahead of a segment's first frame is a bogus header."""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Histogram:
    """Counts of values in fixed bins (``edges`` ascending), plus the exact min and max."""

    def __init__(self, edges: Sequence[float]) -> None:
        if list(edges) != sorted(edges) or not edges:
            raise ValueError(f"edges must be a non-empty ascending sequence, got {edges!r}")
        self.edges = tuple(edges)
        self.counts = [0] * (len(edges) + 1)
        """``counts[i]`` holds values in ``[edges[i-1], edges[i])`` (open-ended at both ends)."""
        self.min: float | None = None
        self.max: float | None = None

    def add(self, value: float, n: int = 1) -> None:
        self.counts[bisect.bisect_right(self.edges, value)] += n
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value

    @property
    def total(self) -> int:
        return sum(self.counts)

    def merge(self, other: Histogram) -> None:
        if other.edges != self.edges:
            raise ValueError("cannot merge histograms with different bins")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        for value in (other.min, other.max):
            if value is not None:
                self.min = value if self.min is None else min(self.min, value)
                self.max = value if self.max is None else max(self.max, value)

    def quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile: the upper edge of its bin (max for the last)."""
        total = self.total
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if count and seen >= rank:
                upper = self.edges[i] if i < len(self.edges) else self.max
                assert upper is not None and self.max is not None
                return min(float(upper), self.max)
        return self.max

    def to_json(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": self.counts, "min": self.min, "max": self.max}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        hist = cls(data["edges"])
        counts = [int(c) for c in data["counts"]]
        if len(counts) != len(hist.counts):
            raise ValueError(f"{len(counts)} counts for {len(hist.edges)} edges")
        hist.counts = counts
        hist.min, hist.max = data.get("min"), data.get("max")
        return hist


@dataclass
class FrameCounts:
    """Downstream frames of one window; ``on_time + late + missing`` were expected."""

    on_time: int = 0
    late: int = 0
    missing: int = 0
    duplicate: int = 0
    """Frames received more than once (each extra copy)."""
    stale: int = 0
    """Frames that arrived after they had been counted missing (more than the horizon late)."""
    other_tap: int = 0
    """Frames of a tap the singer had already left (in flight when its delay changed)."""
    bad: int = 0
    """Frames whose header made no sense (misaligned start, absurd position)."""

    @property
    def expected(self) -> int:
        return self.on_time + self.late + self.missing

    @property
    def bad_fraction(self) -> float:
        """Late plus missing over expected (0 when nothing was expected)."""
        return (self.late + self.missing) / self.expected if self.expected else 0.0

    def merge(self, other: FrameCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FrameCounts:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})


@dataclass
class WindowStats:
    """What one singer saw during one measurement window."""

    frames: FrameCounts = field(default_factory=FrameCounts)
    margin_ms: Histogram = field(default_factory=lambda: Histogram(MARGIN_EDGES_MS))
    """Per downstream message: play time of its first new frame minus arrival (ms)."""
    up_messages: int = 0
    up_frames: int = 0
    send_lag_ms: Histogram = field(default_factory=lambda: Histogram(LAG_EDGES_MS))
    """Per upstream message: how long after its scheduled time it was sent (ms)."""
    errors: dict[str, int] = field(default_factory=dict)
    """Error messages from the server, by code (audio errors are throttled to 1/s/code)."""

    def merge(self, other: WindowStats) -> None:
        self.frames.merge(other.frames)
        self.margin_ms.merge(other.margin_ms)
        self.up_messages += other.up_messages
        self.up_frames += other.up_frames
        self.send_lag_ms.merge(other.send_lag_ms)
        for code, n in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "frames": self.frames.to_json(),
            "margin_ms": self.margin_ms.to_json(),
            "up_messages": self.up_messages,
            "up_frames": self.up_frames,
            "send_lag_ms": self.send_lag_ms.to_json(),
            "errors": dict(sorted(self.errors.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WindowStats:
        return cls(
            frames=FrameCounts.from_json(data["frames"]),
            margin_ms=Histogram.from_json(data["margin_ms"]),
            up_messages=int(data["up_messages"]),
            up_frames=int(data["up_frames"]),
            send_lag_ms=Histogram.from_json(data["send_lag_ms"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
        )


def merge_windows(items: Iterable[WindowStats]) -> WindowStats:
    total = WindowStats()
    for item in items:
        total.merge(item)
    return total


class Windows:
    """Measurement windows: ascending, disjoint play-time intervals ``[lo, hi)`` in samples."""

    def __init__(self, bounds: Sequence[tuple[int, int]]) -> None:
        previous = None
        for lo, hi in bounds:
            if hi <= lo or (previous is not None and lo < previous):
                raise ValueError(f"windows must be ascending, disjoint and non-empty: {bounds!r}")
            previous = hi
        self.bounds = [(int(lo), int(hi)) for lo, hi in bounds]

    def __len__(self) -> int:
        return len(self.bounds)

    def at(self, position: int) -> int | None:
        """Index of the window holding ``position`` (None: outside all)."""
        i = bisect.bisect_right(self.bounds, (position, float("inf"))) - 1
        if i >= 0 and position < self.bounds[i][1]:
            return i
        return None

    @property
    def end(self) -> int:
        return self.bounds[-1][1] if self.bounds else 0


class FrameLedger:
    """Downstream frames of one singer, accounted by position into :class:`WindowStats`.

    Feed it every downstream message header with :meth:`receive`, call
    :meth:`settle` now and then (it finalises frames more than ``horizon``
    past their play time, keeping memory bounded), and :meth:`close` once
    after the last window's frames had ``horizon`` to arrive.
    """

    def __init__(
        self,
        windows: Windows,
        stats: Sequence[WindowStats],
        frame_samples: int = OPUS_FRAME_SAMPLES,
        horizon: int = DEFAULT_HORIZON,
    ) -> None:
        if len(stats) != len(windows):
            raise ValueError(f"{len(stats)} stats for {len(windows)} windows")
        self.windows = windows
        self.stats = stats
        self.frame = frame_samples
        self.horizon = horizon
        self.delay: int | None = None
        """The tap being accounted (the delay of the last new tap seen)."""
        self._left: set[int] = set()
        self._kwin: list[tuple[int, int]] = []
        self._base = 0
        """Frame index of ``_seen[0]``; every frame before it is settled."""
        self._seen = bytearray()
        self._last_end = 0
        """One past the highest frame index received on this tap."""
        self._closed = False

    # --- receiving ------------------------------------------------------------------

    def receive(self, delay: int, start: int, count: int, now: int) -> None:
        """Account a downstream message: ``count`` frames from ``start`` on tap ``delay``.

        ``now`` is the singer's estimate of the room clock when it arrived.
        """
        if self._closed or count <= 0:
            return
        frame = self.frame
        if delay != self.delay:
            if delay in self._left:
                self._count_outside_or(delay, start, count, "other_tap")
                return
            self._switch(delay, start // frame)
        if start % frame:
            self._count_outside_or(delay, start, count, "bad")
            return
        a = start // frame
        b = a + count
        if b - self._base > MAX_AHEAD_FRAMES or a < self._base - MAX_AHEAD_FRAMES:
            self._count_outside_or(delay, start, count, "bad")
            return
        if a < self._base:
            # Settled already (counted missing, or a duplicate of a settled frame).
            stale_end = min(b, self._base)
            self._add_pieces(a, stale_end, "stale")
            a = stale_end
            if a >= b:
                return
        if b - self._base > len(self._seen):
            self._seen.extend(bytes(b - self._base - len(self._seen)))
        self._last_end = max(self._last_end, b)
        late_end = _ceil_div(now - delay, frame)
        # Everything in one message arrived at once: its first new frame has the
        # smallest margin, so one histogram entry per message describes it.
        found = self._seen.find(0, a - self._base, b - self._base)
        first_new = self._base + found if found >= 0 else None
        for lo, hi, w in self._pieces(a, b):
            stats = self.stats[w]
            seen = self._seen[lo - self._base : hi - self._base].count(1)
            new = hi - lo - seen
            if seen:
                stats.frames.duplicate += seen
            if new:
                cut = max(lo, min(hi, late_end))
                late = cut - lo - self._seen[lo - self._base : cut - self._base].count(1)
                stats.frames.late += late
                stats.frames.on_time += new - late
                if first_new is not None and lo <= first_new < hi:
                    margin = (first_new * frame + delay - now) * 1000 / SAMPLE_RATE
                    stats.margin_ms.add(margin)
        self._seen[a - self._base : b - self._base] = b"\x01" * (b - a)

    def _switch(self, delay: int, first: int) -> None:
        """A new tap: finish the old one at its last frame received, start at ``first``."""
        if self.delay is not None:
            self._settle_to(self._last_end)
            self._left.add(self.delay)
        self._left.discard(delay)
        self.delay = delay
        frame = self.frame
        self._kwin = [
            (_ceil_div(lo - delay, frame), _ceil_div(hi - delay, frame))
            for lo, hi in self.windows.bounds
        ]
        self._base = first
        self._seen = bytearray()
        self._last_end = first

    def _pieces(self, a: int, b: int) -> list[tuple[int, int, int]]:
        """``[a, b)`` cut along the windows (in frame indices of the current tap)."""
        out: list[tuple[int, int, int]] = []
        for w, (lo, hi) in enumerate(self._kwin):
            if hi <= a:
                continue
            if lo >= b:
                break
            out.append((max(a, lo), min(b, hi), w))
        return out

    def _add_pieces(self, a: int, b: int, counter: str) -> None:
        for lo, hi, w in self._pieces(a, b):
            frames = self.stats[w].frames
            setattr(frames, counter, getattr(frames, counter) + hi - lo)

    def _count_outside_or(self, delay: int, start: int, count: int, counter: str) -> None:
        # Attribute by play time of the first frame (such frames carry no position we trust).
        w = self.windows.at(start + delay)
        if w is not None:
            frames = self.stats[w].frames
            setattr(frames, counter, getattr(frames, counter) + count)

    # --- settling ---------------------------------------------------------------------

    def settle(self, now: int) -> None:
        """Finalise every frame whose play time is more than ``horizon`` before ``now``."""
        if self.delay is None or self._closed:
            return
        self._settle_to(_ceil_div(now - self.horizon - self.delay, self.frame))

    def close(self) -> None:
        """Finalise everything: frames expected in any window and never received are missing."""
        if self._closed:
            return
        if self.delay is not None:
            self._settle_to(_ceil_div(self.windows.end - self.delay, self.frame))
        self._closed = True

    def _settle_to(self, end: int) -> None:
        if end <= self._base:
            return
        n = min(end - self._base, len(self._seen))
        for lo, hi, w in self._pieces(self._base, end):
            lo_i, hi_i = lo - self._base, min(hi - self._base, n)
            absent = (hi - lo) - (self._seen[lo_i:hi_i].count(1) if hi_i > lo_i else 0)
            self.stats[w].frames.missing += absent
        del self._seen[:n]
        self._base = end
