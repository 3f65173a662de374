"""What each bucket hears across a mixer's death: ``python -m bench.failover_audio``.

A room with the default buckets (3 s apart, the last at 18 s) and two real
mixers; the leader sings a tone in bucket 0 and a listener sits in each later
bucket. After 20 s of song the owner is SIGKILLed while the leader keeps
singing. For every bucket's tap the script records, from the windows the
mixers publish:

* ``resume_s``: from the kill to the first window of the new owner;
* ``gap_s``: positions no window ever carried (what the bucket misses);
* ``lost_s``: positions the leader sang, from 20 s before the kill to 5 s
  after, that the bucket gets silent or wrong (missing, or the ring was
  lost).

Each configuration runs ``ROUNDS`` times and the median is reported: the
checkpoint on (the default) and off (``BB_CHECKPOINT_MS=0``, a new owner
starting with an empty ring: the behaviour before checkpoints) in the same
sitting. Writes ``bench-results/failover_audio.json``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

from bench.results import print_table, write_results
from common import keys
from common.clock import now_samples
from common.commands import JoinBucket, Lead, SetLeaderBoost, Start
from common.constants import SAMPLE_RATE
from common.streams import parse_xread
from common.wire import TapWindow, decode_tap
from tests.simgateway import SimGateway, Singer, tone
from tests.support import Process, RedisServer, wait_for

ROUNDS = 3
SONG_BEFORE_KILL_S = 20.0
AFTER_S = 5.0
"""Positions sung up to this long after the kill are checked too."""
BUCKETS = (1, 2, 3, 4, 5)


@dataclass
class Taps:
    """Every window of every watched tap, read as the mixers publish them."""

    client: redis.Redis
    room: str
    delays: list[int]
    cursors: dict[str, bytes] = field(default_factory=dict)
    windows: dict[int, list[tuple[int, TapWindow]]] = field(default_factory=dict)

    def poll(self) -> None:
        streams = {
            keys.room_tap(self.room, d): self.cursors.get(str(d), b"0-0") for d in self.delays
        }
        reply = self.client.xread(streams, count=500)  # type: ignore[arg-type]
        for key, entries in parse_xread(reply):
            delay = int(key.rsplit(":", 1)[1])
            for entry_id, value in entries:
                self.cursors[str(delay)] = entry_id
                ms = int(entry_id.split(b"-")[0])
                self.windows.setdefault(delay, []).append((ms, decode_tap(value or b"")))


def one_round(
    server: RedisServer, log_dir: Path, index: int, checkpoint_ms: int
) -> dict[str, list[float]]:
    client = server.client()
    client.flushall()
    sim = SimGateway(client)
    env = {
        "REDIS_URL": server.url,
        "BB_LOG_LEVEL": "WARNING",
        "BB_CHECKPOINT_MS": str(checkpoint_ms),
    }
    ids = (f"fa-a{index}", f"fa-b{index}")
    mixers = {i: Process(["mixer"], {**env, "BB_MIXER_ID": i}, log_dir, i) for i in ids}
    try:
        wait_for(lambda: client.zcard(keys.MIXERS) == 2, 20, "both mixers")
        room = f"fa{index}"
        sim.create_room(room)
        wait_for(lambda: sim.owner(room) in mixers, 20, "an owner")
        assert sim.join(room, "lead", "Leader").ok
        for b in BUCKETS:
            assert sim.join(room, f"l{b}", f"Listener {b}").ok
        assert sim.command(room, "lead", Lead()).ok
        assert sim.command(room, "lead", SetLeaderBoost(boost_db=0.0)).ok
        for b in BUCKETS:
            assert sim.command(room, f"l{b}", JoinBucket(bucket=b)).ok
        assert sim.command(room, "lead", Start()).ok
        state = sim.state(room)
        start = int(state["song"]["start_pos"])
        d_lead = sim.member_delay(room, "lead")
        delays = [sim.member_delay(room, f"l{b}") for b in BUCKETS]
        taps = Taps(client, room, delays)
        leader = Singer(sim, room, "lead", 440, d_lead, start)

        def run(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                leader.pump()
                taps.poll()
                time.sleep(0.02)

        run(SONG_BEFORE_KILL_S)
        owner = sim.owner(room)
        killed_ms, killed_pos = int(time.time() * 1000), now_samples()
        mixers[str(owner)].kill()
        run((max(delays) + AFTER_S * SAMPLE_RATE) / SAMPLE_RATE + 2.0)
        results: dict[str, list[float]] = {"resume_s": [], "gap_s": [], "lost_s": []}
        lo = max(start, killed_pos - d_lead - int(SONG_BEFORE_KILL_S * SAMPLE_RATE))
        hi = killed_pos - d_lead + int(AFTER_S * SAMPLE_RATE)
        expected = tone(440, lo, hi - lo)
        for delay in delays:
            windows = taps.windows.get(delay, [])
            new = [w for ms, w in windows if ms > killed_ms]
            old = [w for ms, w in windows if ms <= killed_ms]
            first_new_ms = min((ms for ms, _w in windows if ms > killed_ms), default=None)
            results["resume_s"].append(
                (first_new_ms - killed_ms) / 1000 if first_new_ms is not None else float("nan")
            )
            old_end = max((w.start + len(w.samples) for w in old), default=lo)
            new_start = min((w.start for w in new), default=hi)
            results["gap_s"].append(max(0, new_start - old_end) / SAMPLE_RATE)
            heard = np.full(hi - lo, np.nan, dtype=np.float32)
            for w in old + new:
                a, b = max(lo, w.start), min(hi, w.start + len(w.samples))
                if a < b:
                    heard[a - lo : b - lo] = w.samples[a - w.start : b - w.start]
            wrong = ~(np.abs(heard - expected) <= 0.01)  # NaN (never heard) counts as wrong
            results["lost_s"].append(float(wrong.sum()) / SAMPLE_RATE)
        return results
    finally:
        for proc in mixers.values():
            proc.stop()
        client.close()


def main() -> dict[str, object]:
    """Run the rounds, print a table, write ``bench-results/failover_audio.json``."""
    server = RedisServer()
    server.start()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-failover-audio-"))
    runs: dict[str, list[dict[str, list[float]]]] = {"checkpoint": [], "no_checkpoint": []}
    try:
        for index in range(ROUNDS):
            runs["checkpoint"].append(one_round(server, log_dir, 2 * index, 1000))
            runs["no_checkpoint"].append(one_round(server, log_dir, 2 * index + 1, 0))
    finally:
        server.stop()
    summary: dict[str, dict[str, list[float]]] = {}
    rows = []
    for name, rounds in runs.items():
        summary[name] = {}
        for metric in ("resume_s", "gap_s", "lost_s"):
            per_bucket = [
                round(statistics.median(r[metric][i] for r in rounds), 3)
                for i in range(len(BUCKETS))
            ]
            summary[name][metric] = per_bucket
            rows.append(
                (f"{name}: {metric} per bucket 1..5", " ".join(f"{v:.2f}" for v in per_bucket), "")
            )
    print_table(f"failover, median of {ROUNDS} rounds (leader in bucket 0, 3 s buckets)", rows)
    results: dict[str, object] = {"rounds": ROUNDS, "median": summary, "runs": runs}
    path = write_results("failover_audio", results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
