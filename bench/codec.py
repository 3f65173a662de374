"""Opus cost per 20 ms frame: our ctypes/numpy path against opuslib_next's list path.

Run with ``python -m bench.codec``; prints a table and writes
``bench-results/codec.json``.  Numbers are medians over rounds of one second
of audio (50 frames) each, in microseconds per frame.
"""

import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import opuslib_next
import opuslib_next.api.info

from bench.results import results_dir
from common.codec import OpusDecoder, OpusEncoder
from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE

FRAMES_PER_ROUND = 50  # one second of audio
ROUNDS = 100
BITRATE = 64_000


def _signal() -> npt.NDArray[np.float32]:
    """One second of something sung-like: harmonics of 220 Hz with vibrato, plus breath noise."""
    t = np.arange(FRAMES_PER_ROUND * OPUS_FRAME_SAMPLES) / SAMPLE_RATE
    phase = 2 * np.pi * 220 * t + 0.3 * np.sin(2 * np.pi * 5 * t)
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = np.random.default_rng(0).normal(0, 0.02, t.shape)
    return (0.25 * tone + noise).astype(np.float32)


def _median_us_per_frame(step: Callable[[int], object]) -> float:
    """Median over rounds of the mean cost of ``step(k)`` for k in one round's frames."""
    for k in range(FRAMES_PER_ROUND):  # warm-up: caches, lazy ctypes set-up
        step(k)
    per_frame_ns = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for k in range(FRAMES_PER_ROUND):
            step(k)
        per_frame_ns.append((time.perf_counter_ns() - start) / FRAMES_PER_ROUND)
    return statistics.median(per_frame_ns) / 1000


def main() -> dict[str, object]:
    """Measure, print a table, write bench-results/codec.json and return the results."""
    signal = _signal()
    frames = [
        signal[i : i + OPUS_FRAME_SAMPLES] for i in range(0, signal.shape[0], OPUS_FRAME_SAMPLES)
    ]
    encoder = OpusEncoder(bitrate=BITRATE)
    packets = encoder.encode_frames(signal)

    encode_us = _median_us_per_frame(lambda k: encoder.encode(frames[k]))

    decoder = OpusDecoder()
    out = np.empty(OPUS_FRAME_SAMPLES, np.float32)
    decode_numpy_us = _median_us_per_frame(lambda k: decoder.decode_into(packets[k], out))

    theirs = opuslib_next.Decoder(SAMPLE_RATE, 1)
    decode_list_us = _median_us_per_frame(
        lambda k: theirs.decode_float(packets[k], OPUS_FRAME_SAMPLES)
    )

    results: dict[str, object] = {
        "encode_us": round(encode_us, 1),
        "decode_numpy_us": round(decode_numpy_us, 1),
        "decode_opuslib_list_us": round(decode_list_us, 1),
        "decode_ms_per_singer_second": round(decode_numpy_us * 50 / 1000, 3),
        "bitrate": BITRATE,
        "mean_packet_bytes": round(sum(map(len, packets)) / len(packets), 1),
        "frames_per_round": FRAMES_PER_ROUND,
        "rounds": ROUNDS,
        "libopus": bytes(opuslib_next.api.info.get_version_string()).decode(),
        "python": platform.python_version(),
    }

    rows = [
        ("encode (OpusEncoder.encode)", f"{encode_us:8.1f} µs/frame"),
        ("decode (OpusDecoder.decode_into)", f"{decode_numpy_us:8.1f} µs/frame"),
        ("decode (opuslib_next Decoder.decode_float)", f"{decode_list_us:8.1f} µs/frame"),
        ("decode per singer", f"{decode_numpy_us * 50 / 1000:8.3f} ms/s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"Opus 48 kHz mono, 20 ms frames, {BITRATE // 1000} kb/s ({results['libopus']})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")

    results_path = results_dir()
    results_path.mkdir(parents=True, exist_ok=True)
    path = results_path / "codec.json"
    with path.open("w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
