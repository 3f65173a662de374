"""The audio Redis as the keeper sees it: one server, or each master of a cluster.

Keyspace notifications are per server, so the keeper subscribes on every
master; and each master carries a marker of its own, a key whose slot it
serves, so that one master restarted empty (its replica then copying the
empty data set) is found and only its slots are restored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from common.redisclient import is_cluster
from keeper import durable


@dataclass(frozen=True)
class Node:
    """One server of the audio Redis: where to subscribe, and which keys it holds."""

    host: str
    port: int
    marker: str
    slots: frozenset[int] = field(default_factory=frozenset)
    """Its slots on a cluster; empty for one Redis (it holds every key)."""

    def holds(self, key: str) -> bool:
        return not self.slots or key_slot(key.encode()) in self.slots

    def client(self, main: Redis) -> Redis:
        """A plain connection to this server (for CONFIG and its notifications)."""
        if not self.slots:
            return main
        return Redis(host=self.host, port=self.port, protocol=2, socket_connect_timeout=2)


def marker_for(slots: frozenset[int]) -> str:
    """``bb:keeper:{N}``, the first such name whose slot is one of ``slots``."""
    n = 0
    while True:
        name = f"{durable.MARKER}:{{{n}}}"
        if key_slot(name.encode()) in slots:
            return name
        n += 1


def masters(slots_reply: Mapping[tuple[int, int], Mapping[str, Any]]) -> list[Node]:
    """The masters, from redis-py's parsed ``CLUSTER SLOTS`` (``{(start, end): {"primary":
    (host, port), ...}}``)."""
    owned: dict[tuple[str, int], set[int]] = {}
    for (start, end), entry in slots_reply.items():
        host, port = entry["primary"][:2]
        owned.setdefault((str(host), int(port)), set()).update(range(int(start), int(end) + 1))
    return [
        Node(host, port, marker_for(frozenset(s)), frozenset(s))
        for (host, port), s in sorted(owned.items())
    ]


async def discover(main: Redis) -> list[Node]:
    """Every master of ``main`` right now (one Node for one Redis)."""
    if not is_cluster(main):
        return [Node("", 0, durable.MARKER)]
    cluster = cast(RedisCluster, main)
    reply = await cluster.execute_command("CLUSTER SLOTS", target_nodes=RedisCluster.RANDOM)
    return masters(reply)
