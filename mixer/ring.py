"""The per-room ring: a circular float32 mix of everyone's audio.

Positions are absolute sample counts (see ``common.constants.SAMPLE_RATE``);
ring index ``p % length`` holds position ``p``. The ring only knows the
positions ``[cleared - length, cleared)``: ``clear_to(now)`` zeroes what lies
ahead of the lead before anything is written there, writes land in the past,
and taps read normalised windows out of it.

Pure core: no I/O, no clock, no asyncio. Time is passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from common.constants import OCC_FRAME_SAMPLES

__all__ = ["OccupancySnapshot", "Ring", "RingCounters", "WriteStatus"]

_FRAME: Final = OCC_FRAME_SAMPLES
# Frame arithmetic uses shifts on the hot path; this holds only for a power of two.
_FRAME_SHIFT: Final = OCC_FRAME_SAMPLES.bit_length() - 1
assert 1 << _FRAME_SHIFT == _FRAME, "OCC_FRAME_SAMPLES must be a power of two"
_FRAME_MASK: Final = _FRAME - 1

_COUNT_LIMIT: Final = 1 << 16  # uint16 counts; the gain table covers every value
_COUNT_DTYPE: Final = np.dtype(np.uint16)
_ZERO_FRAME_BYTES: Final = bytes(_FRAME * _COUNT_DTYPE.itemsize)


def _gain_table() -> npt.NDArray[np.float32]:
    # count 0 maps to a finite gain; the audio there is 0 anyway.
    counts = np.arange(_COUNT_LIMIT, dtype=np.float64)
    return np.sqrt(3.0 / (counts + 2.0)).astype(np.float32)


_GAIN: Final = _gain_table()
_GAIN.setflags(write=False)


class WriteStatus(enum.Enum):
    """Outcome of :meth:`Ring.write`."""

    OK = "ok"
    FUTURE = "future"
    TOO_OLD = "too_old"
    TOO_LONG = "too_long"


@dataclass
class RingCounters:
    """Running totals of write outcomes (one field per :class:`WriteStatus`)."""

    applied: int = 0
    rejected_future: int = 0
    rejected_old: int = 0
    rejected_too_long: int = 0


@dataclass(frozen=True)
class OccupancySnapshot:
    """Which 128-sample frames of the ring hold audio, at one clock.

    ``bitmap`` is ``np.packbits`` (big bit order) of the per-frame flags in
    ring-index order: bit ``j`` covers ring indices ``[j*128, (j+1)*128)``,
    padded with zero bits to a whole byte. Ring index ``i`` holds the unique
    absolute position ``p`` in ``[clock - ring_samples, clock)`` with
    ``p % ring_samples == i``.
    """

    clock: int
    ring_samples: int
    frame_samples: int
    bitmap: bytes
    occupied: int


class Ring:
    """Circular mix of float32 audio plus a per-sample count of singers.

    Invariants: ``flags[j] == any(counts[j*128:(j+1)*128] > 0)`` after every
    call, kept incrementally (work proportional to the request, not the
    ring). Counts are uint16: more than 65 535 overlapping writes on one
    sample would wrap, far beyond any room size.
    """

    def __init__(self, length: int, now: int) -> None:
        """Make an empty (silent) ring of ``length`` samples, cleared up to ``now``."""
        if isinstance(length, bool) or not isinstance(length, int):
            raise ValueError(f"ring length must be an int, got {type(length).__name__}")
        if length <= 0 or length % _FRAME:
            raise ValueError(
                f"ring length must be a positive multiple of {_FRAME} samples, got {length}"
            )
        self.length: int = length
        self.counters: RingCounters = RingCounters()
        self._cleared: int = now
        self._audio: npt.NDArray[np.float32] = np.zeros(length, dtype=np.float32)
        self._counts: npt.NDArray[np.uint16] = np.zeros(length, dtype=_COUNT_DTYPE)
        self._flags: npt.NDArray[np.bool_] = np.zeros(length // _FRAME, dtype=np.bool_)

    @property
    def cleared(self) -> int:
        """Absolute position up to which clear-ahead has run (the ring's "now")."""
        return self._cleared

    def clear_to(self, now: int) -> None:
        """Zero audio and counts in ``[cleared, now)`` and advance ``cleared`` to ``now``.

        A no-op when ``now <= cleared``. Occupancy of the zeroed frames is
        unmarked; a partially zeroed edge frame is recomputed from its counts.
        """
        cleared = self._cleared
        if now <= cleared:
            return
        length = self.length
        if now - cleared >= length:
            self._audio.fill(0.0)
            self._counts.fill(0)
            self._flags.fill(False)
        else:
            a = cleared % length
            b = a + (now - cleared)
            if b <= length:
                self._clear_span(a, b)
            else:
                self._clear_span(a, length)
                self._clear_span(0, b - length)
        self._cleared = now

    def _clear_span(self, s: int, e: int) -> None:
        # [s, e) are ring indices with 0 <= s < e <= length.
        self._audio[s:e] = 0.0
        self._counts[s:e] = 0
        self._unmark(s, e)

    def _mark(self, s: int, e: int) -> None:
        """Occupancy step of a write: flag every frame touching ring indices [s, e)."""
        self._flags[s >> _FRAME_SHIFT : (e + _FRAME_MASK) >> _FRAME_SHIFT] = True

    def _unmark(self, s: int, e: int) -> None:
        """Occupancy step of a clear, after ring indices [s, e) were zeroed."""
        flags = self._flags
        first_full = (s + _FRAME_MASK) >> _FRAME_SHIFT
        end_full = e >> _FRAME_SHIFT
        if first_full < end_full:
            flags[first_full:end_full] = False
        # Edge frames may still hold samples outside [s, e): recompute them,
        # but only when set, since zeroing can only turn a flag off. Comparing
        # the frame's bytes with zeros is ~5x cheaper than a numpy reduction
        # at 128 samples, and this runs on every clear.
        counts = self._counts
        head = s >> _FRAME_SHIFT
        if s & _FRAME_MASK and flags[head]:
            base = head << _FRAME_SHIFT
            flags[head] = counts[base : base + _FRAME].tobytes() != _ZERO_FRAME_BYTES
        tail = e >> _FRAME_SHIFT
        if e & _FRAME_MASK and (tail != head or not s & _FRAME_MASK) and flags[tail]:
            base = tail << _FRAME_SHIFT
            flags[tail] = counts[base : base + _FRAME].tobytes() != _ZERO_FRAME_BYTES

    def write(self, start: int, samples: npt.NDArray[np.float32], gain: float = 1.0) -> WriteStatus:
        """Add a chunk of 1-D float32 ``samples`` times ``gain`` at absolute position ``start``.

        Checked in this order: longer than the ring (``TOO_LONG``), reaching
        past ``cleared`` (``FUTURE``), starting before ``cleared - length``
        (``TOO_OLD``). A rejected write changes nothing but its counter. An
        accepted one adds into the audio, adds 1 to the count of each sample
        and marks the occupancy frames it touches. An empty chunk at a valid
        position is ``OK`` and changes nothing (``applied`` included).
        Raises ``ValueError`` for a non-1-D or non-float32 array.
        """
        if samples.dtype != np.float32 or samples.ndim != 1:
            raise ValueError(
                f"samples must be 1-D float32, got dtype {samples.dtype} shape {samples.shape}"
            )
        n = samples.shape[0]
        length = self.length
        counters = self.counters
        if n > length:
            counters.rejected_too_long += 1
            return WriteStatus.TOO_LONG
        cleared = self._cleared
        if start + n > cleared:
            counters.rejected_future += 1
            return WriteStatus.FUTURE
        if start < cleared - length:
            counters.rejected_old += 1
            return WriteStatus.TOO_OLD
        if n == 0:
            return WriteStatus.OK
        if gain != 1.0:
            samples = np.multiply(samples, np.float32(gain), dtype=np.float32)
        audio = self._audio
        counts = self._counts
        i = start % length
        j = i + n
        if j <= length:
            a = audio[i:j]
            np.add(a, samples, out=a)
            c = counts[i:j]
            np.add(c, 1, out=c)
            self._mark(i, j)
        else:
            k = length - i
            j -= length
            a = audio[i:]
            np.add(a, samples[:k], out=a)
            a = audio[:j]
            np.add(a, samples[k:], out=a)
            c = counts[i:]
            np.add(c, 1, out=c)
            c = counts[:j]
            np.add(c, 1, out=c)
            self._mark(i, length)
            self._mark(0, j)
        counters.applied += 1
        return WriteStatus.OK

    def _check_range(self, start: int, n: int) -> None:
        cleared = self._cleared
        if n < 0 or start < cleared - self.length or start + n > cleared:
            raise ValueError(
                f"range [{start}, {start + n}) is not inside the ring window "
                f"[{cleared - self.length}, {cleared})"
            )

    def read(self, start: int, out: npt.NDArray[np.float32]) -> None:
        """Fill ``out`` with the normalised mix of ``[start, start + len(out))``.

        ``out[i] = audio[i] * sqrt(3 / (count[i] + 2))``. ``out`` must be a
        preallocated 1-D float32 array. Raises ``ValueError`` if the range is
        not inside ``[cleared - length, cleared)`` or ``out`` has the wrong
        dtype or shape.
        """
        if out.dtype != np.float32 or out.ndim != 1:
            raise ValueError(f"out must be 1-D float32, got dtype {out.dtype} shape {out.shape}")
        n = out.shape[0]
        length = self.length
        cleared = self._cleared
        if start < cleared - length or start + n > cleared:
            self._check_range(start, n)
        i = start % length
        j = i + n
        # The gains go into `out` first, so the read needs no scratch buffer.
        # mode="clip" keeps np.take from buffering `out`; uint16 counts
        # never leave the table anyway.
        if j <= length:
            np.take(_GAIN, self._counts[i:j], out=out, mode="clip")
            np.multiply(out, self._audio[i:j], out=out)
        else:
            k = length - i
            j -= length
            head = out[:k]
            tail = out[k:]
            np.take(_GAIN, self._counts[i:], out=head, mode="clip")
            np.multiply(head, self._audio[i:], out=head)
            np.take(_GAIN, self._counts[:j], out=tail, mode="clip")
            np.multiply(tail, self._audio[:j], out=tail)

    def read_repeats(
        self, start: int, out: npt.NDArray[np.float32], offsets: Sequence[int]
    ) -> None:
        """Like :meth:`read`, for the sum of the ring at ``start - d`` for each offset ``d``.

        Audio and counts are summed before the auto-gain, so a voice heard
        again (a round) counts as a voice where it sounds. Source positions
        older than the ring's window read as silence.
        """
        if out.dtype != np.float32 or out.ndim != 1:
            raise ValueError(f"out must be 1-D float32, got dtype {out.dtype} shape {out.shape}")
        n = out.shape[0]
        self._check_range(start, n)
        low = self._cleared - self.length
        audio = np.zeros(n, dtype=np.float32)
        counts = np.zeros(n, dtype=np.uint32)
        for offset in offsets:
            source = start - offset
            skip = max(0, low - source)
            if skip < n:
                self._accumulate(source + skip, audio[skip:], counts[skip:])
        np.minimum(counts, _COUNT_LIMIT - 1, out=counts)
        np.take(_GAIN, counts, out=out)
        np.multiply(out, audio, out=out)

    def _accumulate(
        self, start: int, audio: npt.NDArray[np.float32], counts: npt.NDArray[np.uint32]
    ) -> None:
        # Adds [start, start + len(audio)) of the ring into audio and counts.
        length = self.length
        i = start % length
        j = i + audio.shape[0]
        if j <= length:
            np.add(audio, self._audio[i:j], out=audio)
            np.add(counts, self._counts[i:j], out=counts)
        else:
            k = length - i
            np.add(audio[:k], self._audio[i:], out=audio[:k])
            np.add(audio[k:], self._audio[: j - length], out=audio[k:])
            np.add(counts[:k], self._counts[i:], out=counts[:k])
            np.add(counts[k:], self._counts[: j - length], out=counts[k:])

    def read_raw(
        self, start: int, n: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint16]]:
        """Copies of the un-normalised audio and the counts for ``[start, start + n)``.

        Same range rule as :meth:`read`; meant for tests and debugging.
        """
        self._check_range(start, n)
        length = self.length
        i = start % length
        j = i + n
        if j <= length:
            return self._audio[i:j].copy(), self._counts[i:j].copy()
        j -= length
        return (
            np.concatenate((self._audio[i:], self._audio[:j])),
            np.concatenate((self._counts[i:], self._counts[:j])),
        )

    def restore(
        self, start: int, audio: npt.NDArray[np.float32], counts: npt.NDArray[np.uint16]
    ) -> None:
        """Set ``[start, start + len(audio))`` to saved audio and counts (a checkpoint).

        The range must lie inside the window, as for :meth:`read`; the
        occupancy of every frame it touches is recomputed from the counts.
        """
        n = audio.shape[0]
        if audio.dtype != np.float32 or counts.dtype != np.uint16 or counts.shape != (n,):
            raise ValueError(
                f"restore needs float32 audio and uint16 counts of one length, got "
                f"{audio.dtype} {audio.shape} and {counts.dtype} {counts.shape}"
            )
        self._check_range(start, n)
        length = self.length
        i = start % length
        k = min(n, length - i)
        self._audio[i : i + k] = audio[:k]
        self._counts[i : i + k] = counts[:k]
        self._refresh_flags(i, i + k)
        if k < n:
            self._audio[: n - k] = audio[k:]
            self._counts[: n - k] = counts[k:]
            self._refresh_flags(0, n - k)

    def _refresh_flags(self, s: int, e: int) -> None:
        # Every frame touching ring indices [s, e), from its counts.
        first = s >> _FRAME_SHIFT
        last = (e + _FRAME_MASK) >> _FRAME_SHIFT
        frames = self._counts[first << _FRAME_SHIFT : last << _FRAME_SHIFT]
        self._flags[first:last] = frames.reshape(-1, _FRAME).any(axis=1)

    def occupancy_snapshot(self) -> OccupancySnapshot:
        """The occupancy flags packed into a bitmap, stamped with ``cleared``.

        Costs a pass over the flags (one bool per 128 samples); meant to be
        taken a few times a second, not per chunk.
        """
        flags = self._flags
        return OccupancySnapshot(
            clock=self._cleared,
            ring_samples=self.length,
            frame_samples=_FRAME,
            bitmap=np.packbits(flags).tobytes(),
            occupied=int(np.count_nonzero(flags)),
        )

    def occupied_flags(self) -> npt.NDArray[np.bool_]:
        """A copy of the per-frame occupancy flags, in ring-index order."""
        return self._flags.copy()
