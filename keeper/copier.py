"""Moving durable keys between the audio Redis and the state Redis (DUMP / RESTORE).

``DUMP`` gives a key's value in Redis's own serialisation (a hash with every
field, a string, compressed with LZF when that helps) and ``RESTORE`` makes
the same key from it, with its time to live: the keeper needs to know no
record format.  Both servers must run the same major Redis version (a newer
server reads an older one's dumps; compose runs one image for both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common import keys
from keeper import durable

log = logging.getLogger(__name__)

BATCH: Final = 500
"""Keys per pipeline round trip when copying or restoring many."""


@dataclass
class Copied:
    """What one copy moved: keys written, keys deleted (gone from the source), payload bytes."""

    written: int = 0
    deleted: int = 0
    bytes: int = 0

    def add(self, other: Copied) -> None:
        self.written += other.written
        self.deleted += other.deleted
        self.bytes += other.bytes


async def copy(source: Redis, target: Redis, names: Iterable[str]) -> Copied:
    """Make ``target``'s keys ``names`` what they are in ``source`` (deleted when gone)."""
    names = list(names)
    done = Copied()
    for start in range(0, len(names), BATCH):
        batch = names[start : start + BATCH]
        async with source.pipeline(transaction=False) as pipe:
            for name in batch:
                pipe.dump(name)
                pipe.pttl(name)
            replies = await pipe.execute()
        async with target.pipeline(transaction=False) as pipe:
            for i, name in enumerate(batch):
                payload, ttl = replies[2 * i], int(replies[2 * i + 1])
                if payload is None or ttl == -2:
                    pipe.delete(name)
                    done.deleted += 1
                else:
                    pipe.restore(name, max(ttl, 0), payload, replace=True)
                    done.written += 1
                    done.bytes += len(payload)
            await pipe.execute()
    return done


async def durable_keys(client: Redis) -> AsyncIterator[str]:
    """Every durable key ``client`` holds (SCAN: the server keeps serving meanwhile)."""
    async for raw in client.scan_iter(match=durable.SCAN_MATCH, count=1000):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if durable.room_of(name) is not None:
            yield name


def _every(_key: str) -> bool:
    return True


async def sync(main: Redis, store: Redis, only: Callable[[str], bool] = _every) -> Copied:
    """Make the store hold exactly the durable keys of ``main`` (after the keeper was away);
    ``only`` the keys it accepts (a cluster's masters that kept their data)."""
    present: set[str] = set()
    done = Copied()
    batch: list[str] = []
    async for name in durable_keys(main):
        if not only(name):
            continue
        present.add(name)
        batch.append(name)
        if len(batch) >= BATCH:
            done.add(await copy(main, store, batch))
            batch = []
    done.add(await copy(main, store, batch))
    stale = [name async for name in durable_keys(store) if only(name) and name not in present]
    for start in range(0, len(stale), BATCH):
        await store.delete(*stale[start : start + BATCH])
        done.deleted += len(stale[start : start + BATCH])
    return done


@dataclass
class Restored:
    keys: int = 0
    kept: int = 0
    """Keys that were already back (written meanwhile by a mixer or a gateway): kept as they are."""
    rooms: int = 0
    bytes: int = 0


async def restore(store: Redis, main: Redis, only: Callable[[str], bool] = _every) -> Restored:
    """Put the store's durable keys back into ``main``, which lost them (restarted empty);
    ``only`` the keys it accepts (those of a cluster's masters that lost theirs).

    A key someone wrote meanwhile (a mixer re-asserting a room it owns, a
    gateway re-creating a room by name) is kept, except a room's password
    hash: the stored one wins, so a password room never opens by accident
    (the mixers' rule too). Every room restored joins ``bb:rooms`` and, unless
    a command makes it active, ``bb:rooms:idle`` from now on, so an unused room
    is still deleted after the idle time.
    """
    done = Restored()
    rooms: set[str] = set()
    batch: list[str] = []

    async def flush(names: list[str]) -> None:
        async with store.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.dump(name)
                pipe.pttl(name)
            replies = await pipe.execute()
        async with main.pipeline(transaction=False) as pipe:
            sent: list[str] = []
            for i, name in enumerate(names):
                payload, ttl = replies[2 * i], int(replies[2 * i + 1])
                if payload is None or ttl == -2:
                    continue
                pipe.restore(name, max(ttl, 0), payload)
                sent.append(name)
                done.bytes += len(payload)
            results = await pipe.execute(raise_on_error=False)
        for name, result in zip(sent, results, strict=True):
            if isinstance(result, ResponseError):
                if "BUSYKEY" not in str(result):
                    raise result
                done.kept += 1
                if durable.is_meta(name):
                    await _password_wins(store, main, name)
            else:
                done.keys += 1
            if durable.is_meta(name):
                room = durable.room_of(name)
                assert room is not None
                rooms.add(room)

    async for name in durable_keys(store):
        if not only(name):
            continue
        batch.append(name)
        if len(batch) >= BATCH:
            await flush(batch)
            batch = []
    if batch:
        await flush(batch)
    if rooms:
        now = time.time()
        async with main.pipeline(transaction=False) as pipe:
            pipe.sadd(keys.ROOMS, *rooms)
            pipe.zadd(keys.IDLE_ROOMS, dict.fromkeys(rooms, now), nx=True)
            await pipe.execute()
    done.rooms = len(rooms)
    return done


async def _password_wins(store: Redis, main: Redis, meta_key: str) -> None:
    stored = await store.hget(meta_key, "password_hash")
    if stored:
        await main.hset(meta_key, "password_hash", stored)
        log.warning("%s was re-created before the restore: its password hash restored", meta_key)
