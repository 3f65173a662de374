"""Ring micro-benchmarks: ``python -m bench.mixer``.

Prints a table and writes ``bench-results/mixer.json``. Every figure is the
median over batches of the mean per-call time within a batch, so timer
resolution and call overhead of the harness stay out of the numbers.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import time
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

from bench.results import print_table, write_results
from common.constants import DEFAULT_RING_S, OCC_FRAME_SAMPLES, OPUS_FRAME_SAMPLES, SAMPLE_RATE
from mixer.ring import Ring
from mixer.room import Role, RoomConfig, RoomMixer, RoomState

CHUNK_SAMPLES: Final = SAMPLE_RATE // 10  # one 100 ms chunk from a singer
BATCH: Final = 100
BATCHES: Final = 200
NAIVE_BATCH: Final = 5
NAIVE_BATCHES: Final = 20
OCCUPANCY_RING_S: Final = (10, 120, 600)
SPREAD_S: Final = 3  # writes and taps land this far behind "now", like bucket delays
WRAP_BEHIND_S: Final = 1  # the ring wraps this far behind "now", inside the spread
EPOCH_SAMPLES: Final = 1_700_000_000 * SAMPLE_RATE

TARGET_APPLY_US: Final = 15.0
TARGET_TAP_US: Final = 10.0
TARGET_OCC_GROWTH: Final = 1.5


def _median_us(batch: Callable[[], None], calls_per_batch: int, batches: int) -> float:
    """Median over ``batches`` runs of ``batch`` of its mean per-call time, in us."""
    batch()  # warm caches and first-touch the pages the batch uses
    per_call_ns: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(batches):
            t0 = time.perf_counter_ns()
            batch()
            per_call_ns.append((time.perf_counter_ns() - t0) / calls_per_batch)
    finally:
        if gc_was_enabled:
            gc.enable()
    per_call_ns.sort()
    return per_call_ns[len(per_call_ns) // 2] / 1_000


def _ring(ring_s: int) -> Ring:
    length = ring_s * SAMPLE_RATE
    # Place "now" so that the ring's index 0 falls inside the spread of
    # positions used below: a few percent of the writes and taps wrap.
    now = (EPOCH_SAMPLES // length + 1) * length + WRAP_BEHIND_S * SAMPLE_RATE
    return Ring(length, now)


def _write_starts(ring: Ring, rng: random.Random) -> list[int]:
    spread = SPREAD_S * SAMPLE_RATE
    return [ring.cleared - CHUNK_SAMPLES - rng.randrange(spread) for _ in range(BATCH)]


def bench_apply_chunk(rng: random.Random) -> float:
    """write() of one 100 ms chunk, occupancy marking included, on the default ring."""
    ring = _ring(DEFAULT_RING_S)
    chunk = np.array([rng.uniform(-0.5, 0.5) for _ in range(CHUNK_SAMPLES)], dtype=np.float32)
    starts = _write_starts(ring, rng)
    write = ring.write

    def batch() -> None:
        for start in starts:
            write(start, chunk)

    return _median_us(batch, BATCH, BATCHES)


def bench_tap_frame(rng: random.Random) -> float:
    """read() of one normalised 960-sample frame into a preallocated buffer."""
    ring = _ring(DEFAULT_RING_S)
    chunk = np.array([rng.uniform(-0.5, 0.5) for _ in range(CHUNK_SAMPLES)], dtype=np.float32)
    for start in _write_starts(ring, rng):
        ring.write(start, chunk)  # so the gains are not all the count-0 entry
    last_frame = ring.cleared // OPUS_FRAME_SAMPLES - 1
    spread_frames = SPREAD_S * SAMPLE_RATE // OPUS_FRAME_SAMPLES
    starts = [
        (last_frame - rng.randrange(spread_frames)) * OPUS_FRAME_SAMPLES for _ in range(BATCH)
    ]
    out = np.empty(OPUS_FRAME_SAMPLES, dtype=np.float32)
    read = ring.read

    def batch() -> None:
        for start in starts:
            read(start, out)

    return _median_us(batch, BATCH, BATCHES)


def bench_occupancy(ring_s: int) -> float:
    """The occupancy step of one steady-state apply on a ring of ``ring_s`` seconds.

    Times the ring's own internal steps directly: ``_mark`` for one 100 ms
    write plus ``_unmark`` for the 100 ms of clear-ahead that goes with it,
    both on unaligned spans. Every count is set and every flag starts set,
    so the clear also pays for recomputing both partial edge frames (the
    worst case; in service an edge is recomputed only while it is set).
    """
    ring = _ring(ring_s)
    length = ring.length
    # Reaching into the ring's state: a full ring without writing it all.
    ring._counts.fill(1)
    ring._flags.fill(True)
    stride = length - 2 * CHUNK_SAMPLES
    spans = [(37 + k * CHUNK_SAMPLES) % stride for k in range(BATCH)]
    write_at = [(s + length // 2) % stride for s in spans]
    mark = ring._mark
    unmark = ring._unmark

    def batch() -> None:
        for s, w in zip(spans, write_at, strict=True):
            unmark(s, s + CHUNK_SAMPLES)
            mark(w, w + CHUNK_SAMPLES)

    return _median_us(batch, BATCH, BATCHES)


def _naive_occupancy(counts: npt.NDArray[np.uint16]) -> bytes:
    # The original's metadata, vectorised: a scan of the whole ring per request.
    return np.packbits((counts.reshape(-1, OCC_FRAME_SAMPLES) > 0).any(axis=1)).tobytes()


def bench_naive_occupancy(rng: random.Random) -> float:
    """The whole-ring scan per request, on the default ring, half of it holding audio."""
    counts = np.zeros(DEFAULT_RING_S * SAMPLE_RATE, dtype=np.uint16)
    half = counts.size // 2
    offset = rng.randrange(half)
    counts[offset : offset + half] = 1

    def batch() -> None:
        for _ in range(NAIVE_BATCH):
            _naive_occupancy(counts)

    return _median_us(batch, NAIVE_BATCH, NAIVE_BATCHES)


def bench_snapshot(rng: random.Random) -> float:
    """occupancy_snapshot() on the default ring (published a few times a second)."""
    ring = _ring(DEFAULT_RING_S)
    chunk = np.zeros(CHUNK_SAMPLES, dtype=np.float32)
    for start in _write_starts(ring, rng):
        ring.write(start, chunk)

    def batch() -> None:
        for _ in range(BATCH):
            ring.occupancy_snapshot()

    return _median_us(batch, BATCH, BATCHES // 4)


ROOM_SINGERS: Final = 12
TICK_SAMPLES: Final = SAMPLE_RATE // 10  # the mixer's 100 ms tick


def _room(solo: bool = False, repeats: int = 0) -> tuple[RoomState, RoomMixer, int]:
    """A default room with 12 singers over the buckets and a song running since 100 s ago.

    ``solo`` solos one singer (not the one the benchmarks write for) and makes
    every listener choose the solo mix; ``repeats`` sets rounds of 2 s.
    """
    now = EPOCH_SAMPLES
    state = RoomState(RoomConfig())
    for i in range(ROOM_SINGERS):
        state.join(f"s{i}", f"Singer {i}", Role.SINGER, now - 110 * SAMPLE_RATE + i)
    state.request_lead("s0", now - 110 * SAMPLE_RATE)
    if repeats:
        from mixer.roomstate import Rounds  # noqa: PLC0415  (not in older cores, which bench.mixer also measures)

        state.set_rounds("s0", Rounds(bpm=120, beats=4, repeats=repeats))
    state.start_song("s0", now - 100 * SAMPLE_RATE)
    if solo:
        state.solo("s0", "s2", True)
        for i in range(ROOM_SINGERS):
            state.set_mix(f"s{i}", "solo")
    return state, RoomMixer("bench", state, now), now


def bench_room_apply(solo: bool = False) -> float:
    """RoomMixer.apply() of one 100 ms chunk from a singer (not the leader, not soloed)."""
    state, mixer, now = _room(solo)
    singer = "s1"
    delay = state.members[singer].delay
    chunk = np.full(CHUNK_SAMPLES, 0.1, dtype=np.float32)
    first = now - delay - (BATCH + 1) * CHUNK_SAMPLES
    starts = [first + i * CHUNK_SAMPLES for i in range(BATCH)]
    apply = mixer.apply
    written = mixer._written

    def batch() -> None:
        written.clear()  # each position once per singer: start the run again
        for start in starts:
            apply(singer, start, chunk, now)

    return _median_us(batch, BATCH, BATCHES)


def bench_room_tick(solo: bool = False, repeats: int = 0) -> float:
    """RoomMixer.tick() every 100 ms, per tap frame emitted (all taps of the room)."""
    _state, mixer, now = _room(solo, repeats)
    mixer.tick(now)
    frames = sum(len(out.samples) for out in mixer.tick(now + TICK_SAMPLES)) // OPUS_FRAME_SAMPLES
    clock = [now + TICK_SAMPLES]
    tick = mixer.tick

    def batch() -> None:
        for _ in range(10):
            clock[0] += TICK_SAMPLES
            tick(clock[0])

    return _median_us(batch, 10 * frames, BATCHES // 4)


def main() -> dict[str, object]:
    """Run the ring benchmarks, print a table and write ``bench-results/mixer.json``."""
    rng = random.Random(20240601)
    apply_us = bench_apply_chunk(rng)
    tap_us = bench_tap_frame(rng)
    occupancy = {str(s): bench_occupancy(s) for s in OCCUPANCY_RING_S}
    naive_us = bench_naive_occupancy(rng)
    snapshot_us = bench_snapshot(rng)
    incremental_us = occupancy[str(DEFAULT_RING_S)]
    room_apply_us = bench_room_apply()
    room_tick_us = bench_room_tick()
    has_solo = hasattr(RoomState, "solo")
    room_apply_solo_us = bench_room_apply(solo=True) if has_solo else None
    room_tick_solo_us = bench_room_tick(solo=True) if has_solo else None
    room_tick_rounds_us = bench_room_tick(repeats=2) if has_solo else None
    growth = occupancy[str(OCCUPANCY_RING_S[-1])] / occupancy[str(OCCUPANCY_RING_S[0])]

    results: dict[str, object] = {
        "apply_chunk_us": round(apply_us, 3),
        "tap_frame_us": round(tap_us, 3),
        "occupancy_us_by_ring_s": {k: round(v, 3) for k, v in occupancy.items()},
        "occupancy_600_vs_10": round(growth, 3),
        "naive_occupancy_us": round(naive_us, 3),
        "naive_vs_incremental_ratio": round(naive_us / incremental_us, 1),
        "snapshot_us": round(snapshot_us, 3),
        "room_apply_us": round(room_apply_us, 3),
        "room_tick_frame_us": round(room_tick_us, 3),
        "room_apply_solo_us": _rounded(room_apply_solo_us),
        "room_tick_frame_solo_us": _rounded(room_tick_solo_us),
        "room_tick_frame_rounds2_us": _rounded(room_tick_rounds_us),
        "samples": BATCH * BATCHES,
        "naive_samples": NAIVE_BATCH * NAIVE_BATCHES,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    rows = [
        ("apply_chunk_us (write 4 800 samples)", f"{apply_us:.2f} us", f"<= {TARGET_APPLY_US} us"),
        ("tap_frame_us (read 960, normalised)", f"{tap_us:.2f} us", f"<= {TARGET_TAP_US} us"),
        *(
            (f"occupancy per apply, {s} s ring", f"{occupancy[str(s)]:.2f} us", "")
            for s in OCCUPANCY_RING_S
        ),
        ("occupancy 600 s / 10 s", f"{growth:.2f}x", f"<= {TARGET_OCC_GROWTH}x"),
        ("naive_occupancy_us (scan 120 s ring)", f"{naive_us:.1f} us", ""),
        ("naive / incremental (120 s)", f"{naive_us / incremental_us:.0f}x", ""),
        ("snapshot_us (packbits, 120 s ring)", f"{snapshot_us:.2f} us", ""),
        ("room_apply_us (RoomMixer.apply, 4 800 samples)", f"{room_apply_us:.2f} us", ""),
        ("room_tick_frame_us (per tap frame)", f"{room_tick_us:.2f} us", ""),
        ("  the same with a singer soloed", _us(room_apply_solo_us), ""),
        ("  tick per frame, solo mix for all", _us(room_tick_solo_us), ""),
        ("  tick per frame, rounds of 2 repeats", _us(room_tick_rounds_us), ""),
    ]
    print_table(
        f"mixer ring: median of {BATCHES} batches x {BATCH} calls "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__})",
        rows,
    )
    path = write_results("mixer", results)
    print(f"wrote {path}")
    return results


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} us"


if __name__ == "__main__":
    main()
