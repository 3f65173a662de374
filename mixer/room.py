"""One room's live audio: the ring, the taps, and the room state.

:class:`RoomMixer` applies singers' chunks to the ring (only inside the
song window) and, on every tick, emits each tap's due 960-sample frames.
Pure: no I/O, no asyncio, no clock; ``now`` (absolute samples at 48 kHz
since the epoch) is always an argument.

The room model itself (members, buckets, song, console, material, taps)
lives in :mod:`mixer.roomstate` and the concern modules it composes, and is
re-exported here.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from common.constants import OCC_FRAME_SAMPLES, OPUS_FRAME_SAMPLES, seconds_to_samples
from common.errors import ValidationError
from common.records import Checkpoint, CheckpointPart
from mixer.ring import OccupancySnapshot, Ring, WriteStatus
from mixer.roomstate import (
    SILENCE_DB,
    CommandError,
    Member,
    Role,
    RoomConfig,
    RoomState,
    Song,
    Tap,
)

__all__ = [
    "AHEAD_TOLERANCE",
    "MAX_FRAMES_PER_TICK",
    "ApplyStatus",
    "CommandError",
    "Member",
    "MixerCounters",
    "Role",
    "RoomConfig",
    "RoomMixer",
    "RoomState",
    "Song",
    "Tap",
    "TapOutput",
]

Samples = npt.NDArray[np.float32]

AHEAD_TOLERANCE: Final = seconds_to_samples(0.5)
"""How far past its play time a chunk may reach before it is AHEAD (clock estimation error)."""

MAX_FRAMES_PER_TICK: Final = 50
"""Most frames one tap emits per tick; a tap further behind skips its oldest frames."""

_FRAME: Final = OPUS_FRAME_SAMPLES
PLAYABLE_MARGIN: Final = seconds_to_samples(0.2)
"""After a takeover, a tap resumes no closer than this to its frames' play time."""

_MAX_DIRTY_SPANS: Final = 20_000
"""Spans remembered for the next checkpoint; past this the next one is full."""

_RING_KEEP: Final = seconds_to_samples(2.0)
"""How long past the last tap's end of the song the ring is kept (late chunks)."""


@functools.cache
def _empty_bitmap(frames: int) -> bytes:
    return bytes((frames + 7) // 8)


_MIN_RMS: Final = 10.0 ** (SILENCE_DB / 20.0)


class ApplyStatus(enum.Enum):
    """Outcome of :meth:`RoomMixer.apply`; every status but OK and LATE drops the chunk."""

    OK = "ok"
    LATE = "late"
    """Applied, but a tap with a larger delay had already emitted part of it."""
    UNKNOWN_SINGER = "unknown_singer"
    MUTED = "muted"
    """The member is muted or a spectator."""
    NO_SONG = "no_song"
    """Entirely outside the song window (chatter between songs)."""
    AHEAD = "ahead"
    """Reaches past the member's play time (plus tolerance): they cannot have sung it."""
    FUTURE = "future"
    TOO_OLD = "too_old"
    TOO_LONG = "too_long"
    OVERLAP = "overlap"
    """Entirely at positions this singer already wrote (a replayed or duplicated chunk)."""


_WRITE_STATUS: Final = {
    WriteStatus.FUTURE: ApplyStatus.FUTURE,
    WriteStatus.TOO_OLD: ApplyStatus.TOO_OLD,
    WriteStatus.TOO_LONG: ApplyStatus.TOO_LONG,
}
_REJECTIONS: Final = frozenset(
    {
        ApplyStatus.AHEAD,
        ApplyStatus.FUTURE,
        ApplyStatus.TOO_OLD,
        ApplyStatus.TOO_LONG,
        ApplyStatus.OVERLAP,
    }
)


@dataclass(frozen=True)
class TapOutput:
    """A tap's normalised mix for positions ``[start, start + len(samples))``.

    ``start`` is on a frame boundary and ``samples`` holds a whole number of
    960-sample frames; successive outputs of a tap continue each other
    unless frames were skipped.
    """

    tap: Tap
    start: int
    samples: Samples
    fresh: bool = False
    """The tap's first output: its stream is new (and needs its time-to-live set)."""

    @property
    def delay(self) -> int:
        return self.tap.delay


def _dropped_zero() -> dict[str, int]:
    return {s.value: 0 for s in ApplyStatus if s not in (ApplyStatus.OK, ApplyStatus.LATE)}


@dataclass
class MixerCounters:
    """Running totals of one room's mixer (published as the room's stats)."""

    chunks_in: int = 0
    late: int = 0
    frames_out: int = 0
    frames_skipped: int = 0
    dropped: dict[str, int] = field(default_factory=_dropped_zero)

    def to_dict(self) -> dict[str, int]:
        """Flat map for the stats hash: the totals plus ``dropped_<status>``."""
        flat = {
            "chunks_in": self.chunks_in,
            "late": self.late,
            "frames_out": self.frames_out,
            "frames_skipped": self.frames_skipped,
        }
        flat.update({f"dropped_{k}": v for k, v in self.dropped.items()})
        return flat


class RoomMixer:
    """The authoritative rings of one room plus the emission frontier of each tap.

    Sources: each singer's chunk is written into the full ring with the
    singer's gain (fader and leader boost); a soloed singer's chunk also goes
    into the solo ring, which exists only while someone is soloed. Rounds
    are summed at read time: a tap's frame at ``p`` is the ring at ``p`` plus
    the ring at ``p - k * period`` for each repeat ``k``, so a voice comes
    back exactly when each bucket reaches its repeat, and nothing is
    scheduled or stored twice.
    """

    def __init__(self, name: str, state: RoomState, now: int) -> None:
        """A room with no ring yet: the ring exists only while a song needs it.

        A ring of 120 s costs 35 MB, so an idle room holds none: it is made
        (silent, cleared up to that time) when a song runs, and dropped once
        every tap has played the last song's end, repeats included.
        """
        self.name = name
        self.state = state
        self.ring: Ring | None = None
        self.solo_ring: Ring | None = None
        self.counters = MixerCounters()
        self._frontiers: dict[Tap, int] = {}
        # Per singer, the end of the last applied write: each position is mixed at most
        # once per singer, so a duplicated or replayed chunk cannot double a voice.
        self._written: dict[str, int] = {}
        # The ring spans written since the last checkpoint (the next one holds only them),
        # and whether the next one must hold everything (a new ring, a restore, a lost write).
        self._dirty: list[tuple[int, int]] = []
        self._full_checkpoint = True

    @property
    def config(self) -> RoomConfig:
        return self.state.config

    def frontier(self, delay: int, mix: str = "full") -> int | None:
        """The next position the tap ``(delay, mix)`` will emit; None for a tap not seen yet."""
        return self._frontiers.get(Tap(delay, mix))  # type: ignore[arg-type]

    def apply(self, singer_id: str, start: int, samples: Samples, now: int) -> ApplyStatus:
        """Add a singer's chunk for ``[start, start + len(samples))`` at room time ``now``.

        Only the part inside the song window is written. Returns the outcome;
        counts it on the room and (for a known member) on the member. Raises
        ValidationError for an array that is not 1-D float32.
        """
        if samples.dtype != np.float32 or samples.ndim != 1:
            raise ValidationError(
                f"samples must be 1-D float32, got dtype {samples.dtype} shape {samples.shape}"
            )
        self.counters.chunks_in += 1
        state = self.state
        ring = self._clear_to(now)
        member = state.members.get(singer_id)
        if member is None:
            return self._drop(ApplyStatus.UNKNOWN_SINGER, None)
        if member.role is Role.SPECTATOR or member.muted:
            return self._drop(ApplyStatus.MUTED, member)
        n = samples.shape[0]
        end = start + n
        if end > now - member.delay + AHEAD_TOLERANCE:
            return self._drop(ApplyStatus.AHEAD, member)
        if n > state.config.ring_samples:
            # Malformed whatever the song window would leave of it.
            return self._drop(ApplyStatus.TOO_LONG, member)
        song = state.song
        if song.start_pos is None or ring is None:
            return self._drop(ApplyStatus.NO_SONG, member)
        window = song.window(start, end)
        if window is None:
            return self._drop(ApplyStatus.NO_SONG, member)
        lo, hi = window
        done = self._written.get(singer_id)
        if done is not None and lo < done:
            if hi <= done:
                return self._drop(ApplyStatus.OVERLAP, member)
            lo = done
        part = samples[lo - start : hi - start]
        gain = state.gain(member)
        if gain > 0.0:
            written = ring.write(lo, part, gain)
            if written is not WriteStatus.OK:
                return self._drop(_WRITE_STATUS[written], member)
            if not self._full_checkpoint:  # (a full one takes everything anyway)
                dirty = self._dirty
                dirty.append((lo, hi))
                if len(dirty) > _MAX_DIRTY_SPANS:  # checkpoints off, or not taken for long
                    self.checkpoint_lost()
            if member.soloed and self.solo_ring is not None:
                self.solo_ring.write(lo, part, gain)
        elif lo < ring.cleared - ring.length or hi > ring.cleared:
            # A silenced singer's chunk is checked like any other, only not mixed.
            return self._drop(
                ApplyStatus.TOO_OLD if hi <= ring.cleared else ApplyStatus.FUTURE, member
            )
        self._written[singer_id] = hi
        member.chunks += 1
        # A dot product is ~10x cheaper than mean(x * x) and allocates nothing.
        rms = math.sqrt(float(np.dot(samples, samples)) / max(n, 1))
        member.level_db = 20.0 * math.log10(max(rms, _MIN_RMS))
        # Later taps may still hear it, so it stays written; but someone
        # further down the chain already missed part of it.
        if any(f > lo for t, f in self._frontiers.items() if t.delay > member.delay):
            member.late += 1
            self.counters.late += 1
            return ApplyStatus.LATE
        return ApplyStatus.OK

    def tick(self, now: int) -> list[TapOutput]:
        """Emit every tap's frames due at room time ``now``: one output per tap with any due.

        Frame k of tap D (positions ``[k*960, (k+1)*960)``) is due once
        ``now >= k*960 + D - lead``. A new tap starts at its currently due
        frame; a tap more than 50 frames behind skips its oldest ones.
        Taps no longer in use are forgotten.
        """
        ring = self._clear_to(now)
        taps = self.state.taps()
        frontiers = self._frontiers
        if len(frontiers) != len(taps) or any(t not in frontiers for t in taps):
            live = set(taps)
            for tap in [t for t in frontiers if t not in live]:
                del frontiers[tap]
        if len(self._written) > len(self.state.members):
            members = self.state.members
            self._written = {k: v for k, v in self._written.items() if k in members}
        lead = self.config.lead_samples
        song = self.state.song
        # Rounds anywhere in the kept songs? Without, every part reads plainly (the
        # common case, asked once a tick rather than once a tap).
        plain = ring is None or song.longest_repeats() == 0
        outputs: list[TapOutput] = []
        for tap in taps:
            # No ring, no song: every tap (solo ones too) carries silence.
            source = self.solo_ring if tap.mix == "solo" and ring is not None else ring
            last_due = (now - tap.delay + lead) // _FRAME
            frontier = frontiers.get(tap)
            first = last_due if frontier is None else frontier // _FRAME
            if first > last_due:
                continue
            due = last_due - first + 1
            if due > MAX_FRAMES_PER_TICK:
                self.counters.frames_skipped += due - MAX_FRAMES_PER_TICK
                first = last_due - MAX_FRAMES_PER_TICK + 1
                due = MAX_FRAMES_PER_TICK
            if source is None:
                out = np.zeros(due * _FRAME, dtype=np.float32)  # no song: silence
            else:
                out = np.empty(due * _FRAME, dtype=np.float32)
                if plain:
                    source.read(first * _FRAME, out)
                else:
                    _read_rounds(source, song, first * _FRAME, out)
            outputs.append(
                TapOutput(tap=tap, start=first * _FRAME, samples=out, fresh=frontier is None)
            )
            frontiers[tap] = (last_due + 1) * _FRAME
            self.counters.frames_out += due
        if ring is not None and not self.song_audible(now):
            self.ring = self.solo_ring = None
        return outputs

    def checkpoint(self) -> Checkpoint | None:
        """What a new owner needs to go on, as one entry of the checkpoint list.

        The first entry of a ring (and the first after :meth:`restore` or
        :meth:`checkpoint_lost`) is **full**: the ring from the oldest position
        a tap still has to emit (its repeats included). Every later one holds
        only the spans mixed since the entry before, so its size follows what
        the singers sang, not the ring's span. Every entry has the taps'
        frontiers and the overlap guard.

        None while there is no ring (no song audio to lose).
        """
        ring = self.ring
        if ring is None:
            return None
        clock = ring.cleared
        pending = min(self._frontiers.values(), default=clock)
        start = max(pending - self.state.song.longest_repeats(), clock - ring.length)
        start = min(start, clock)
        full = self._full_checkpoint
        spans = [(start, clock)] if full else _merge_spans(self._dirty, start, clock)
        self._dirty = []
        self._full_checkpoint = False
        parts = []
        for lo, hi in spans:
            audio, counts = ring.read_raw(lo, hi - lo)
            runs, values = _runs(counts)
            scale, samples = _scaled(audio)
            parts.append(
                CheckpointPart(start=lo, audio=samples, runs=runs, counts=values, scale=scale)
            )
        return Checkpoint(
            clock=clock,
            start=start,
            parts=parts,
            taps=[(tap.delay, tap.mix, position) for tap, position in self._frontiers.items()],
            written=dict(self._written),
            full=full,
        )

    def checkpoint_lost(self) -> None:
        """The last checkpoint may not have been stored: make the next one full."""
        self._full_checkpoint = True
        self._dirty = []

    def restore(self, checkpoints: Sequence[Checkpoint], now: int) -> bool:
        """Carry on from an old owner's checkpoint entries (oldest first); False when there
        was nothing to restore.

        The ring gets the saved audio back (what is still inside its window
        now, from the last full entry on, each span overwriting older ones);
        each tap of the last entry resumes at its old frontier, or at the first
        frame still playable (``PLAYABLE_MARGIN`` before its play time) when the
        takeover took longer than its lead.
        """
        if not checkpoints or not self.song_audible(now):
            return False
        first = max((i for i, c in enumerate(checkpoints) if c.full), default=0)
        entries = checkpoints[first:]
        last = entries[-1]
        spans = []
        for entry in entries:
            for part in entry.parts:
                try:
                    audio = _unscaled(part.audio, part.scale)
                    counts = _counts(part.runs, part.counts, audio.shape[0])
                except ValueError as exc:
                    raise ValidationError(f"unreadable checkpoint span: {exc}") from None
                if counts.shape != audio.shape or not np.isfinite(audio).all():
                    raise ValidationError(
                        f"checkpoint span holds {audio.shape} / {counts.shape} samples"
                    )
                spans.append((part.start, audio, counts))
        ring = self.ring = Ring(self.config.ring_samples, now)
        low = max(ring.cleared - ring.length, last.start)
        for start, audio, counts in spans:
            n = audio.shape[0]
            skip = max(0, low - start)
            end = min(n, ring.cleared - start)
            if skip < end:
                ring.restore(start + skip, audio[skip:end], counts[skip:end])
        for delay, mix, position in last.taps:
            playable = -(-(now - delay + PLAYABLE_MARGIN) // _FRAME) * _FRAME
            self._frontiers[Tap(delay, mix)] = max(position, playable)
        self._written = dict(last.written)
        self._dirty = []
        self._full_checkpoint = True
        return True

    def occupancy(self, now: int) -> OccupancySnapshot:
        """The ring's occupancy, or an empty one (stamped ``now``) while there is no ring."""
        if self.ring is not None:
            return self.ring.occupancy_snapshot()
        length = self.config.ring_samples
        return OccupancySnapshot(
            clock=now,
            ring_samples=length,
            frame_samples=OCC_FRAME_SAMPLES,
            bitmap=_empty_bitmap(length // OCC_FRAME_SAMPLES),
            occupied=0,
        )

    def song_audible(self, now: int) -> bool:
        """Whether a tap may still read song audio: during a song and until its end has played.

        The end reaches the last tap (and its last repeat) ``largest delay +
        repeats`` after it was sung; two seconds more for late chunks.
        """
        song = self.state.song
        if song.start_pos is None:
            return False
        if song.running or song.end_pos is None:
            return True
        horizon = self.state.largest_delay() + song.longest_repeats() + _RING_KEEP
        return now < song.end_pos + horizon

    def _clear_to(self, now: int) -> Ring | None:
        ring = self.ring
        if ring is None:
            if not self.state.song.running:
                return None
            ring = self.ring = Ring(self.config.ring_samples, now)
            self._dirty = []
            self._full_checkpoint = True
        else:
            ring.clear_to(now)
        if self.state.soloing:
            if self.solo_ring is None:
                # Solo costs nothing until someone solos: the second ring starts then.
                self.solo_ring = Ring(ring.length, now)
            else:
                self.solo_ring.clear_to(now)
        elif self.solo_ring is not None:
            self.solo_ring = None
        return ring

    def _drop(self, status: ApplyStatus, member: Member | None) -> ApplyStatus:
        self.counters.dropped[status.value] += 1
        if member is not None and status in _REJECTIONS:
            member.rejected += 1
        return status


def _read_rounds(source: Ring, song: Song, start: int, out: npt.NDArray[np.float32]) -> None:
    """Fill ``out`` with the mix from ``start`` on, each part with its own song's rounds
    (:meth:`common.records.Song.rounds_from`)."""
    end = start + out.shape[0]
    parts = song.rounds_from(start, end)
    for k, (lo, rounds) in enumerate(parts):
        hi = parts[k + 1][0] if k + 1 < len(parts) else end
        part = out[lo - start : hi - start]
        if rounds.repeats:
            source.read_repeats(lo, part, rounds.offsets())
        else:
            source.read(lo, part)


def _merge_spans(spans: list[tuple[int, int]], low: int, high: int) -> list[tuple[int, int]]:
    """The union of ``spans`` inside ``[low, high)``, as sorted disjoint spans."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        lo, hi = max(a, low), min(b, high)
        if lo >= hi:
            continue
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _scaled(audio: npt.NDArray[np.float32]) -> tuple[float, bytes]:
    """A span's audio as little-endian int16 and the scale that gives it back (its peak
    over 32767): 96 dB below the span's peak, where float16 kept 11 bits of each sample,
    and a seventh of float16's conversion time (numpy converts float16 in software)."""
    peak = max(float(audio.max()), -float(audio.min())) if audio.shape[0] else 0.0
    scale = peak / 32767 if peak > 0 else 1.0
    scaled = audio * np.float32(1 / scale)
    np.rint(scaled, out=scaled)
    return scale, scaled.astype("<i2").tobytes()


def _unscaled(audio: bytes, scale: float) -> npt.NDArray[np.float32]:
    """What :func:`_scaled` wrote; ``scale`` 0: float16 samples (entries of older mixers)."""
    if scale == 0:
        return np.frombuffer(audio, dtype="<f2").astype(np.float32)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"checkpoint scale {scale!r}")
    return np.frombuffer(audio, dtype="<i2").astype(np.float32) * np.float32(scale)


def _runs(counts: npt.NDArray[np.uint16]) -> tuple[bytes, bytes]:
    """Voice counts as runs: where each run after the first starts (little-endian uint32
    offsets) and each run's count (little-endian uint16). Counts change only at chunk
    edges, so this is a few bytes a chunk, and a tenth of zlib's time. An empty span (a
    full entry when no tap needs anything kept) is one run of 0 over no samples."""
    if counts.shape[0] == 0:
        return b"", np.zeros(1, dtype="<u2").tobytes()
    starts = np.flatnonzero(counts[1:] != counts[:-1]) + 1
    values = counts[np.concatenate((np.zeros(1, dtype=starts.dtype), starts))]
    return starts.astype("<u4").tobytes(), values.astype("<u2").tobytes()


def _counts(runs: bytes, values: bytes, n: int) -> npt.NDArray[np.uint16]:
    """The ``n`` counts :func:`_runs` encoded; ValueError when they do not fit ``n``."""
    starts = np.frombuffer(runs, dtype="<u4").astype(np.int64)
    counts = np.frombuffer(values, dtype="<u2").astype(np.uint16)
    edges = np.concatenate(([0], starts, [n]))
    lengths = np.diff(edges)
    if counts.shape[0] != starts.shape[0] + 1 or (n and (lengths <= 0).any()) or n < 0:
        raise ValueError(f"{starts.shape[0]} runs and {counts.shape[0]} counts for {n} samples")
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.repeat(counts, lengths)
