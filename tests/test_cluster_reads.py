"""Reads across rooms on a Redis Cluster: one XREAD per room, each sent to its slot's
master without asking Redis where its keys are (no ``COMMAND GETKEYS``), and still
answered after a room's slot moved to another master.
"""

from __future__ import annotations

from typing import Any

from brigade.clusterbalance import ClusterMap, move_slot, room_slot
from brigade.rediscluster import LocalRedisCluster
from brigade.slotplan import Move
from common import keys, redisclient
from common.streams import FIELD, parse_xread
from tests.conftest import flush

ROOMS = [f"reads{i}" for i in range(24)]


def getkeys_calls(cluster: LocalRedisCluster) -> int:
    """``COMMAND GETKEYS`` calls answered by every node so far."""
    calls = 0
    for port in cluster.live_ports():
        node = cluster.node(port)
        try:
            stats: dict[str, Any] = node.info("commandstats")
        finally:
            node.close()
        calls += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    return calls


async def test_reads_across_rooms_name_their_nodes_and_follow_a_moved_slot(
    redis_cluster: LocalRedisCluster,
) -> None:
    flush(redis_cluster)
    client = redisclient.async_client(redis_cluster.url)
    try:
        for room in ROOMS:
            await client.xadd(keys.room_in(room), {FIELD: room.encode()})
        cursors = {keys.room_in(room): b"0-0" for room in ROOMS}
        before = getkeys_calls(redis_cluster)
        many = parse_xread(await redisclient.xread_keys(client, cursors, count=10))
        one = parse_xread(
            await redisclient.xread_keys(
                client, {keys.room_in(ROOMS[0]): b"0-0"}, count=10, block_ms=100
            )
        )
        assert getkeys_calls(redis_cluster) == before
        assert {key: [d for _, d in entries] for key, entries in many} == {
            keys.room_in(room): [room.encode()] for room in ROOMS
        }
        assert [d for _, d in one[0][1]] == [ROOMS[0].encode()]

        # The client's slot table is now out of date for one room: still read.
        cmap = ClusterMap.read(redis_cluster.url)
        slot = room_slot(ROOMS[0])
        source = cmap.owner[slot]
        target = next(m for m in sorted(cmap.masters) if m != source)
        move_slot(cmap, Move(slot, source, target, 0.0))
        try:
            assert redis_cluster.master_of(keys.room_in(ROOMS[0])) == cmap.masters[target].port
            again = parse_xread(await redisclient.xread_keys(client, cursors, count=10))
            assert len(again) == len(ROOMS)
        finally:
            move_slot(cmap, Move(slot, target, source, 0.0))
    finally:
        await client.aclose()
