"""``brigade cluster balance``: move rooms' slots so that no master carries much more than
its share of the measured load.

Rooms land on slots by the hash of their name (``bb:{R}:...``), so a few dozen
rooms spread unevenly over three masters, and rooms differ in size.  This
measures each room's load on the live cluster (the bytes appended per second
to its streams: the singers' chunks, the taps' windows, events and commands,
sampled over ``--sample-s``), plans the slot moves with
:func:`brigade.slotplan.plan_moves`, and moves each slot as
``redis-cli --cluster reshard`` does: ``CLUSTER SETSLOT IMPORTING`` on the
target, ``MIGRATING`` on the source, ``MIGRATE`` of the slot's keys,
``SETSLOT NODE`` on every master.  The processes keep running: redis-py
follows the ``ASK`` redirects (a key already moved), ``TRYAGAIN`` (a
multi-key command while its keys are split, for the instant of one
``MIGRATE``) and the final ``MOVED``.

It talks to the masters directly (their addresses from ``CLUSTER NODES`` of
the node named by ``--redis-url``).  A move interrupted half-way (this
process killed) leaves the slot marked migrating/importing: ``redis-cli
--cluster fix HOST:PORT`` finishes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from redis.crc import key_slot

from brigade.slotplan import Move, master_loads, plan_moves, room_of_key
from common import keys
from common.settings import DEFAULT_REDIS_URL

SLOTS = 16384
MIGRATE_BATCH = 100
"""Keys per ``MIGRATE`` (a room has about fifteen, so usually one)."""
MIGRATE_TIMEOUT_MS = 10_000


def _command(client: redis.Redis, *args: str | int | bytes) -> Any:
    """One raw command (redis-py leaves ``execute_command`` untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def node_url(url: str, host: str, port: int) -> str:
    """``url`` (its scheme, user, password, database) pointed at another node."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{address}"))


def migrate_auth(url: str) -> list[str]:
    """``MIGRATE``'s ``AUTH2 user password`` when ``url`` carries a password (the source
    logs in to the target with it), else nothing."""
    parts = urlsplit(url)
    if parts.password is None:
        return []
    return ["AUTH2", unquote(parts.username or "default"), unquote(parts.password)]


@dataclass(frozen=True)
class Master:
    node_id: str
    host: str
    port: int
    url: str
    """The URL the tool was given, pointed at this master."""

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=15, socket_connect_timeout=2)


@dataclass
class ClusterMap:
    """The masters and which master serves each slot, from ``CLUSTER NODES``."""

    masters: dict[str, Master]
    owner: dict[int, str] = field(default_factory=dict)

    @classmethod
    def read(cls, url: str) -> ClusterMap:
        seed = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        try:
            nodes: dict[str, dict[str, Any]] = seed.cluster("nodes")
        finally:
            seed.close()
        found = cls(masters={})
        for address, node in nodes.items():
            flags = str(node["flags"]).split(",")
            if "master" not in flags or "fail" in flags or not node.get("connected", True):
                continue
            host, _, port = address.rpartition(":")
            port_n = int(port.split("@")[0])
            master = Master(str(node["node_id"]), host, port_n, node_url(url, host, port_n))
            found.masters[master.node_id] = master
            for span in node["slots"]:
                start, end = int(span[0]), int(span[-1])
                for slot in range(start, end + 1):
                    found.owner[slot] = master.node_id
        return found


@dataclass(frozen=True)
class StreamSeen:
    """One stream at one sample."""

    added: int
    """``entries-added``: entries ever appended."""
    entry_bytes: float
    """Size of an entry's values: the mean of its oldest and newest entries."""
    at_s: float
    """Its master's clock (``TIME``, read in the same pipeline)."""
    last_ms: int = 0
    """When its newest entry was appended (the ms part of ``last-generated-id``)."""


StreamSample = dict[str, StreamSeen]
"""Stream key → what it looked like."""


def _entry_bytes(entry: object) -> int | None:
    if isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[1], dict):
        return sum(len(v) for v in entry[1].values() if isinstance(v, bytes))
    return None


def sample_streams(cmap: ClusterMap) -> StreamSample:
    """Every per-room stream on every master: its ``entries-added``, its entries' size
    and the master's clock when it was read."""
    found: StreamSample = {}
    for master in cmap.masters.values():
        client = master.client()
        try:
            names = [
                bytes(k).decode()
                for k in client.scan_iter(
                    match=f"{keys.PREFIX}:{{*}}:*", _type="stream", count=1000
                )
            ]
            # TIME and the XINFOs run back to back on the master: the clock each
            # stream is measured by is the master's, whatever delays this client.
            pipe = client.pipeline(transaction=False)
            pipe.time()
            for name in names:
                pipe.xinfo_stream(name)
            now, *replies = pipe.execute(raise_on_error=False)
        finally:
            client.close()
        if not isinstance(now, tuple | list):
            continue
        at_s = float(now[0]) + float(now[1]) / 1e6
        for name, info in zip(names, replies, strict=True):
            if not isinstance(info, dict):
                continue  # gone (trimmed away, expired) or moved since the SCAN
            sizes = [
                n
                for n in (
                    _entry_bytes(info.get("first-entry")),
                    _entry_bytes(info.get("last-entry")),
                )
                if n is not None
            ]
            mean = sum(sizes) / len(sizes) if sizes else 0.0
            last_id = info.get("last-generated-id")
            last_ms = int(bytes(last_id).split(b"-")[0]) if isinstance(last_id, bytes) else 0
            found[name] = StreamSeen(int(info.get("entries-added", 0)), mean, at_s, last_ms)
    return found


def room_loads(before: StreamSample, after: StreamSample) -> dict[str, float]:
    """Bytes per second appended to each room's streams between two samples: entries
    added x their size, over the time they were added in.

    That time is the span between the newest entries seen by the two samples
    (their ids' times): writers come in bursts (a chunk every 100 ms, a mixer
    tick late on a busy machine), and the entries counted are exactly those
    appended over that span.  A stream that got fewer than two entries, or whose
    span is under half the time between the two readings of its master (``TIME``),
    is measured over the latter.  A stream the first sample did not see was created
    since, so all its entries count, over the time since the first sample's
    earliest reading."""
    start = min((seen.at_s for seen in before.values()), default=None)
    loads: dict[str, float] = {}
    for name, seen in after.items():
        room = room_of_key(name)
        if room is None:
            continue
        earlier = before.get(name)
        since = earlier.at_s if earlier is not None else start
        if since is None or seen.at_s <= since:
            continue
        added = seen.added - (earlier.added if earlier is not None else 0)
        span = seen.at_s - since
        if earlier is not None and added >= 2:
            by_ids = (seen.last_ms - earlier.last_ms) / 1000
            if by_ids >= span / 2:
                span = by_ids
        rate = max(0, added) * seen.entry_bytes / span
        loads[room] = loads.get(room, 0.0) + rate
    return loads


def room_slot(room: str) -> int:
    return int(key_slot(keys.room_in(room).encode()))


def slot_loads(loads: Mapping[str, float]) -> dict[int, float]:
    by_slot: dict[int, float] = {}
    for room, load in loads.items():
        by_slot[room_slot(room)] = by_slot.get(room_slot(room), 0.0) + load
    return by_slot


def measure(url: str, sample_s: float) -> tuple[ClusterMap, dict[str, float]]:
    """The cluster's map and each room's load (bytes/s) over ``sample_s`` seconds."""
    cmap = ClusterMap.read(url)
    first = sample_streams(cmap)
    time.sleep(sample_s)
    return cmap, room_loads(first, sample_streams(cmap))


def move_slot(cmap: ClusterMap, move: Move) -> int:
    """Move one slot with its keys (as ``redis-cli --cluster reshard``); the keys moved."""
    source, target = cmap.masters[move.source], cmap.masters[move.target]
    src, dst = source.client(), target.client()
    moved = 0
    try:
        _command(dst, "CLUSTER", "SETSLOT", move.slot, "IMPORTING", source.node_id)
        _command(src, "CLUSTER", "SETSLOT", move.slot, "MIGRATING", target.node_id)
        while True:
            batch = _command(src, "CLUSTER", "GETKEYSINSLOT", move.slot, MIGRATE_BATCH)
            if not batch:
                break
            auth = migrate_auth(target.url)
            _command(
                src,
                "MIGRATE",
                target.host,
                target.port,
                "",
                0,
                MIGRATE_TIMEOUT_MS,
                *auth,
                "KEYS",
                *batch,
            )
            moved += len(batch)
        # The target first: it takes the slot (and a new config epoch), then the source
        # stops answering for it, then the other masters learn it without waiting for gossip.
        _command(dst, "CLUSTER", "SETSLOT", move.slot, "NODE", target.node_id)
        _command(src, "CLUSTER", "SETSLOT", move.slot, "NODE", target.node_id)
        for other in cmap.masters.values():
            if other.node_id in (source.node_id, target.node_id):
                continue
            client = other.client()
            try:
                _command(client, "CLUSTER", "SETSLOT", move.slot, "NODE", target.node_id)
            except redis.RedisError:
                pass  # gossip tells it soon enough
            finally:
                client.close()
    finally:
        src.close()
        dst.close()
    cmap.owner[move.slot] = target.node_id
    return moved


@dataclass
class Report:
    loads: dict[str, float]
    before: dict[str, float]
    planned: dict[str, float]
    moves: list[Move]
    keys_moved: int
    seconds: float
    addresses: dict[str, str]

    def as_json(self) -> dict[str, object]:
        return {
            "rooms": len(self.loads),
            "room_bytes_per_s": dict(sorted(self.loads.items())),
            "masters": {
                self.addresses[m]: {"before": self.before[m], "after": self.planned[m]}
                for m in self.before
            },
            "moves": [
                {
                    "slot": m.slot,
                    "from": self.addresses[m.source],
                    "to": self.addresses[m.target],
                    "bytes_per_s": m.load,
                }
                for m in self.moves
            ],
            "keys_moved": self.keys_moved,
            "seconds": self.seconds,
        }


def balance(
    url: str,
    *,
    sample_s: float = 2.0,
    tolerance: float = 0.1,
    max_moves: int = 64,
    dry_run: bool = False,
) -> Report:
    """Measure, plan and (unless ``dry_run``) carry out the moves."""
    cmap, loads = measure(url, sample_s)
    by_slot = {s: v for s, v in slot_loads(loads).items() if s in cmap.owner}
    masters = sorted(cmap.masters)
    moves = plan_moves(by_slot, cmap.owner, masters, tolerance=tolerance, max_moves=max_moves)
    before = master_loads(by_slot, cmap.owner, masters)
    after_owner = dict(cmap.owner)
    for m in moves:
        after_owner[m.slot] = m.target
    planned = master_loads(by_slot, after_owner, masters)
    t0 = time.monotonic()
    moved = 0 if dry_run else sum(move_slot(cmap, m) for m in moves)
    addresses = {m.node_id: f"{m.host}:{m.port}" for m in cmap.masters.values()}
    return Report(loads, before, planned, moves, moved, time.monotonic() - t0, addresses)


def _print(report: Report, dry_run: bool) -> None:
    total = sum(report.before.values()) or 1.0
    print(f"{len(report.loads)} rooms, {total / 1e6:.2f} MB/s appended in all")
    print(f"{'master':<22} {'before':>16} {'after':>16}")
    for node, load in sorted(report.before.items(), key=lambda kv: report.addresses[kv[0]]):
        after = report.planned[node]
        print(
            f"{report.addresses[node]:<22} {load / 1e6:8.2f} MB/s {100 * load / total:3.0f} %"
            f" {after / 1e6:8.2f} MB/s {100 * after / total:3.0f} %"
        )
    verb = "would move" if dry_run else "moved"
    for m in report.moves:
        rooms = sorted(r for r in report.loads if room_slot(r) == m.slot)
        print(
            f"{verb} slot {m.slot} ({', '.join(rooms)}; {m.load / 1e6:.2f} MB/s) "
            f"{report.addresses[m.source]} -> {report.addresses[m.target]}"
        )
    if not report.moves:
        print("nothing to move")
    elif not dry_run:
        print(f"{report.keys_moved} keys in {report.seconds:.2f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="brigade cluster", description="Redis Cluster tools (docs/redis.md)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bal = sub.add_parser(
        "balance",
        help="move rooms' slots so that no master carries much more than its share of the load",
    )
    bal.add_argument(
        "--redis-url",
        default=None,
        help=f"any node of the cluster (env REDIS_URL, default {DEFAULT_REDIS_URL})",
    )
    bal.add_argument("--sample-s", type=float, default=2.0, help="how long to measure (s)")
    bal.add_argument(
        "--tolerance",
        type=float,
        default=0.1,
        help="stop when no master is above (1 + this) x the mean load",
    )
    bal.add_argument("--max-moves", type=int, default=64, help="at most this many slot moves")
    bal.add_argument("--dry-run", action="store_true", help="measure and plan, move nothing")
    bal.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    url: str = args.redis_url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    try:
        report = balance(
            url,
            sample_s=args.sample_s,
            tolerance=args.tolerance,
            max_moves=args.max_moves,
            dry_run=args.dry_run,
        )
    except redis.RedisError as exc:
        print(f"brigade cluster balance: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_json(), sort_keys=True))
    else:
        _print(report, args.dry_run)
    return 0
