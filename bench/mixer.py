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


def main() -> dict[str, object]:
    """Run the ring benchmarks, print a table and write ``bench-results/mixer.json``."""
    rng = random.Random(20240601)
    apply_us = bench_apply_chunk(rng)
    tap_us = bench_tap_frame(rng)
    occupancy = {str(s): bench_occupancy(s) for s in OCCUPANCY_RING_S}
    naive_us = bench_naive_occupancy(rng)
    snapshot_us = bench_snapshot(rng)
    incremental_us = occupancy[str(DEFAULT_RING_S)]
    growth = occupancy[str(OCCUPANCY_RING_S[-1])] / occupancy[str(OCCUPANCY_RING_S[0])]

    results: dict[str, object] = {
        "apply_chunk_us": round(apply_us, 3),
        "tap_frame_us": round(tap_us, 3),
        "occupancy_us_by_ring_s": {k: round(v, 3) for k, v in occupancy.items()},
        "occupancy_600_vs_10": round(growth, 3),
        "naive_occupancy_us": round(naive_us, 3),
        "naive_vs_incremental_ratio": round(naive_us / incremental_us, 1),
        "snapshot_us": round(snapshot_us, 3),
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
    ]
    print_table(
        f"mixer ring: median of {BATCHES} batches x {BATCH} calls "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__})",
        rows,
    )
    path = write_results("mixer", results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
