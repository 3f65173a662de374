"""The raw Opus decode floor, measured in the same seconds as a gateway under load.

``python -m bench.decode_floor SINGERS PER_MESSAGE`` is started by
bench/gateway.py beside each gateway run.  It decodes the traffic the gateway
receives: ``SINGERS`` streams of the bench's packets, one libopus decoder
per stream, ``PER_MESSAGE`` packets per message at real-time pace with the
singers spread over a message period, gathered in 20 ms batches as the
gateway's uplink does, straight to int16 into a preallocated buffer and
nothing else.  Only the decode calls are timed (this thread's CPU time).

Measuring the floor this way, instead of one short decode loop before or
after the run, puts it under the same machine load as the gateway's CPU
window: on a shared VM a 50 ms decode loop varied by a third from one run
to the next (issue 23 item 5 measured 1.24-2.16 for the same gateway).

Protocol on stdin/stdout, one line each: the child prints ``ready`` once
its decoders are warm; for every line the parent writes it answers
``<frames decoded> <decode CPU seconds>`` (totals so far); it exits at EOF.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import numpy as np
import numpy.typing as npt

from common.codec import OpusDecoder, OpusEncoder
from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE

BATCH_S = 0.02
"""How often due messages are decoded (the gateway's uplink batch)."""


def sung_signal(seconds: int) -> npt.NDArray[np.float32]:
    """Something sung-like: harmonics of 220 Hz with vibrato, plus breath noise."""
    t = np.arange(seconds * SAMPLE_RATE) / SAMPLE_RATE
    phase = 2 * np.pi * 220 * t + 0.3 * np.sin(2 * np.pi * 5 * t)
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = np.random.default_rng(0).normal(0, 0.02, t.shape)
    return (0.25 * tone + noise).astype(np.float32)


def bench_packets() -> list[bytes]:
    """Two seconds of real Opus packets at 64 kb/s, reused by every simulated singer."""
    return OpusEncoder().encode_frames(sung_signal(2))


def schedule(singers: int, period_s: float, start: float) -> list[float]:
    """When each singer's first message is due: spread over one period, as the bench sends."""
    return [start + (i % 100) * period_s / 100 for i in range(singers)]


def due_messages(dues: list[float], now: float, period_s: float) -> list[int]:
    """Indexes of the singers with a message due at ``now`` (once per due message);
    advances ``dues`` past them."""
    out: list[int] = []
    for index, first in enumerate(dues):
        due = first
        while due <= now:
            out.append(index)
            due += period_s
        dues[index] = due
    return out


def serve(singers: int, per_message: int) -> None:
    packets = bench_packets()  # the same packets the simulated singers send
    cycle = len(packets) - per_message
    period_s = per_message * OPUS_FRAME_SAMPLES / SAMPLE_RATE
    decoders = [OpusDecoder() for _ in range(singers)]
    seqs = [0] * singers
    for decoder in decoders:  # warm-up: every state touched once
        decoder.decode_frames_int16(packets[:per_message], reuse=True)
    dues = schedule(singers, period_s, time.monotonic())
    frames = 0
    cpu_s = 0.0
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    next_batch = time.monotonic()
    while True:
        wait = max(0.0, next_batch - time.monotonic())
        readable, _, _ = select.select([stdin], [], [], wait)
        if readable:
            line = os.read(stdin, 4096)
            if not line:
                return
            for _ in range(line.count(b"\n")):
                print(f"{frames} {cpu_s:.6f}", flush=True)
            continue
        next_batch += BATCH_S
        due = due_messages(dues, time.monotonic(), period_s)
        start = time.thread_time()
        for index in due:
            k = (seqs[index] * per_message) % cycle
            decoders[index].decode_frames_int16(packets[k : k + per_message], reuse=True)
            seqs[index] += 1
        cpu_s += time.thread_time() - start
        frames += len(due) * per_message


class DecodeFloor:
    """The parent's side: start the child, read its totals, stop it."""

    def __init__(self, singers: int, per_message: int) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.decode_floor", str(singers), str(per_message)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the decode floor process did not start")

    def reading(self) -> tuple[int, float]:
        """(frames decoded, decode CPU seconds) so far."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("\n")
        self._proc.stdin.flush()
        frames, cpu = self._proc.stdout.readline().split()
        return int(frames), float(cpu)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)


def ms_per_singer_second(before: tuple[int, float], after: tuple[int, float]) -> float | None:
    """Decode CPU (ms) per second of one singer's audio between two readings."""
    frames = after[0] - before[0]
    if frames <= 0:
        return None
    return (after[1] - before[1]) * 1000 / (frames * OPUS_FRAME_SAMPLES / SAMPLE_RATE)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
