"""The one place every process gets its Redis client: one Redis or a Redis Cluster.

``REDIS_URL`` may name one Redis or any node of a Redis Cluster: the node is
asked once (``INFO cluster`` → ``cluster_enabled:1``) and a cluster gets
redis-py's own cluster client, which learns the topology and follows it
through failovers (no routing of ours).  Both pin RESP2, so reply shapes
never change under :mod:`common.streams`.

The cluster client has the same command methods as the plain one; it is typed
as :class:`redis.asyncio.Redis` here so the services keep one signature, and
the few places where the two differ (reads across rooms, scripts next to
other commands) ask :func:`is_cluster`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final, cast

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError
from redis.typing import EncodableT

from common import keys
from common.streams import FIELD, xread_streams

log = logging.getLogger(__name__)

REDIS_ERRORS: Final = (RedisError, RedisClusterException)
"""What a Redis call raises when Redis (or part of a cluster) is unavailable:
``RedisClusterException`` (no node for a slot, topology not yet learned) is not
a ``RedisError``."""

SYNC_ERRORS: Final = REDIS_ERRORS
"""The same for the blocking clients (the exception classes are shared)."""


def cluster_enabled(url: str, timeout_s: float = 2.0) -> bool:
    """Whether the node at ``url`` is part of a Redis Cluster (False when unreachable)."""
    probe = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        info: dict[str, Any] = probe.info("cluster")
    except RedisError as exc:
        log.warning("could not ask %s whether it is a cluster (%s): using one Redis", url, exc)
        return False
    finally:
        probe.close()
    return bool(int(info.get("cluster_enabled", 0) or 0))


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster (async or sync)."""
    return isinstance(client, RedisCluster | SyncRedisCluster)


def async_client(
    url: str,
    *,
    socket_timeout: float = 5.0,
    socket_connect_timeout: float = 2.0,
    max_connections: int | None = None,
    retry: Retry | None = None,
    health_check_interval: float = 0,
) -> Redis:
    """An asyncio client for ``url``: plain, or a cluster client when ``url`` is a cluster node.

    ``max_connections`` bounds the pool (per node on a cluster) and makes a plain
    client's pool blocking: a burst waits for a free connection instead of failing.
    """
    if cluster_enabled(url, socket_connect_timeout):
        cluster = RedisCluster.from_url(
            url,
            protocol=2,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            max_connections=max_connections or 100,
            retry=retry,
            health_check_interval=health_check_interval,
        )
        log.info("Redis at %s is a cluster node: using the cluster client", url)
        return cast(Redis, cluster)
    if max_connections is None:
        return Redis.from_url(
            url,
            protocol=2,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=health_check_interval,
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5.0,
        protocol=2,
        socket_connect_timeout=socket_connect_timeout,
        socket_timeout=socket_timeout,
        retry=retry,
        health_check_interval=health_check_interval,
    )
    return Redis.from_pool(pool)


def sync_client(
    url: str, *, socket_timeout: float = 3.0, socket_connect_timeout: float = 2.0
) -> redis.Redis:
    """A blocking client for ``url`` (``brigade inspect``, ``--check``), cluster-aware."""
    if cluster_enabled(url, socket_connect_timeout):
        return cast(
            redis.Redis,
            SyncRedisCluster.from_url(
                url,
                protocol=2,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
            ),
        )
    return redis.Redis.from_url(
        url,
        protocol=2,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
    )


POLL_S: Final = 0.005
"""On a cluster, how long a blocking read over several slots waits before asking again."""


def _xread_args(streams: Mapping[str, bytes], count: int, block_ms: int | None) -> list[EncodableT]:
    """XREAD's arguments as the server reads them (what ``Redis.xread`` sends)."""
    args: list[EncodableT] = ["XREAD", "COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    return [*args, "STREAMS", *streams.keys(), *streams.values()]


async def _slot_owner(client: RedisCluster, key: str) -> ClusterNode:
    """The master redis-py routes ``key``'s slot to (its own slot table, loaded on first use)."""
    if not client.nodes_manager.slots_cache:
        await client.initialize()
    node = client.get_node_from_key(key)
    assert node is not None  # a master is asked for, never a replica
    return node


async def xread_keys(
    client: Redis,
    streams: Mapping[str, bytes],
    *,
    count: int,
    block_ms: int | None = None,
    poll_s: float = POLL_S,
) -> object:
    """XREAD over ``streams`` (key → last id seen), on one Redis or a cluster.

    One Redis: one XREAD, as always.  A cluster refuses an XREAD whose keys hash
    to different slots, so the keys are grouped by slot (a room's keys share
    one) and each group is read by its own XREAD, sent together as one
    pipeline that redis-py splits per node.  Each XREAD names its node
    (``target_nodes=``, the slot's master in redis-py's own slot table): XREAD's
    keys follow a ``STREAMS`` keyword, which redis-py cannot find from the
    command table, so routing it by its keys costs a ``COMMAND GETKEYS`` round
    trip per XREAD.  A named node that no longer holds the slot answers MOVED
    or ASK and redis-py sends that XREAD again routed by its keys (a failover,
    a slot moved by ``brigade cluster balance``).  Blocking cannot span those
    reads: when they find nothing, this waits ``poll_s`` (at most ``block_ms``)
    and returns None, and the caller reads again.  The reply has XREAD's RESP2 shape.
    """
    if not is_cluster(client):
        return await client.xread(xread_streams(streams), count=count, block=block_ms)
    cluster = cast(RedisCluster, client)
    groups: dict[int, dict[str, bytes]] = {}
    for key, cursor in streams.items():
        groups.setdefault(key_slot(key.encode()), {})[key] = cursor
    if len(groups) == 1:
        node = await _slot_owner(cluster, next(iter(streams)))
        return await cluster.execute_command(
            *_xread_args(streams, count, block_ms), target_nodes=node
        )
    async with cluster.pipeline(transaction=False) as pipe:
        for group in groups.values():
            node = await _slot_owner(cluster, next(iter(group)))
            pipe.execute_command(*_xread_args(group, count, None), target_nodes=node)
        replies = await pipe.execute()
    merged = [item for reply in replies if reply for item in reply]
    if merged:
        return merged
    if block_ms:
        await asyncio.sleep(min(poll_s, block_ms / 1000))
    return None


async def command_room(client: Redis, room: str, data: bytes) -> None:
    """Append a command to ``room``'s control stream and make the room active.

    One Redis: both in one transaction, so a mixer retiring the room sees both
    or neither.  A cluster cannot join the room's slot and the global active
    set in one transaction: the command is written first and the room made
    active after, and a retiring mixer re-reads the control stream after taking
    the room out of the active set (mixer/service.py), so a command is never
    left waiting in an inactive room.
    """
    if not is_cluster(client):
        async with client.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.ACTIVE_ROOMS, room)
            pipe.zrem(keys.IDLE_ROOMS, room)
            pipe.xadd(keys.room_ctl(room), {FIELD: data}, maxlen=keys.CTL_MAXLEN)
            await pipe.execute()
        return
    await client.xadd(keys.room_ctl(room), {FIELD: data}, maxlen=keys.CTL_MAXLEN)
    async with client.pipeline(transaction=False) as pipe:
        pipe.sadd(keys.ACTIVE_ROOMS, room)
        pipe.zrem(keys.IDLE_ROOMS, room)
        await pipe.execute()
