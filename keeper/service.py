"""The keeper's loop: follow the audio Redis's changes to durable keys, copy them.

One cycle per connection to the audio Redis:

1. ask for keyspace notifications of the durable keys (``CONFIG SET
   notify-keyspace-events``) and subscribe to them, before anything else, so
   no change made during steps 2-3 is missed;
2. if the server lacks the keeper's marker it was restarted empty (or is
   new): restore the copy into it; otherwise copy it all over once (the
   keeper may have missed changes while away);
3. write the marker, then copy each changed key at most every ``copy_ms``.

A dropped connection (Redis restarted, the keeper's network) ends the cycle;
the next starts after a short back-off.  Notifications are fire-and-forget,
which is why every cycle starts with the full pass of step 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from common.backoff import Backoff
from common.process import REDIS_FAILURES
from common.redisclient import is_cluster
from common.settings import KeeperSettings
from keeper import copier, durable

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
    """Copies the durable keys of ``main`` to ``store`` and back after a restart."""

    def __init__(self, settings: KeeperSettings, main: Redis, store: Redis) -> None:
        self.settings = settings
        self.main = main
        self.store = store
        self.counters = Counters()
        self.dirty: set[str] = set()
        self.ready = asyncio.Event()
        """Set once a cycle has restored or checked the copy (for tests and start-up)."""

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                if is_cluster(self.main):
                    await self._stand_by(stop)
                else:
                    await self._cycle(stop)
                failures = 0
            except REDIS_FAILURES as exc:
                self.counters.redis_errors += 1
                failures += 1
                log.warning("keeper: Redis unavailable (%r); again shortly", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), BACKOFF.compute(failures))
        # The last changes (mixers write their rooms back when they stop).
        with contextlib.suppress(*REDIS_FAILURES):
            await self._flush()

    async def _cycle(self, stop: asyncio.Event) -> None:
        self.counters.cycles += 1
        current = await self.main.config_get("notify-keyspace-events")
        classes = durable.merged_classes(str(current.get("notify-keyspace-events", "")))
        await self.main.config_set("notify-keyspace-events", classes)
        pubsub = self.main.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(*durable.patterns())
            await self._recover()
            self.ready.set()
            listener = asyncio.create_task(self._listen(pubsub))
            stopper = asyncio.create_task(stop.wait())
            try:
                while not stop.is_set():
                    done, _ = await asyncio.wait(
                        {listener, stopper}, timeout=self.settings.copy_ms / 1000
                    )
                    if listener in done:
                        listener.result()  # the connection dropped: raise it
                    await self._flush()
            finally:
                for task in (listener, stopper):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, *REDIS_FAILURES):
                        await task
        finally:
            self.ready.clear()
            with contextlib.suppress(*REDIS_FAILURES):
                await pubsub.aclose()

    async def _stand_by(self, stop: asyncio.Event) -> None:
        """On a Redis Cluster: copy nothing (its nodes keep their own files), only say so.

        The marker is written again now and then, so ``--check`` and the
        processes waiting for it go on after the whole cluster was re-created.
        """
        if not self.ready.is_set():
            log.warning(
                "keeper: Redis is a cluster, whose nodes keep their own append-only files: "
                "standing by (docs/operations.md, 'What is persisted')"
            )
        await self.main.set(durable.MARKER, str(time.time()))
        self.ready.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)

    async def _recover(self) -> None:
        started = time.monotonic()
        if await self.main.exists(durable.MARKER):
            done = await copier.sync(self.main, self.store)
            self._count(done)
            log.info(
                "keeper: copy checked, %d key(s) written, %d deleted (%.0f ms)",
                done.written,
                done.deleted,
                (time.monotonic() - started) * 1000,
            )
        else:
            restored = await copier.restore(self.store, self.main)
            self.counters.restores += 1
            self.counters.keys_restored += restored.keys
            log.warning(
                "keeper: Redis had no marker (restarted empty, or new): restored %d key(s) "
                "of %d room(s), %d kept as found, %d bytes (%.0f ms)",
                restored.keys,
                restored.rooms,
                restored.kept,
                restored.bytes,
                (time.monotonic() - started) * 1000,
            )
        await self.main.set(durable.MARKER, str(time.time()))

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

    def summary(self) -> str:
        c = self.counters
        return (
            f"{c.cycles} cycle(s), {c.restores} restore(s) ({c.keys_restored} keys), "
            f"{c.keys_copied} key copies ({c.bytes_copied} bytes), {c.keys_deleted} deletions, "
            f"{c.redis_errors} Redis error(s)"
        )
