"""Rooms spread over a Redis Cluster, and a master's failover (``python -m bench.cluster``).

In one run, the same load on one Redis and on a local cluster of three masters
and three replicas (brigade/rediscluster.py): ``ROOMS`` rooms of ``PER_ROOM``
singers (``BB_BENCH_PER_ROOM``, a number or a list cycled over the rooms:
``1,2,3,4`` gives rooms of different sizes), a song running in each, two real
``brigade mixer`` processes, and a producer here that pushes 100 ms pcm16
chunks at real-time pace as gateways do.  Over a steady window it reports, per
master: rooms, keys, commands/s and bytes/s (in + out to clients; the stream to
the replicas apart) and their shares; Redis CPU per singer (masters, and
masters + replicas) against one Redis.  The cluster is measured twice: with
the rooms where their names hash (``hashed``), then after ``brigade cluster
balance`` moved slots by measured load while the mixers and the producer kept
running (``balanced``; the redirects the clients followed, from
``INFO errorstats``, and the chunks lost while it ran are reported).

Then, on the cluster, ``FAILOVERS`` times: SIGKILL of the master holding room
0, while the load goes on; time from the kill to the first tap window of room 0
written again (Redis entry ids: the promoted replica's clock), and the audio
lost per tap of room 0 (samples missing between the last window before the
kill and the first after); the killed node is restarted (it rejoins as a
replica) before the next round.  Medians are reported.

Writes ``bench-results/cluster.json``.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.exceptions import RedisClusterException, RedisError

from bench.procstat import cpu_s
from bench.results import print_grid, print_table, results_dir, write_results
from brigade import clusterbalance
from brigade.rediscluster import LocalRedisCluster
from common import keys, redisclient
from common.clock import now_samples
from common.commands import Envelope, Join, Lead, Start, encode_envelope
from common.errors import WireError
from common.records import Role
from common.streams import parse_entries
from common.wire import decode_tap, encode_chunk
from tests.simgateway import SimGateway
from tests.support import Process, RedisServer, wait_for

CHUNK = 4800
ROOMS = int(os.environ.get("BB_BENCH_ROOMS", "24"))
SIZES = [int(n) for n in os.environ.get("BB_BENCH_PER_ROOM", "2").split(",")]
WARMUP_S = 6.0
MEASURE_S = float(os.environ.get("BB_BENCH_MEASURE_S", "10"))
FAILOVERS = int(os.environ.get("BB_BENCH_FAILOVERS", "3"))
ERRORS = (RedisError, RedisClusterException)


@dataclass
class Singer:
    room: str
    singer: str
    delay: int
    next_pos: int


class Load:
    """Rooms with running songs and a producer pushing their singers' chunks."""

    def __init__(self, client: redis.Redis, tag: str) -> None:
        self.client = client
        self.sim = SimGateway(client)
        self.rooms = [f"spread{tag}-{r}" for r in range(ROOMS)]
        self.sizes = {room: SIZES[r % len(SIZES)] for r, room in enumerate(self.rooms)}
        self.singers: list[Singer] = []
        self.payload = (np.sin(np.arange(CHUNK) / 10) * 8000).astype(np.int16)
        self.failed_pushes = 0

    def setup(self) -> None:
        for room in self.rooms:
            self.sim.create_room(room, capacity=self.sizes[room] + 4)
        for room in self.rooms:
            wait_for(lambda room=room: self.client.exists(keys.room_lease(room)), 20, "owned")
            for i in range(self.sizes[room]):
                join = Join(name=f"Singer {i}", role=Role.SINGER)
                self.client.xadd(
                    keys.room_ctl(room),
                    {"d": encode_envelope(Envelope(singer=f"s{i}", cmd=join, gw="bench"))},
                )
            assert self.sim.command(room, "s0", Lead()).ok
            assert self.sim.command(room, "s0", Start()).ok
            state = self.sim.state(room)
            start = int(state["song"]["start_pos"])
            self.singers += [
                Singer(room, m["singer_id"], int(m["delay"]), start) for m in state["members"]
            ]

    def push(self) -> int:
        """Push every chunk that is due; a failed pipeline loses its chunks (counted)."""
        now = now_samples()
        pipe = self.client.pipeline(transaction=False)
        batch = 0
        for s in self.singers:
            while s.next_pos + CHUNK + s.delay <= now:
                pipe.xadd(
                    keys.room_in(s.room),
                    {"d": encode_chunk(s.room, s.singer, 1, 0, s.next_pos, self.payload)},
                    maxlen=2000,
                    approximate=True,
                )
                s.next_pos += CHUNK
                batch += 1
        if batch:
            try:
                pipe.execute()
            except ERRORS:
                self.failed_pushes += batch
        return batch

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.push()
            time.sleep(0.01)


def node_stats(port: int) -> dict[str, float]:
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        stats: dict[str, Any] = client.info("stats")
        # total_net_output_bytes includes the stream to the replicas (Redis 7.0):
        # the clients' bytes leave it out; the replication bytes are counted apart.
        replication = float(stats.get("total_net_repl_output_bytes", 0))
        return {
            "commands": float(stats["total_commands_processed"]),
            "bytes": float(stats["total_net_input_bytes"])
            + float(stats["total_net_output_bytes"])
            - replication,
            "replication_bytes": replication,
            "keys": float(client.dbsize()),
        }
    finally:
        client.close()


def measure(
    load: Load, pids: dict[int, int], masters: list[int], warmup_s: float = WARMUP_S
) -> dict[str, Any]:
    load.run_for(warmup_s)
    before = {p: node_stats(p) for p in masters}
    cpu0 = {p: cpu_s(pid) for p, pid in pids.items()}
    t0 = time.monotonic()
    load.run_for(MEASURE_S)
    elapsed = time.monotonic() - t0
    cpu = {p: (cpu_s(pid) - cpu0[p]) / elapsed for p, pid in pids.items()}
    after = {p: node_stats(p) for p in masters}
    per_master = {
        p: {
            "commands_per_s": (after[p]["commands"] - before[p]["commands"]) / elapsed,
            "bytes_per_s": (after[p]["bytes"] - before[p]["bytes"]) / elapsed,
            "replication_bytes_per_s": (
                after[p]["replication_bytes"] - before[p]["replication_bytes"]
            )
            / elapsed,
            "keys": after[p]["keys"],
            "cpu_cores": cpu[p],
        }
        for p in masters
    }
    singers = len(load.singers)
    master_cpu = sum(cpu[p] for p in masters)
    return {
        "singers": singers,
        "per_master": per_master,
        "redis_cpu_cores_masters": master_cpu,
        "redis_cpu_cores_all_nodes": sum(cpu.values()),
        "redis_cpu_ms_per_singer_second": 1000 * master_cpu / singers,
        "redis_cpu_ms_per_singer_second_all_nodes": 1000 * sum(cpu.values()) / singers,
    }


def redirects(ports: list[int]) -> dict[str, int]:
    """The MOVED, ASK and TRYAGAIN errors the nodes answered so far (``INFO errorstats``)."""
    found = {"MOVED": 0, "ASK": 0, "TRYAGAIN": 0}
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            stats: dict[str, Any] = client.info("errorstats")
        finally:
            client.close()
        for name in found:
            found[name] += int(stats.get(f"errorstat_{name}", {}).get("count", 0))
    return found


def balance_live(load: Load, cluster: LocalRedisCluster) -> dict[str, Any]:
    """``brigade cluster balance`` in a thread while the load goes on."""
    out: dict[str, Any] = {}
    failed0 = load.failed_pushes
    errors0 = redirects(cluster.live_ports())

    def run() -> None:
        try:
            out["report"] = clusterbalance.balance(cluster.url, sample_s=2.0)
        except Exception as exc:  # reported below, in the main thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    while thread.is_alive():
        load.push()
        time.sleep(0.01)
    thread.join()
    if "error" in out:
        raise out["error"]
    report: clusterbalance.Report = out["report"]
    after = redirects(cluster.live_ports())
    return {
        **report.as_json(),
        "redirects": {k: after[k] - errors0[k] for k in after},
        "chunks_lost_in_failed_pushes": load.failed_pushes - failed0,
    }


def spread_rows(load: Load, cluster: LocalRedisCluster, spread: dict[str, Any]) -> None:
    """Rooms and shares per master, added to ``spread``'s rows."""
    rooms_of: dict[int, int] = dict.fromkeys(spread["per_master"], 0)
    singers_of: dict[int, int] = dict.fromkeys(spread["per_master"], 0)
    for room in load.rooms:
        port = cluster.master_of(keys.room_in(room))
        rooms_of[port] += 1
        singers_of[port] += load.sizes[room]
    total_bytes = sum(r["bytes_per_s"] for r in spread["per_master"].values())
    total_cmds = sum(r["commands_per_s"] for r in spread["per_master"].values())
    for port, row in spread["per_master"].items():
        row["rooms"] = rooms_of[port]
        row["singers"] = singers_of[port]
        row["bytes_share"] = row["bytes_per_s"] / total_bytes
        row["commands_share"] = row["commands_per_s"] / total_cmds
    spread["max_master_bytes_share"] = max(r["bytes_share"] for r in spread["per_master"].values())


def tap_positions(load: Load, room: str) -> dict[str, list[tuple[int, int, int]]]:
    """Per tap of ``room`` (its members' delays): (entry ms, start, samples) of every window."""
    found: dict[str, list[tuple[int, int, int]]] = {}
    for delay in sorted({s.delay for s in load.singers if s.room == room}):
        name = keys.room_tap(room, delay)
        windows = []
        for entry_id, data in parse_entries(load.client.xrange(name)):
            if data is None:
                continue
            try:
                tap = decode_tap(data)
            except WireError:
                continue
            windows.append((int(entry_id.split(b"-")[0]), tap.start, len(tap.samples)))
        found[str(delay)] = sorted(windows, key=lambda w: w[1])
    return found


def failover_round(load: Load, cluster: LocalRedisCluster) -> dict[str, Any]:
    room = load.rooms[0]
    victim = cluster.master_of(keys.room_in(room))
    load.run_for(2.0)
    killed_ms = int(time.time() * 1000)
    cluster.kill(victim)
    first_ms: int | None = None
    deadline = time.monotonic() + 60
    while first_ms is None and time.monotonic() < deadline:
        load.push()
        try:
            taps = tap_positions(load, room)
        except ERRORS:
            time.sleep(0.02)
            continue
        after = [ms for windows in taps.values() for ms, _, _ in windows if ms > killed_ms]
        first_ms = min(after) if after else None
        time.sleep(0.02)
    if first_ms is None:
        nodes = cluster.node(cluster.live_ports()[0]).cluster("nodes")
        raise RuntimeError(f"no tap window after the failover within 60 s; nodes: {nodes}")
    load.run_for(1.5)
    lost: dict[str, int] = {}
    for name, windows in tap_positions(load, room).items():
        before = [w for w in windows if w[0] <= killed_ms]
        later = [w for w in windows if w[0] > killed_ms]
        if not before or not later:
            continue
        covered_to = max(start + n for _, start, n in before)
        resumed_at = min(start for _, start, _ in later)
        lost[name] = max(0, resumed_at - covered_to)
    cluster.restart(victim)
    return {
        "victim": victim,
        "kill_to_first_window_ms": first_ms - killed_ms,
        "lost_samples_per_tap": lost,
        "lost_ms_max": 1000 * max(lost.values(), default=0) / 48000,
    }


def start_mixers(url: str, log_dir: Path, tag: str) -> list[Process]:
    env = {"REDIS_URL": url, "BB_LOG_LEVEL": "WARNING"}
    return [
        Process(["mixer"], {**env, "BB_MIXER_ID": f"{tag}mx{i}"}, log_dir, f"{tag}mx{i}")
        for i in (1, 2)
    ]


def main() -> dict[str, object]:
    log_dir = results_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"rooms": ROOMS, "singers_per_room": SIZES}
    # One Redis.
    server = RedisServer()
    server.start()
    assert server.proc is not None
    mixers = start_mixers(server.url, log_dir, "one")
    client = redis.Redis(port=server.port)
    try:
        load = Load(client, "one")
        load.setup()
        one = measure(load, {server.port: server.proc.pid}, [server.port])
    finally:
        for m in mixers:
            m.stop()
        client.close()
        server.stop()
    results["one_redis"] = one
    print(f"one Redis: {one}", flush=True)
    # The cluster.
    cluster = LocalRedisCluster()
    cluster.start()
    mixers = start_mixers(cluster.url, log_dir, "cl")
    cclient = redisclient.sync_client(cluster.url)
    try:
        load = Load(cclient, "cl")
        load.setup()
        masters = cluster.masters_now()
        pids = {p: proc.pid for p, proc in cluster.procs.items()}
        hashed = measure(load, pids, masters)
        spread_rows(load, cluster, hashed)
        print(f"cluster, rooms where their names hash: {hashed}", flush=True)
        balanced_by = balance_live(load, cluster)
        print(f"balance: {balanced_by}", flush=True)
        spread = measure(load, pids, masters, warmup_s=2.0)
        spread_rows(load, cluster, spread)
        print(f"cluster, balanced: {spread}", flush=True)
        rounds = [failover_round(load, cluster) for _ in range(FAILOVERS)]
    finally:
        for m in mixers:
            m.stop()
        cclient.close()
        cluster.stop()
    results["cluster_hashed"] = hashed
    results["balance"] = balanced_by
    results["cluster"] = spread
    results["max_master_bytes_share_hashed"] = hashed["max_master_bytes_share"]
    results["max_master_bytes_share"] = spread["max_master_bytes_share"]
    results["cpu_per_singer_cluster_masters_over_one_redis"] = (
        spread["redis_cpu_ms_per_singer_second"] / one["redis_cpu_ms_per_singer_second"]
    )
    results["cpu_per_singer_cluster_all_nodes_over_one_redis"] = (
        spread["redis_cpu_ms_per_singer_second_all_nodes"] / one["redis_cpu_ms_per_singer_second"]
    )
    results["failovers"] = rounds
    if rounds:
        results["kill_to_first_window_ms_median"] = statistics.median(
            r["kill_to_first_window_ms"] for r in rounds
        )
        results["lost_ms_max_tap_median"] = statistics.median(r["lost_ms_max"] for r in rounds)
    results["chunks_lost_in_failed_pushes"] = load.failed_pushes
    results["cpu_count"] = os.cpu_count()
    results["python"] = sys.version.split()[0]
    sizes = ",".join(map(str, SIZES))
    for name, measured in (("hashed", hashed), ("balanced", spread)):
        grid = [
            (
                str(port),
                f"{row['rooms']} ({row['singers']} singers)",
                f"{row['keys']:.0f}",
                f"{row['commands_per_s']:.0f} ({100 * row['commands_share']:.0f} %)",
                f"{row['bytes_per_s'] / 1e6:.2f} MB/s ({100 * row['bytes_share']:.0f} %)",
                f"{row['cpu_cores']:.3f}",
            )
            for port, row in sorted(measured["per_master"].items())
        ]
        print_grid(
            f"{ROOMS} rooms x {sizes} singers over 3 masters, {name}",
            ("master", "rooms", "keys", "commands/s", "bytes/s", "cpu cores"),
            grid,
        )
    rows = [
        (
            "balance (live)",
            f"{len(balanced_by['moves'])} slots, {balanced_by['keys_moved']} keys in "
            f"{balanced_by['seconds']:.2f} s; redirects {balanced_by['redirects']}",
            f"chunks lost {balanced_by['chunks_lost_in_failed_pushes']}",
        ),
        (
            "Redis CPU per singer",
            f"one Redis {one['redis_cpu_ms_per_singer_second']:.3f} ms/singer-s; cluster "
            f"masters {spread['redis_cpu_ms_per_singer_second']:.3f}, all six "
            f"{spread['redis_cpu_ms_per_singer_second_all_nodes']:.3f}",
            f"ratios {results['cpu_per_singer_cluster_masters_over_one_redis']:.2f} / "
            f"{results['cpu_per_singer_cluster_all_nodes_over_one_redis']:.2f}",
        ),
    ]
    if rounds:
        rows.append(
            (
                f"failover (median of {len(rounds)})",
                f"kill to first window {results['kill_to_first_window_ms_median']:.0f} ms",
                f"audio lost (worst tap) {results['lost_ms_max_tap_median']:.0f} ms",
            )
        )
    print_table("Redis Cluster", rows)
    write_results("cluster", results)
    return results


if __name__ == "__main__":
    main()
