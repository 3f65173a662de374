"""Disk bytes of persistence per singer-second, before and after the keeper
(``python -m bench.persistence``).

One run, the same load in each configuration: a real ``brigade mixer`` and
a producer that behaves like the gateways (bench/redis.py's: 100 ms pcm16
chunks for every singer of a room of 100 with a song running), so the Redis
sees the audio in, the taps, the failover checkpoints, the events and the
mixer's room records (members rewritten every publish while counters move).

- **aof-all** (before): the audio Redis with an append-only file, fsync every
  second, Redis's default automatic rewrites (compose's configuration
  before the keeper);
- **keeper** (after): the audio Redis keeps no file; ``brigade keeper``
  copies the durable keys to a second Redis with the append-only file;
- **keeper, copy_ms 5000**: the same with each changed key copied at most
  every 5 s.

Disk bytes are the ``write_bytes`` of ``/proc/PID/io`` of the redis-server
that keeps the file: what it (and its rewrite children, reaped) gave the
block layer. CPU is utime + stime of each process. Then the restore: the
kept room's keys copied to R rooms in the state Redis and restored into an
empty Redis and into an empty local Redis Cluster (3 masters, 3 replicas),
timed. Writes ``bench-results/persistence.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.asyncio import Redis as AsyncRedis

from bench.procstat import cpu_s
from bench.redis import CHUNK, push, setup_rooms
from bench.results import print_grid, write_results
from brigade.rediscluster import LocalRedisCluster
from brigade.redisserver import LocalRedis
from common import keys, redisclient
from common.commands import Halt
from keeper import copier, durable
from tests.simgateway import SimGateway
from tests.support import Process, wait_for

SINGERS = 100


def write_bytes(pid: int) -> int:
    """Bytes ``pid`` (its threads and reaped children) sent to the block layer."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for {pid}")


@dataclass
class Config:
    name: str
    keeper: bool
    copy_ms: int = 1000


def run(config: Config, base: Path, warmup_s: float, measure_s: float) -> dict[str, Any]:
    work = base / config.name
    main = LocalRedis(persist_dir=None if config.keeper else str(work / "main"))
    main.start()
    state = LocalRedis(persist_dir=str(work / "state")) if config.keeper else None
    procs: list[Process] = []
    client = main.client()
    try:
        env = {"REDIS_URL": main.url, "BB_LOG_LEVEL": "WARNING"}
        if state is not None:
            state.start()
            procs.append(
                Process(
                    ["keeper"],
                    {**env, "BB_STATE_REDIS_URL": state.url, "BB_COPY_MS": str(config.copy_ms)},
                    work,
                    "keeper",
                )
            )
            wait_for(lambda: client.exists(durable.MARKER), 20, "the keeper")
        procs.append(Process(["mixer"], {**env, "BB_MIXER_ID": "mixer-bench"}, work, "mixer"))
        wait_for(lambda: client.exists(keys.mixer_heartbeat("mixer-bench")), 20, "mixer up")
        sim = SimGateway(client)
        plans = setup_rooms(sim, SINGERS, config.name.replace(" ", "").replace(",", ""))
        payload = (np.sin(np.arange(CHUNK) / 10) * 8000).astype(np.int16)
        kept = state if state is not None else main
        assert kept.proc is not None and main.proc is not None
        pids = {"redis": main.proc.pid, "mixer": procs[-1].proc.pid}
        if state is not None and state.proc is not None:
            pids |= {"state-redis": state.proc.pid, "keeper": procs[0].proc.pid}
        t_measure = time.monotonic() + warmup_s
        t_end = t_measure + measure_s
        measuring = False
        disk0 = 0
        cpu0: dict[str, float] = {}
        t0 = 0.0
        while time.monotonic() < t_end:
            push(client, plans, payload)
            if not measuring and time.monotonic() >= t_measure:
                measuring = True
                disk0 = write_bytes(kept.proc.pid)
                cpu0 = {name: cpu_s(pid) for name, pid in pids.items()}
                t0 = time.monotonic()
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        disk = write_bytes(kept.proc.pid) - disk0
        cpu = {name: cpu_s(pid) - cpu0[name] for name, pid in pids.items()}
        info = redis.Redis(port=kept.port).info("persistence")
        for room in {p.room for p in plans}:
            sim.command(room, "s0", Halt())
        singer_s = SINGERS * elapsed
        return {
            "config": config.name,
            "singers": SINGERS,
            "seconds": elapsed,
            "disk_bytes": disk,
            "disk_bytes_per_singer_s": disk / singer_s,
            "aof_rewrites": int(info.get("aof_rewrites", 0) or 0),
            "aof_current_size": int(info.get("aof_current_size", 0) or 0),
            "cpu_ms_per_singer_s": {k: 1000 * v / singer_s for k, v in cpu.items()},
            "rooms": sorted({p.room for p in plans}),
            "state_url": state.url if state is not None else None,
        }
    finally:
        client.close()
        for proc in reversed(procs):
            proc.stop()
        main.stop()
        if state is not None:
            state.stop()


async def time_restore(
    state_dir: Path, room: str, n_rooms: int, cluster: bool = False
) -> dict[str, Any]:
    """The kept room's keys copied to ``n_rooms`` rooms, restored into an empty Redis
    (or an empty local Redis Cluster of 3 masters and 3 replicas)."""
    state = LocalRedis(persist_dir=str(state_dir))
    state.start()
    main: LocalRedis | LocalRedisCluster = LocalRedisCluster() if cluster else LocalRedis()
    main.start()
    store = AsyncRedis(port=state.port)
    target = redisclient.async_client(main.url)
    try:
        originals = [k async for k in copier.durable_keys(store)]
        originals = [k for k in originals if durable.room_of(k) == room]
        dumps = {k: await store.dump(k) for k in originals}
        size = sum(len(v) for v in dumps.values() if v)
        for i in range(n_rooms):
            async with store.pipeline(transaction=False) as pipe:
                for name, payload in dumps.items():
                    if payload:
                        pipe.restore(
                            name.replace(f"{{{room}}}", f"{{copy{i}}}"), 0, payload, replace=True
                        )
                await pipe.execute()
        started = time.perf_counter()
        restored = await copier.restore(store, target)
        seconds = time.perf_counter() - started
        return {
            "target": "cluster" if cluster else "one redis",
            "rooms": restored.rooms,
            "keys": restored.keys,
            "bytes": restored.bytes,
            "room_bytes": size,
            "seconds": seconds,
            "rooms_per_s": restored.rooms / seconds,
        }
    finally:
        await store.aclose()
        await target.aclose()
        main.stop()
        state.stop()


def main(argv: Sequence[str] = ()) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m bench.persistence")
    parser.add_argument("--warmup-s", type=float, default=8.0)
    parser.add_argument("--measure-s", type=float, default=30.0)
    parser.add_argument("--restore-rooms", type=int, default=1000)
    args = parser.parse_args(list(argv))
    configs = [
        Config("aof-all", keeper=False),
        Config("keeper", keeper=True),
        Config("keeper, copy_ms 5000", keeper=True, copy_ms=5000),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-persistence-") as tmp:
        base = Path(tmp)
        runs = [run(c, base, args.warmup_s, args.measure_s) for c in configs]
        keeper_run = runs[1]
        restores = [
            asyncio.run(
                time_restore(
                    base / "keeper" / "state", keeper_run["rooms"][0], args.restore_rooms, cluster
                )
            )
            for cluster in (False, True)
        ]
    before = runs[0]["disk_bytes_per_singer_s"]
    rows = []
    for r in runs:
        cpu = r["cpu_ms_per_singer_s"]
        redis_cpu = cpu["redis"] + cpu.get("state-redis", 0.0) + cpu.get("keeper", 0.0)
        rows.append(
            [
                r["config"],
                f"{r['disk_bytes_per_singer_s']:.0f}",
                f"x{r['disk_bytes_per_singer_s'] / before:.4f}",
                str(r["aof_rewrites"]),
                f"{cpu['redis']:.3f}",
                f"{cpu.get('state-redis', 0.0):.3f}",
                f"{cpu.get('keeper', 0.0):.3f}",
                f"{redis_cpu / runs[0]['cpu_ms_per_singer_s']['redis']:.2f}",
            ]
        )
    print_grid(
        f"Persistence, {SINGERS} singers in one room, {args.measure_s:.0f} s each "
        f"(loaded machine: {os.cpu_count()} cores shared)",
        [
            "configuration",
            "disk B/singer-s",
            "vs aof-all",
            "rewrites",
            "redis ms/singer-s",
            "state redis",
            "keeper",
            "redis+state+keeper vs aof-all",
        ],
        rows,
    )
    for restore in restores:
        print(
            f"restore into an empty {restore['target']}: {restore['rooms']} rooms "
            f"({restore['room_bytes']} bytes of dumps each), {restore['keys']} keys in "
            f"{restore['seconds'] * 1000:.0f} ms ({restore['rooms_per_s']:.0f} rooms/s)"
        )
    results: dict[str, object] = {
        "runs": runs,
        "restores": restores,
        "disk_ratio_after_before": runs[1]["disk_bytes_per_singer_s"] / before,
        "disk_bytes_per_singer_s_after": runs[1]["disk_bytes_per_singer_s"],
        "goal_bytes_per_singer_s": 1000,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    write_results("persistence", results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
