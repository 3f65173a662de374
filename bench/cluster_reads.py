"""Reads that span rooms: one XREAD, per-room XREADs in a pipeline, or a shared hash tag
(``python -m bench.cluster_reads``).

A gateway's tap fan-out (and a mixer's tick) reads the newest entries of many
rooms' streams at once.  Redis refuses one XREAD over keys of different slots
on a cluster, so the choices are: per-room XREADs sent as one pipeline
(redis-py's cluster pipeline splits it per node), or rooms read together
sharing one hash tag (one XREAD again, but then those rooms all live on one
node).  This measures, in one run, ``ROOMS`` streams with one new 20 ms
window (3.9 KB) each per read:

- ``one XREAD, one Redis``: today's read on one Redis (the reference);
- ``per-room pipeline, one Redis`` (what one Redis would cost with the cluster's path);
- ``per-room pipeline, cluster, routed by keys (before)``: redis-py routing each
  XREAD by its keys, which costs a ``COMMAND GETKEYS`` round trip per XREAD
  (XREAD's keys follow the ``STREAMS`` keyword);
- ``per-room pipeline, cluster, named nodes (now)``: what this project does on a
  cluster (``common.redisclient.xread_keys``: each XREAD sent with
  ``target_nodes=`` its slot's master from redis-py's slot table);
- ``shared hash tag, cluster``: one XREAD over keys that share ``{group}``.

For each: Redis commands and bytes per read (from INFO stats), Redis CPU per read
(all nodes, /proc), and the client's time per read (median), as ratios to the
reference.  Writes ``bench-results/cluster_reads.json``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.procstat import cpu_s
from bench.results import print_table, write_results
from brigade.rediscluster import LocalRedisCluster
from common import redisclient
from tests.support import RedisServer

ROOMS = int(os.environ.get("BB_BENCH_ROOMS", "24"))
READS = int(os.environ.get("BB_BENCH_READS", "400"))
WINDOW = b"\x00" * 3840


def totals(ports: list[int]) -> tuple[float, float]:
    commands = traffic = 0.0
    for port in ports:
        client = redis.Redis(port=port)
        stats: dict[str, Any] = client.info("stats")
        client.close()
        commands += float(stats["total_commands_processed"])
        # Clients' bytes only: Redis 7.0 counts the replication stream in the totals too.
        traffic += (
            float(stats["total_net_input_bytes"])
            + float(stats["total_net_output_bytes"])
            - float(stats.get("total_net_repl_input_bytes", 0))
            - float(stats.get("total_net_repl_output_bytes", 0))
        )
    return commands, traffic


async def run(
    url: str, keys: list[str], ports: list[int], pids: list[int], path: str
) -> dict[str, float]:
    client = redisclient.async_client(url)
    try:
        cursors: dict[str, bytes] = {}
        for key in keys:
            await client.delete(key)
            added: Any = await client.xadd(key, {b"d": WINDOW})
            cursors[key] = bytes(added)
        read: Callable[[], Any]
        if path == "pipeline":

            async def read() -> object:
                async with client.pipeline(transaction=False) as pipe:
                    for key, cursor in cursors.items():
                        pipe.xread({key: cursor}, count=100)
                    return await pipe.execute()
        else:

            async def read() -> object:
                return await redisclient.xread_keys(client, cursors, count=100)

        times: list[float] = []
        c0, b0 = totals(ports)
        cpu0 = sum(cpu_s(p) for p in pids)
        for _ in range(READS):
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.xadd(key, {b"d": WINDOW}, maxlen=10)
                new_ids = await pipe.execute()
            # Writes are counted too; subtract them below.
            t = time.perf_counter()
            await read()
            times.append(time.perf_counter() - t)
            cursors = {key: bytes(new) for key, new in zip(keys, new_ids, strict=True)}
        cpu = sum(cpu_s(p) for p in pids) - cpu0
        c1, b1 = totals(ports)
    finally:
        await client.aclose()
    write_bytes = len(keys) * (len(WINDOW) + 60)
    return {
        "commands_per_read": (c1 - c0) / READS - len(keys),
        "bytes_per_read": (b1 - b0) / READS - write_bytes,
        "redis_cpu_ms_per_read_incl_writes": 1000 * cpu / READS,
        "client_ms_per_read_median": 1000 * statistics.median(times),
    }


def main() -> dict[str, object]:
    rooms = [f"r{i}" for i in range(ROOMS)]
    per_room = [f"bb:{{{r}}}:tap:0" for r in rooms]
    shared = [f"bb:{{grp}}:{r}:tap:0" for r in rooms]
    server = RedisServer()
    server.start()
    cluster = LocalRedisCluster()
    cluster.start()
    assert server.proc is not None
    one = ([server.port], [server.proc.pid])
    all_nodes = (cluster.ports, [p.pid for p in cluster.procs.values()])
    try:
        results: dict[str, Any] = {
            "one XREAD, one Redis": asyncio.run(run(server.url, per_room, *one, "xread")),
            "per-room pipeline, one Redis": asyncio.run(
                run(server.url, per_room, *one, "pipeline")
            ),
            "per-room pipeline, cluster, routed by keys (before)": asyncio.run(
                run(cluster.url, per_room, *all_nodes, "pipeline")
            ),
            "per-room pipeline, cluster, named nodes (now)": asyncio.run(
                run(cluster.url, per_room, *all_nodes, "xread")
            ),
            "shared hash tag, cluster": asyncio.run(run(cluster.url, shared, *all_nodes, "xread")),
        }
    finally:
        cluster.stop()
        server.stop()
    ref = results["one XREAD, one Redis"]
    rows = []
    metrics = list(ref)
    for name, r in results.items():
        r["ratios"] = {k: r[k] / ref[k] if ref[k] else float("nan") for k in metrics}
        rows.append(
            (
                name,
                f"{r['commands_per_read']:.1f} cmds, {r['bytes_per_read'] / 1e3:.1f} KB, "
                f"redis {r['redis_cpu_ms_per_read_incl_writes']:.3f} ms (with writes), "
                f"client {r['client_ms_per_read_median']:.3f} ms",
                f"x{r['ratios']['client_ms_per_read_median']:.2f} time, "
                f"x{r['ratios']['redis_cpu_ms_per_read_incl_writes']:.2f} cpu",
            )
        )
    out: dict[str, object] = {"rooms": ROOMS, "reads": READS, "paths": results}
    print_table(f"Reading {ROOMS} rooms' newest windows", rows)
    write_results("cluster_reads", out)
    return out


if __name__ == "__main__":
    main()
