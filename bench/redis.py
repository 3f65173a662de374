"""End-to-end mixer throughput through Redis (``python -m bench.redis``).

A private redis-server, one real ``brigade mixer`` process, and a producer in
this process that behaves like gateways: it pushes 100 ms pcm16 chunks
(``<i2``, as gateways send them) for N singers at real-time pace into the
rooms' input streams with pipelined ``XADD``s. Rooms of 100 singers, a song
running in each. For each step it measures, over a steady window:

- chunks/s the mixer applied (from its own heartbeat counters),
- the mixer process's CPU (utime + stime from /proc), as cores and as
  ms per singer-second, and the same for redis-server,
- rejected and late chunks and tick overruns (all must stay 0).

Writes ``bench-results/redis.json``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import redis

from bench.procstat import cpu_s
from bench.results import print_table, results_dir, write_results
from common import keys
from common.clock import now_samples
from common.commands import Envelope, Halt, Join, Lead, Start, encode_envelope
from common.records import Role
from common.wire import encode_chunk
from tests.simgateway import SimGateway
from tests.support import Process, RedisServer, wait_for

CHUNK = 4800
ROOM_SIZE = 100
STEPS = (250, 500, 1000)
WARMUP_S = 8.0
"""Long enough for the last singers' bucket (4 x 1.5 s + lead) to reach the song."""
MEASURE_S = 8.0


@dataclass
class SingerPlan:
    room: str
    singer: str
    delay: int
    next_pos: int


def mixer_counters(client: redis.Redis, mixer_id: str) -> dict[str, int]:
    raw = client.get(keys.mixer_heartbeat(mixer_id))
    assert raw is not None, "mixer heartbeat missing"
    status: dict[str, Any] = msgspec.msgpack.decode(bytes(raw))  # type: ignore[arg-type]
    return dict(status["counters"])


def setup_rooms(sim: SimGateway, n_singers: int, tag: str) -> list[SingerPlan]:
    """Rooms of ROOM_SIZE singers with a leader and a running song."""
    plans: list[SingerPlan] = []
    n_rooms = max(1, n_singers // ROOM_SIZE)
    for r in range(n_rooms):
        room = f"bench{tag}-{r}"
        sim.create_room(room, capacity=ROOM_SIZE + 10, bucket_spacing_s=1.5)
    for r in range(n_rooms):
        room = f"bench{tag}-{r}"
        wait_for(lambda room=room: sim.client.exists(keys.room_lease(room)), 10, "room owned")
        pipe = sim.client.pipeline(transaction=False)
        for i in range(ROOM_SIZE):
            pipe.xadd(
                keys.room_ctl(room),
                {
                    "d": encode_envelope(
                        Envelope(
                            singer=f"s{i}",
                            cmd=Join(name=f"Singer {i}", role=Role.SINGER),
                            gw="bench",
                        )
                    )
                },
            )
        pipe.execute()
        assert sim.command(room, "s0", Lead()).ok
        assert sim.command(room, "s0", Start()).ok
        state = sim.state(room)
        start = int(state["song"]["start_pos"])
        delays = {m["singer_id"]: int(m["delay"]) for m in state["members"]}
        plans += [SingerPlan(room, s, d, start) for s, d in delays.items()]
    return plans


def push(client: redis.Redis, plans: list[SingerPlan], payload: np.ndarray[Any, Any]) -> int:
    """Push every chunk that is due (as a gateway would, one pipeline); how many."""
    now = now_samples()
    pipe = client.pipeline(transaction=False)
    batch = 0
    for p in plans:
        while p.next_pos + CHUNK + p.delay <= now:
            pipe.xadd(
                keys.room_in(p.room),
                {"d": encode_chunk(p.room, p.singer, 1, 0, p.next_pos, payload)},
                maxlen=2000,
                approximate=True,
            )
            p.next_pos += CHUNK
            batch += 1
    if batch:
        pipe.execute()
    return batch


def run_step(
    client: redis.Redis, sim: SimGateway, mixer: Process, redis_pid: int, n_singers: int
) -> dict[str, float]:
    plans = setup_rooms(sim, n_singers, str(n_singers))
    payload = (np.sin(np.arange(CHUNK) / 10) * 8000).astype(np.int16)
    t_end = time.monotonic() + WARMUP_S + MEASURE_S
    measuring = False
    c0: dict[str, int] = {}
    cpu0 = rcpu0 = t0 = 0.0
    pushed = 0
    while time.monotonic() < t_end:
        pushed += push(client, plans, payload)
        if not measuring and time.monotonic() > t_end - MEASURE_S:
            measuring = True
            c0 = mixer_counters(client, mixer.name)
            cpu0, rcpu0, t0 = cpu_s(mixer.proc.pid), cpu_s(redis_pid), time.monotonic()
        time.sleep(0.01)
    time.sleep(0.6)  # let the last heartbeat carry the counters
    elapsed = time.monotonic() - t0
    c1 = mixer_counters(client, mixer.name)
    cpu = cpu_s(mixer.proc.pid) - cpu0
    rcpu = cpu_s(redis_pid) - rcpu0
    chunks = c1["chunks_in"] - c0["chunks_in"]
    # Free the rooms for the next step: everyone leaves, the songs stop.
    for room in {p.room for p in plans}:
        sim.command(room, "s0", Halt())
    return {
        "singers": n_singers,
        "chunks_per_s": chunks / elapsed,
        "offered_chunks_per_s": n_singers * 10,
        "mixer_cpu_cores": cpu / elapsed,
        "mixer_cpu_ms_per_singer_second": 1000 * cpu / elapsed / n_singers,
        "redis_cpu_cores": rcpu / elapsed,
        "rejected": c1["chunks_rejected"] - c0["chunks_rejected"],
        "late": c1["late"] - c0["late"],
        "bad_wire": c1["bad_wire"] - c0["bad_wire"],
        "tick_overruns": c1["tick_overruns"] - c0["tick_overruns"],
    }


def main() -> dict[str, object]:
    server = RedisServer()
    server.start()
    log_dir = results_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    mixer = Process(
        ["mixer"],
        {"REDIS_URL": server.url, "BB_MIXER_ID": "mixer-bench", "BB_LOG_LEVEL": "WARNING"},
        log_dir,
        "mixer-bench",
    )
    client = redis.Redis(port=server.port)
    sim = SimGateway(client)
    steps: list[dict[str, float]] = []
    try:
        wait_for(lambda: client.exists(keys.mixer_heartbeat("mixer-bench")), 10, "mixer up")
        assert server.proc is not None
        for n in STEPS:
            steps.append(run_step(client, sim, mixer, server.proc.pid, n))
    finally:
        mixer.stop()
        server.stop()
        client.close()
    top = steps[-1]
    results: dict[str, object] = {
        "steps": steps,
        "chunks_per_s": top["chunks_per_s"],
        "mixer_cpu_cores_per_1000_singers": top["mixer_cpu_cores"] * 1000 / top["singers"],
        "mixer_cpu_ms_per_singer_second": top["mixer_cpu_ms_per_singer_second"],
        "target_cores_per_1000_singers": 0.5,
        "chunk_samples": CHUNK,
        "room_size": ROOM_SIZE,
        "measure_s": MEASURE_S,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    rows = [
        (
            f"{int(s['singers'])} singers",
            f"{s['chunks_per_s']:.0f}/s, mixer {s['mixer_cpu_cores']:.3f} cores "
            f"({s['mixer_cpu_ms_per_singer_second']:.3f} ms/singer-s), "
            f"redis {s['redis_cpu_cores']:.2f} cores",
            f"rejected {int(s['rejected'])} late {int(s['late'])} "
            f"overruns {int(s['tick_overruns'])}",
        )
        for s in steps
    ]
    rows.append(
        (
            "mixer cores per 1000 singers",
            f"{results['mixer_cpu_cores_per_1000_singers']:.3f}",
            "target < 0.5",
        )
    )
    print_table("Mixer through Redis (100 ms pcm16 chunks)", rows)
    write_results("redis", results)
    return results


if __name__ == "__main__":
    main()
