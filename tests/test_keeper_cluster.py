"""The keeper on a Redis Cluster: it follows every master, restores only the slots of a
master that lost its data, and follows a failover.

A real local cluster (3 masters, 3 replicas, brigade/rediscluster.py), a state
redis-server and a real ``brigade keeper`` process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from brigade.rediscluster import LocalRedisCluster
from brigade.redisserver import LocalRedis
from common import keys, redisclient
from keeper import durable
from tests.support import Process, processes, wait_for

ROOMS = [f"room{i}" for i in range(12)]


@pytest.fixture
def own_cluster() -> Iterator[LocalRedisCluster]:
    nodes = LocalRedisCluster()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def test_the_keeper_restores_one_emptied_master_and_follows_a_failover(
    own_cluster: LocalRedisCluster, output_dir: Path
) -> None:
    kept = LocalRedis()
    kept.start()
    client = redisclient.sync_client(own_cluster.url)
    store = redis.Redis(port=kept.port)
    try:
        with processes(output_dir) as started:
            env = {
                "REDIS_URL": own_cluster.url,
                "BB_STATE_REDIS_URL": kept.url,
                "BB_LOG_LEVEL": "INFO",
            }
            started.append(Process(["keeper"], env, output_dir, "keeper"))
            wait_for(lambda: client.exists(durable.MARKER), 20, "the keeper")
            for room in ROOMS:
                client.hset(keys.room_meta(room), mapping={"capacity": "7", "password_hash": ""})
                client.xadd(keys.room_in(room), {"d": b"audio"})
            masters = {own_cluster.master_of(keys.room_meta(r)) for r in ROOMS}
            assert len(masters) > 1, "the rooms should spread over the masters"
            # Changes on every master are copied (and the audio is not).
            wait_for(lambda: all(store.exists(keys.room_meta(r)) for r in ROOMS), 10, "rooms kept")
            assert not any(store.exists(keys.room_in(r)) for r in ROOMS)

            # One master loses its data (as when restarted empty before its replica took
            # over; its replica follows): only its rooms are restored, from the copy.
            emptied = own_cluster.master_of(keys.room_meta(ROOMS[0]))
            on_it = [r for r in ROOMS if own_cluster.master_of(keys.room_meta(r)) == emptied]
            node = own_cluster.node(emptied)
            node.flushall()
            node.close()
            wait_for(
                lambda: all(client.exists(keys.room_meta(r)) for r in ROOMS),
                15,
                "the emptied master's rooms restored",
            )
            assert {r.encode() for r in on_it} <= client.smembers(keys.ROOMS)
            assert client.hget(keys.room_meta(on_it[0]), "capacity") == b"7"

            # A master dies and its replica takes over: the keeper subscribes there.
            dead = own_cluster.master_of(keys.room_meta(ROOMS[-1]))
            own_cluster.kill(dead)
            wait_for(
                lambda: own_cluster.master_of(keys.room_meta(ROOMS[-1])) != dead,
                30,
                "the replica's promotion",
            )
            wait_for(lambda: _write_and_copied(client, store, ROOMS[-1]), 30, "a change copied")
            own_cluster.restart(dead)
    finally:
        client.close()
        store.close()
        kept.stop()


def _write_and_copied(client: redis.Redis, store: redis.Redis, room: str) -> bool:
    """Write the room's capacity (again: the first tries may meet the failover) and say
    whether the copy has it yet."""
    try:
        client.hset(keys.room_meta(room), "capacity", "9")
    except redisclient.SYNC_ERRORS:
        return False
    return store.hget(keys.room_meta(room), "capacity") == b"9"
