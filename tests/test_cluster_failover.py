"""A Redis Cluster master dies mid-song: its replica takes over, the song goes on.

Three masters and three replicas of the test's own (brigade/rediscluster.py),
two mixers and two gateways pointed at one node.  Ann leads and sings in bucket
1, Bob listens in bucket 2; the master holding the room is SIGKILLed.  After
the replica's promotion Bob must hear Ann again (audio sung after the kill), and
the room's members, song and meta must still be there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from brigade.rediscluster import LocalRedisCluster
from common import keys, redisclient
from common.clock import now_samples
from tests.support import cluster
from tests.test_gateway_e2e import Peer, Samples, Voice, start_song, until

LOUD = 0.05
"""RMS of a 20 ms frame of Ann's tone (0.3 peak, so about 0.2) against silence."""
ENOUGH = 25
"""Half a second of Ann's tone heard (frames): she is heard, not a stray frame."""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def loud_after(frames: dict[int, Samples], position: int) -> int:
    """How many frames at or after ``position`` carry Ann's tone."""
    return sum(
        1
        for q, frame in frames.items()
        if q >= position and float(np.sqrt(np.mean(np.square(frame)))) > LOUD
    )


async def test_the_last_bucket_keeps_hearing_the_first_when_the_rooms_master_dies(
    own_cluster: LocalRedisCluster, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    env = {"REDIS_URL": own_cluster.url, "BB_LOG_LEVEL": "INFO"}
    with cluster(env, tmp_path, "f") as started:
        ws = [url.replace("http://", "ws://") + "/ws" for url in started.urls]
        ann, bob = Peer(http, ws[0]), Peer(http, ws[1])
        await ann.join("tones", "Ann")
        await bob.join("tones", "Bob")
        start = await start_song(ann, [(ann, 1), (bob, 2)])
        delay_bob = int(bob.me()["delay"])
        singing = Voice(ann, 440, start)
        singing.start()
        try:
            await until(
                lambda: loud_after(bob.heard(delay_bob), start) >= ENOUGH,
                "Bob to hear Ann before the failover",
                timeout_s=20,
            )
            victim = own_cluster.master_of(keys.room_in("tones"))
            killed_at = now_samples()
            own_cluster.kill(victim)
            await until(
                lambda: loud_after(bob.heard(delay_bob), killed_at) >= ENOUGH,
                "Bob to hear Ann again after the room's master was killed",
                timeout_s=60,
            )
        finally:
            await singing.stop()
        assert victim not in own_cluster.masters_now()
        assert own_cluster.master_of(keys.room_in("tones")) != victim
        # The room's state survived on the promoted replica.
        client = redisclient.sync_client(own_cluster.url)
        try:
            assert client.hgetall(keys.room_meta("tones"))
            members = client.hgetall(keys.room_members("tones"))
            assert {ann.singer.encode(), bob.singer.encode()} <= set(members)
            assert client.hgetall(keys.room_song("tones"))
        finally:
            client.close()
        names = {m["name"] for m in bob.state()["members"]}
        assert {"Ann", "Bob"} <= names
        for peer in (ann, bob):
            assert not [e for e in peer.errors() if e.get("fatal")], peer.errors()
            await peer.close()
