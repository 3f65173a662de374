"""A process's heartbeat: its status under its id with a TTL, written the same way by all.

Every long-running process announces itself under ``bb:{kind}:{id}`` (a
msgpack status record that expires after ``ttl_ms``); mixers and gateways
also keep a score in their kind's registry (``bb:mixers``, ``bb:gateways``:
id -> unix time of the last beat), which lets others tell a dead process
(registered, key gone) from one that never was. Recorders and keepers keep no
registry.

The beat is queued on a pipeline the caller gives, so a service folds it into
a round trip it makes anyway (the mixer's maintenance read); it is dropped at
shutdown, so the id is free at once; the start-up id claim and ``--check``
read the same key (common/process.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis

from common import keys, records
from common.errors import ValidationError
from common.records import MixerStatus

__all__ = ["Heartbeat", "mixer_statuses"]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Who a process is (kind and id) and where its heartbeat lives."""

    kind: str
    ident: str
    key: str
    ttl_ms: int
    registry: str | None = None
    """The kind's sorted set of ids by last beat (None: the kind keeps none)."""

    @classmethod
    def mixer(cls, ident: str, ttl_ms: int) -> Heartbeat:
        return cls("mixer", ident, keys.mixer_heartbeat(ident), ttl_ms, keys.MIXERS)

    @classmethod
    def gateway(cls, ident: str, ttl_ms: int) -> Heartbeat:
        return cls("gateway", ident, keys.gateway_heartbeat(ident), ttl_ms, keys.GATEWAYS)

    @classmethod
    def recorder(cls, ident: str, ttl_ms: int) -> Heartbeat:
        return cls("recorder", ident, keys.recorder_heartbeat(ident), ttl_ms)

    @classmethod
    def keeper(cls, ident: str, ttl_ms: int) -> Heartbeat:
        return cls("keeper", ident, keys.keeper_heartbeat(ident), ttl_ms)

    def queue(
        self,
        pipe: Any,
        status: msgspec.Struct,
        now_s: float,
        prune_before_s: float | None = None,
    ) -> None:
        """Queue one beat on ``pipe``: the status with its TTL, and the registry's score
        (pruning the entries older than ``prune_before_s``)."""
        pipe.set(self.key, records.encode(status), px=self.ttl_ms)
        if self.registry is not None:
            pipe.zadd(self.registry, {self.ident: now_s})
            if prune_before_s is not None:
                pipe.zremrangebyscore(self.registry, "-inf", prune_before_s)

    async def beat(
        self,
        redis: Redis,
        status: msgspec.Struct,
        now_s: float,
        prune_before_s: float | None = None,
    ) -> None:
        """One beat in a round trip of its own."""
        async with redis.pipeline(transaction=False) as pipe:
            self.queue(pipe, status, now_s, prune_before_s)
            await pipe.execute()

    async def drop(self, redis: Redis) -> None:
        """Withdraw the heartbeat (at shutdown: the id is free at once); raises RedisError."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.key)
            if self.registry is not None:
                pipe.zrem(self.registry, self.ident)
            await pipe.execute()


def mixer_statuses(ids: list[str] | tuple[str, ...], raws: list[Any]) -> dict[str, MixerStatus]:
    """The mixers' heartbeats read for ``ids`` (one GET each), decoded; a heartbeat that
    is gone (None) or unreadable is left out."""
    statuses: dict[str, MixerStatus] = {}
    for mixer_id, raw in zip(ids, raws, strict=True):
        if raw is None:
            continue
        try:
            statuses[mixer_id] = records.decode(raw, MixerStatus)
        except ValidationError:
            continue
    return statuses
