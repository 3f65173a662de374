"""What the mixer's maintenance reads from Redis, and its leases: claim and renew.

One maintenance round writes the heartbeat (common/heartbeat.py) and reads
what the planner asks (mixer/planner.py :class:`Ask`) in one round trip,
the lease renewals included; on a cluster, where redis-py refuses scripts in
a pipeline, the renewals go beside it, one EVALSHA per room.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from common import keys
from common.heartbeat import Heartbeat, mixer_statuses
from common.lease import RENEW_SCRIPT
from common.records import MixerStatus
from common.redisclient import is_cluster
from mixer.planner import SWEEP_BATCH, Ask, GatewaySeen, Now, Observed, PeerLoad

__all__ = ["Observer"]

_FIXED = 5
"""Replies before the renewals: set, zadd, zremrangebyscore, live mixers, active rooms."""


def _loads(peers: tuple[str, ...], beats: list[Any]) -> dict[str, PeerLoad]:
    """Each peer's load from its heartbeat (a peer whose heartbeat is gone or unreadable
    is left out: nothing is handed to it)."""
    return {
        peer: PeerLoad(rooms=len(status.rooms), max_rooms=status.max_rooms)
        for peer, status in mixer_statuses(peers, beats).items()
    }


class Observer:
    """The Redis side of the maintenance round for the mixer ``beat.ident``."""

    def __init__(self, redis: Redis, beat: Heartbeat, lease_ttl_ms: int) -> None:
        self.redis = redis
        self.beat = beat
        self.lease_ttl_ms = lease_ttl_ms
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._cluster = is_cluster(redis)

    async def observe(self, ask: Ask, now: Now, status: MixerStatus) -> Observed:
        """Write the heartbeat and read what ``ask`` asks, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            self.beat.queue(pipe, status, now.wall_s, ask.prune_before_s)
            pipe.zrangebyscore(keys.MIXERS, ask.live_since_s, "+inf")
            pipe.smembers(keys.ACTIVE_ROOMS)
            if not self._cluster:
                for room in ask.renew:
                    await self._renew_lease(room, client=pipe)
            for gw in ask.gateways:
                pipe.exists(keys.gateway_heartbeat(gw))
                pipe.zscore(keys.GATEWAYS, gw)
            for peer in ask.peers:
                pipe.get(keys.mixer_heartbeat(peer))
            if ask.idle_before_s is not None:
                pipe.zrangebyscore(
                    keys.IDLE_ROOMS, "-inf", ask.idle_before_s, start=0, num=SWEEP_BATCH
                )
            results = await pipe.execute()
        if self._cluster:
            # redis-py refuses scripts in a cluster pipeline: one EVALSHA per room,
            # their answers put where the pipeline's would have been.
            leases = await asyncio.gather(*(self._renew_lease(room) for room in ask.renew))
            results = [*results[:_FIXED], *leases, *results[_FIXED:]]
        renewed = _FIXED + len(ask.renew)
        answers = results[renewed : renewed + 2 * len(ask.gateways)]
        heard = renewed + 2 * len(ask.gateways)
        beats = results[heard : heard + len(ask.peers)]
        return Observed(
            live=frozenset(m.decode() for m in results[3]),
            active=frozenset(r.decode() for r in results[4]),
            leases=dict(zip(ask.renew, results[_FIXED:renewed], strict=True)),
            gateways={
                gw: GatewaySeen(alive=bool(alive), registered=registered is not None)
                for gw, alive, registered in zip(
                    ask.gateways, answers[0::2], answers[1::2], strict=True
                )
            },
            idle_due=tuple(bytes(r).decode() for r in results[-1])
            if ask.idle_before_s is not None
            else (),
            peers=_loads(ask.peers, beats),
        )

    async def _renew_lease(self, room: str, client: Any = None) -> Any:
        return await self._renew(
            keys=[keys.room_lease(room)], args=[self.beat.ident, self.lease_ttl_ms], client=client
        )

    async def held(self, rooms: tuple[str, ...]) -> dict[str, bool]:
        """Whether each room's lease is held (by anyone)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.exists(keys.room_lease(room))
            held = await pipe.execute()
        return {room: bool(h) for room, h in zip(rooms, held, strict=True)}

    async def claim(self, room: str) -> bool:
        """Take the free lease of ``room``; False when another mixer was quicker."""
        return bool(
            await self.redis.set(
                keys.room_lease(room), self.beat.ident, nx=True, px=self.lease_ttl_ms
            )
        )
