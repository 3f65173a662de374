"""The keeper's loop: follow the audio Redis's changes to durable keys, copy them.

One cycle per connection to the audio Redis (to each master of a cluster,
keeper/nodes.py):

1. ask for keyspace notifications of the durable keys (``CONFIG SET
   notify-keyspace-events``) and subscribe to them on every server, before
   anything else, so no change made during steps 2-3 is missed;
2. a server that lacks its marker was restarted empty (or is new): restore
   the copy of its keys into it; the others' keys are copied over once (the
   keeper may have missed changes while away);
3. write the markers, then copy each changed key at most every ``copy_ms``,
   and look at the markers (and a cluster's masters) as often.

A dropped connection (Redis restarted, the keeper's network), a marker gone
or the masters changed ends the cycle; the next starts after a short
back-off (a failure of either Redis is logged once, and its end once:
common/process.py's RedisHealth).  Notifications are fire-and-forget, which
is why every cycle starts with the full pass of step 2.

Beside the cycles, the keeper's heartbeat (``bb:keeper:{id}``, a
:class:`common.records.KeeperStatus`) is written to the audio Redis every
third of its TTL and dropped at the stop, as every process's is
(common/heartbeat.py); common/process.py claims the id and runs the keeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError

from common import redisclient
from common.backoff import Backoff
from common.heartbeat import Heartbeat
from common.process import REDIS_FAILURES, RedisHealth
from common.records import KeeperStatus
from common.settings import KeeperSettings
from keeper import copier, durable, nodes

log = logging.getLogger(__name__)

BACKOFF = Backoff(0.05, 1.0)


@dataclass
class Counters:
    cycles: int = 0
    restores: int = 0
    keys_restored: int = 0
    keys_copied: int = 0
    keys_deleted: int = 0
    bytes_copied: int = 0
    redis_errors: int = 0


class Keeper:
    """Copies the durable keys of ``main`` to ``store`` and back after a restart.

    Without ``store`` (as common/process.py makes it) the keeper opens the client of
    ``BB_STATE_REDIS_URL`` itself and closes it when :meth:`run` ends.
    """

    def __init__(self, settings: KeeperSettings, main: Redis, store: Redis | None = None) -> None:
        self.settings = settings
        self.main = main
        self._owns_store = store is None
        self.store = redisclient.async_client(settings.state_redis_url) if store is None else store
        self.counters = Counters()
        self.dirty: set[str] = set()
        self.beat = Heartbeat.keeper(settings.keeper_id, settings.heartbeat_ttl_ms)
        self.servers = 0
        self.last_copy: float | None = None
        self.last_restore: float | None = None
        self._started = time.time()
        self.health = RedisHealth(BACKOFF)
        self._failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        beating = asyncio.create_task(self._heartbeat(stop), name="keeper-heartbeat")
        try:
            while not stop.is_set():
                try:
                    await self._cycle(stop)
                    self._failures = 0
                except REDIS_FAILURES as exc:
                    self.counters.redis_errors += 1
                    self._failures += 1
                    await self.health.down(exc, self._failures)  # logged once, then back-off
            # The last changes (mixers write their rooms back when they stop).
            with contextlib.suppress(*REDIS_FAILURES):
                await self._flush()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            with contextlib.suppress(*REDIS_FAILURES):
                await self.beat.drop(self.main)  # the id is free at once
            if self._owns_store:
                with contextlib.suppress(*REDIS_FAILURES):
                    await self.store.aclose()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Announce this keeper (``bb:keeper:{id}``) every third of the heartbeat TTL."""
        while not stop.is_set():
            try:
                await self.beat.beat(self.main, self.status(), time.time())
            except REDIS_FAILURES as exc:  # the cycles count and log Redis being away
                log.debug("keeper heartbeat failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.beat.ttl_ms / 3000)

    def status(self) -> KeeperStatus:
        return KeeperStatus(
            id=self.settings.keeper_id,
            pid=os.getpid(),
            started=self._started,
            servers=self.servers,
            dirty=len(self.dirty),
            last_copy=self.last_copy,
            last_restore=self.last_restore,
            counters=dataclasses.asdict(self.counters),
        )

    async def _cycle(self, stop: asyncio.Event) -> None:
        """One pass over the current servers (ends when one drops, loses its marker or,
        on a cluster, when the masters change)."""
        self.counters.cycles += 1
        found = await nodes.discover(self.main)
        self.servers = len(found)
        clients = [node.client(self.main) for node in found]
        pubsubs: list[PubSub] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            for client in clients:
                await self._notify(client)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsubs.append(pubsub)
                await pubsub.psubscribe(*durable.patterns())
            await self._recover(found)
            self._failures = 0
            self.health.up()
            tasks = [asyncio.create_task(self._listen(ps)) for ps in pubsubs]
            tasks.append(asyncio.create_task(self._until(stop)))
            while not stop.is_set():
                done, _ = await asyncio.wait(tasks, timeout=self.settings.copy_ms / 1000)
                for task in done:
                    task.result()  # a connection dropped: raise it
                await self._flush()
                if not stop.is_set() and await self._changed(found):
                    return
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, *REDIS_FAILURES):
                    await task
            for pubsub in pubsubs:
                with contextlib.suppress(*REDIS_FAILURES):
                    await pubsub.aclose()
            for client in clients:
                if client is not self.main:
                    with contextlib.suppress(*REDIS_FAILURES):
                        await client.aclose()

    @staticmethod
    async def _notify(client: Redis) -> None:
        """Turn on the notifications the keeper needs, keeping what was set."""
        try:
            current = await client.config_get("notify-keyspace-events")
            was = str(current.get("notify-keyspace-events", ""))
            classes = durable.merged_classes(was)
            if set(classes) != set(was):
                await client.config_set("notify-keyspace-events", classes)
        except ResponseError as exc:  # CONFIG refused (a managed Redis): the operator's part
            log.warning(
                "keeper: cannot set notify-keyspace-events (%s); it must include %s",
                exc,
                durable.NOTIFY_CLASSES,
            )

    @staticmethod
    async def _until(stop: asyncio.Event) -> None:
        await stop.wait()

    async def _changed(self, found: list[nodes.Node]) -> bool:
        """Whether a server lost its marker (emptied without closing our connection:
        FLUSHALL, or a master restarted empty between two looks) or, on a cluster,
        the masters changed (a failover): then a new cycle starts."""
        async with self.main.pipeline(transaction=False) as pipe:
            for node in found:
                pipe.exists(node.marker)
            present = await pipe.execute()
        if not all(present):
            log.warning("keeper: a Redis server lost its marker: restoring")
            return True
        if len(found) > 1 or found[0].slots:
            now = await nodes.discover(self.main)
            if [(n.host, n.port, n.slots) for n in now] != [
                (n.host, n.port, n.slots) for n in found
            ]:
                log.warning("keeper: the cluster's masters changed: subscribing again")
                return True
        return False

    async def _recover(self, found: list[nodes.Node]) -> None:
        started = time.monotonic()
        async with self.main.pipeline(transaction=False) as pipe:
            for node in found:
                pipe.exists(node.marker)
            present = await pipe.execute()
        lost = [node for node, here in zip(found, present, strict=True) if not here]
        kept = [node for node, here in zip(found, present, strict=True) if here]
        if kept:
            done = await copier.sync(
                self.main, self.store, lambda key: any(n.holds(key) for n in kept)
            )
            self._count(done)
            log.info(
                "keeper: copy checked on %d server(s), %d key(s) written, %d deleted (%.0f ms)",
                len(kept),
                done.written,
                done.deleted,
                (time.monotonic() - started) * 1000,
            )
        if lost:
            restored = await copier.restore(
                self.store, self.main, lambda key: any(n.holds(key) for n in lost)
            )
            self.counters.restores += 1
            self.counters.keys_restored += restored.keys
            self.last_restore = time.time()
            log.warning(
                "keeper: %d Redis server(s) had no marker (restarted empty, or new): "
                "restored %d key(s) of %d room(s), %d kept as found, %d bytes (%.0f ms)",
                len(lost),
                restored.keys,
                restored.rooms,
                restored.kept,
                restored.bytes,
                (time.monotonic() - started) * 1000,
            )
        stamp = str(time.time())
        async with self.main.pipeline(transaction=False) as pipe:
            for node in found:
                pipe.set(node.marker, stamp)
            pipe.set(durable.MARKER, stamp)  # what --check and brigade up look for
            await pipe.execute()

    async def _listen(self, pubsub: PubSub) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "pmessage":
                continue
            channel = message["channel"]
            key = durable.key_of_channel(
                channel.decode() if isinstance(channel, bytes) else str(channel)
            )
            if key is not None:
                self.dirty.add(key)
        raise ConnectionError("keyspace notifications ended")

    async def _flush(self) -> None:
        if not self.dirty:
            return
        names, self.dirty = self.dirty, set()
        try:
            self._count(await copier.copy(self.main, self.store, sorted(names)))
        except BaseException:
            self.dirty |= names  # copied next time (or by the next cycle's full pass)
            raise

    def _count(self, done: copier.Copied) -> None:
        self.counters.keys_copied += done.written
        self.counters.keys_deleted += done.deleted
        self.counters.bytes_copied += done.bytes
        if done.written or done.deleted:
            self.last_copy = time.time()

    def summary(self) -> str:
        c = self.counters
        return (
            f"{c.cycles} cycle(s), {c.restores} restore(s) ({c.keys_restored} keys), "
            f"{c.keys_copied} key copies ({c.bytes_copied} bytes), {c.keys_deleted} deletions, "
            f"{c.redis_errors} Redis error(s)"
        )
