"""The mixer service: the asyncio adapter around :class:`mixer.room.RoomMixer`.

Two loops share one Redis connection pool:

* the **tick** loop, scheduled on the absolute clock (``tick_ms``), reads the
  control and audio streams of every owned room in one ``XREAD``, applies
  them, emits the due tap windows and writes everything back in one
  pipeline; every ``publish_ms`` it also publishes occupancy, stats, levels
  and member counters;
* the **maintenance** loop (heartbeat, lease renewal, claiming free rooms).

Every Redis failure is retried with bounded back-off; nothing a gateway
sends can stop either loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

import msgspec
from redis.asyncio import Redis

from common import keys, records
from common.backoff import Backoff
from common.clock import now_samples
from common.constants import SAMPLE_RATE, seconds_to_samples
from common.errors import ValidationError
from common.lease import (
    DELETE_SCRIPT,
    RELEASE_SCRIPT,
    RENEW_SCRIPT,
    RETIRE_ROOM_SCRIPT,
    RETIRE_SCRIPT,
    LeaseResult,
    preferred_owner,
)
from common.records import Checkpoint, MixerStatus
from common.redisclient import REDIS_ERRORS, is_cluster, xread_keys
from common.settings import MixerSettings
from common.streams import Entry, parse_xread
from common.wire import encode_tap
from mixer import store
from mixer.host import HostCounters, HostTiming, Publish, RoomHost
from mixer.metrics import TickTimes
from mixer.room import RoomState

log = logging.getLogger(__name__)

READ_COUNT: Final = 2000
"""Most entries read from one stream per tick (the rest wait for the next)."""
MAINTENANCE_S: Final = 0.5
CLAIM_GRACE_S: Final = 1.0
"""A free room not claimed by its preferred mixer within this long is anyone's."""
OCC_TTL_MS: Final = 10_000
CHECKPOINT_TTL_MS: Final = 30_000
"""A checkpoint outlives its owner long enough for another mixer to take the room over."""
_NOTHING: Final[tuple[list[Entry], list[Entry]]] = ([], [])
REDIS_FAILURES: Final = (*REDIS_ERRORS, RuntimeError)
"""What a Redis call raises when Redis is gone. With uvloop, redis-py has been seen
raising a bare RuntimeError for a server that accepts a connection and closes it
(client limit, protected mode): that is Redis being unavailable too, not a reason
to exit."""
SWEEP_S: Final = 10.0
"""How often a mixer looks for rooms idle long enough to delete."""
SWEEP_BATCH: Final = 50
STEMS_KEEP_MS: Final = 5_000
"""While a song's stems are recorded, its input stream keeps this much (a recorder that
takes over reads them; the tap streams keep about as much)."""


@dataclass
class ServiceCounters:
    """The loop's own totals; the rooms' totals are in :class:`HostCounters`."""

    ticks: int = 0
    tick_overruns: int = 0
    tick_errors: int = 0
    redis_errors: int = 0
    rooms_claimed: int = 0
    rooms_restored: int = 0
    """Claims that carried on a ring from another mixer's checkpoint (a failover mid-song)."""
    rooms_lost: int = 0
    rooms_released: int = 0
    rooms_deleted: int = 0


@dataclass
class OwnedRoom:
    """A room this mixer owns: its pure host and its stream cursors."""

    host: RoomHost
    in_cursor: bytes
    ctl_cursor: bytes
    checkpoint_cursor: bytes | None = None
    """The input cursor of the last checkpoint: the input stream keeps what came after,
    so a new owner can replay it."""

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def state(self) -> RoomState:
        return self.host.state


class MixerService:
    """Owns rooms through leases and runs their mixers against Redis."""

    def __init__(self, settings: MixerSettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.rooms: dict[str, OwnedRoom] = {}
        self.counters = ServiceCounters()
        self.tick_times = TickTimes()
        self.room_counters = HostCounters()
        self.started = time.time()
        self._nonce = f"{os.getpid()}-{time.time_ns()}"
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)
        self._retire = redis.register_script(RETIRE_SCRIPT)
        self._delete = redis.register_script(DELETE_SCRIPT)
        self._retire_room = redis.register_script(RETIRE_ROOM_SCRIPT)
        self._cluster = is_cluster(redis)
        self._next_sweep = 0.0
        self._free_since: dict[str, float] = {}
        self._key_index: dict[str, tuple[str, bool]] = {}
        self._timing = HostTiming(
            publish=seconds_to_samples(settings.publish_ms / 1000),
            levels=seconds_to_samples(settings.levels_ms / 1000),
            grace=round(settings.reconnect_grace_s * SAMPLE_RATE),
            checkpoint=seconds_to_samples(settings.checkpoint_ms / 1000),
        )
        self._healthy = True
        self._backoff = Backoff(0.05, 2.0)
        self._material_period_s = min(60.0, settings.material_ttl_s / 3)
        self._material_due = 0.0

    # ---------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then hand the rooms back cleanly."""
        await self._wait_for_free_id(stop)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._tick_loop(stop))
                group.create_task(self._maintenance_loop(stop))
        finally:
            await self._shutdown()

    async def _wait_for_free_id(self, stop: asyncio.Event) -> None:
        """Refuse to run beside a live process using the same mixer id."""
        deadline = time.monotonic() + self.settings.heartbeat_ttl_ms / 1000 + 1
        while not stop.is_set():
            try:
                raw = await self.redis.get(keys.mixer_heartbeat(self.settings.mixer_id))
            except REDIS_FAILURES as exc:
                await self._redis_down(exc)
                continue
            if raw is None:
                return
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"mixer id {self.settings.mixer_id!r} is in use by a live mixer; "
                    "give each mixer its own BB_MIXER_ID"
                )
            await asyncio.sleep(0.25)

    async def _tick_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        period = self.settings.tick_ms / 1000
        next_at = loop.time()
        failures = 0
        while not stop.is_set():
            next_at += period
            try:
                started = loop.time()
                talked = await self.tick()
                self.tick_times.observe(loop.time() - started)
                if talked:
                    failures = 0
                    self._redis_up()
            except REDIS_FAILURES as exc:
                failures += 1
                await self._redis_down(exc, failures)
                next_at = loop.time()
            except Exception:
                # One bad tick must not stop the mixer: log it with its traceback, count it.
                self.counters.tick_errors += 1
                log.exception("tick failed")
            delay = next_at - loop.time()
            if delay < 0:
                self.counters.tick_overruns += 1
                if delay < -period:
                    next_at = loop.time()  # skip the missed ticks instead of bursting
                delay = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _maintenance_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self.maintain()
                failures = 0
                self._redis_up()
            except REDIS_FAILURES as exc:
                failures += 1
                await self._redis_down(exc, failures)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MAINTENANCE_S)

    async def _redis_down(self, exc: Exception, failures: int = 1) -> None:
        self.counters.redis_errors += 1
        if self._healthy:
            log.warning("Redis unavailable (%s); retrying with back-off", exc)
            self._healthy = False
        await asyncio.sleep(self._backoff.compute(failures))

    def _redis_up(self) -> None:
        if not self._healthy:
            log.warning("Redis reachable again")
            self._healthy = True

    async def _shutdown(self) -> None:
        """Write the rooms back and release their leases so another mixer takes over now."""
        if not self.rooms:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._drop_heartbeat()
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for owned in self.rooms.values():
                    self._queue_persist(pipe, owned)
                    checkpoint = (
                        owned.host.mixer.checkpoint() if self.settings.checkpoint_ms else None
                    )
                    if checkpoint is not None:
                        self._queue_checkpoint(pipe, owned, checkpoint)
                await pipe.execute()
            for owned in self.rooms.values():
                await self._release(
                    keys=[keys.room_lease(owned.name)], args=[self.settings.mixer_id]
                )
            await self._drop_heartbeat()
        except REDIS_ERRORS as exc:
            log.warning("could not hand rooms back cleanly (%s); their leases will expire", exc)

    async def _drop_heartbeat(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.mixer_heartbeat(self.settings.mixer_id))
            pipe.zrem(keys.MIXERS, self.settings.mixer_id)
            await pipe.execute()

    # ------------------------------------------------------------------ tick

    async def tick(self) -> bool:
        """One tick: read, step every room, write back in one pipeline.

        Returns whether it talked to Redis (not when no room is owned).
        """
        self.counters.ticks += 1
        if not self.rooms:
            return False
        streams: dict[str, bytes] = {}
        for room in self.rooms.values():
            streams[keys.room_ctl(room.name)] = room.ctl_cursor
            streams[keys.room_in(room.name)] = room.in_cursor
        replies = parse_xread(await xread_keys(self.redis, streams, count=READ_COUNT))
        now = now_samples()
        read: dict[str, tuple[list[Entry], list[Entry]]] = {}
        for key, entries in replies:
            name, is_ctl = self._key_index.get(key, ("", False))
            owned = self.rooms.get(name)
            if owned is None or not entries:
                continue
            ctl, audio = read.setdefault(name, ([], []))
            (ctl if is_ctl else audio).extend(entries)
        async with self.redis.pipeline(transaction=False) as pipe:
            for owned in self.rooms.values():
                ctl, audio = read.get(owned.name, _NOTHING)
                if ctl:
                    owned.ctl_cursor = ctl[-1][0]
                if audio:
                    owned.in_cursor = audio[-1][0]
                out = owned.host.step(
                    (value for _id, value in ctl), (value for _id, value in audio), now
                )
                self._queue(pipe, owned, out, now, bool(ctl))
            await pipe.execute()
        return True

    def _queue(self, pipe: Any, owned: OwnedRoom, out: Publish, now: int, read_ctl: bool) -> None:
        """Write one room's step: taps, records, events, and the periodic snapshots."""
        room = owned.name
        for tap in out.taps:
            key = keys.room_tap(room, tap.delay, tap.tap.mix)
            pipe.xadd(
                key,
                {"d": encode_tap(room, tap.delay, tap.start, now, tap.samples, tap.tap.mix)},
                maxlen=self.settings.tap_maxlen,
                approximate=True,
            )
            if tap.fresh or out.stats is not None:
                # From its first window on: a tap that lives less than one publish
                # period must still expire.
                pipe.pexpire(key, self.settings.tap_ttl_ms)
        if out.discard:
            store.queue_discard(pipe, room, out.discard)
        if out.persist:
            store.queue_persist(
                pipe, room, owned.state, owned.ctl_cursor, out.removed, out.persist_material
            )
            if out.removed:
                # Their places are gone for good: so are their resume tokens and links.
                pipe.hdel(keys.room_tokens(room), *out.removed)
                pipe.hdel(keys.room_links(room), *out.removed)
        elif read_ctl:
            # Commands that changed nothing still move the control cursor forward.
            pipe.hset(keys.room_song(room), "ctl", owned.ctl_cursor)
        if out.links:
            pipe.hset(keys.room_links(room), mapping=out.links)
        for event in out.events:
            store.queue_event(pipe, room, event)
        if out.checkpoint is not None:
            self._queue_checkpoint(pipe, owned, out.checkpoint)
        if out.occupancy is not None:
            pipe.set(keys.room_occupancy(room), records.encode(out.occupancy), px=OCC_TTL_MS)
        if out.stats is not None:
            pipe.hset(
                keys.room_stats(room),
                mapping={**out.stats, "clock": now, "mixer": self.settings.mixer_id},
            )
            # Trim what is applied, but keep what came after the last checkpoint: a new
            # owner replays it. (No ring, no checkpoint: everything read can go.)
            keep_from = owned.in_cursor
            if owned.host.mixer.ring is not None and owned.checkpoint_cursor is not None:
                keep_from = owned.checkpoint_cursor
            song = owned.state.song
            if song.running and song.recording.stems:
                # The recorder reads the singers' chunks too: a successor finds the last
                # seconds of them still there, as it finds the tap's.
                keep_from = older_id(keep_from, int(time.time() * 1000) - STEMS_KEEP_MS)
            pipe.xtrim(keys.room_in(room), minid=keep_from, approximate=True)

    @staticmethod
    def _queue_persist(pipe: Any, owned: OwnedRoom) -> None:
        """Write the room's whole state (before it leaves this mixer)."""
        removed = owned.host.persisted_ids - set(owned.state.members)
        store.queue_persist(pipe, owned.name, owned.state, owned.ctl_cursor, removed)

    def _queue_checkpoint(self, pipe: Any, owned: OwnedRoom, checkpoint: Checkpoint) -> None:
        # Everything up to the input cursor is in it: a new owner replays what came after.
        stamped = msgspec.structs.replace(checkpoint, in_cursor=owned.in_cursor.decode())
        owned.checkpoint_cursor = owned.in_cursor
        pipe.set(keys.room_checkpoint(owned.name), records.encode(stamped), px=CHECKPOINT_TTL_MS)

    # ----------------------------------------------------------- maintenance

    async def maintain(self) -> None:
        """Heartbeat, renew leases, drop lost rooms, claim free ones."""
        s = self.settings
        now_s = time.time()
        owned = list(self.rooms)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(
                keys.mixer_heartbeat(s.mixer_id),
                records.encode(self.status()),
                px=s.heartbeat_ttl_ms,
            )
            pipe.zadd(keys.MIXERS, {s.mixer_id: now_s})
            pipe.zremrangebyscore(keys.MIXERS, "-inf", now_s - 2 * s.heartbeat_ttl_ms / 1000)
            # Live: heartbeat within one lease TTL. A mixer whose leases expire has been
            # silent that long, so the survivors rank among themselves and claim at once.
            pipe.zrangebyscore(keys.MIXERS, now_s - s.lease_ttl_ms / 1000, "+inf")
            pipe.smembers(keys.ACTIVE_ROOMS)
            if not self._cluster:
                for room in owned:
                    await self._renew(
                        keys=[keys.room_lease(room)], args=[s.mixer_id, s.lease_ttl_ms], client=pipe
                    )
            results = await pipe.execute()
        if self._cluster:
            # redis-py refuses scripts in a cluster pipeline: one EVALSHA per room.
            results += await asyncio.gather(
                *(
                    self._renew(keys=[keys.room_lease(room)], args=[s.mixer_id, s.lease_ttl_ms])
                    for room in owned
                )
            )
        live = {m.decode() for m in results[3]} | {s.mixer_id}
        all_rooms = {r.decode() for r in results[4]}
        reacquired = []
        for room, result in zip(owned, results[5:], strict=True):
            if result == LeaseResult.LOST:
                self.counters.rooms_lost += 1
                log.warning("room %s: lease taken by another mixer; dropping it", room)
                self._forget(room)
            elif result == LeaseResult.REACQUIRED:
                reacquired.append(room)
        if reacquired:
            await self._rewrite(reacquired)
        await self._retire_unused()
        await self._claim(sorted(all_rooms - set(self.rooms)), live)
        await self._disconnect_dead_gateways()
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_S
            await self._delete_idle_rooms(now_s)

        if time.monotonic() >= self._material_due:
            self._material_due = time.monotonic() + self._material_period_s
            await self.refresh_material()

    async def _retire_unused(self) -> None:
        """Give back the rooms nobody has used for ``room_release_s``: they cost nothing then.

        The state is written first; the room leaves the active set (so no mixer
        claims it) only if no command waits in its control stream. A later
        command from any gateway makes it active again.
        """
        now = now_samples()
        release = seconds_to_samples(self.settings.room_release_s)
        unused = [o for o in self.rooms.values() if o.host.unused_for(now) >= release]
        for owned in unused:
            async with self.redis.pipeline(transaction=False) as pipe:
                self._queue_persist(pipe, owned)
                await pipe.execute()
            if self._cluster:
                retired = await self._retire_on_cluster(owned)
            else:
                retired = await self._retire(
                    keys=[
                        keys.room_lease(owned.name),
                        keys.room_ctl(owned.name),
                        keys.ACTIVE_ROOMS,
                        keys.IDLE_ROOMS,
                    ],
                    args=[
                        self.settings.mixer_id,
                        owned.name,
                        owned.ctl_cursor,
                        f"{time.time():.3f}",
                    ],
                )
            if retired:
                self.counters.rooms_released += 1
                log.info("room %s: unused, released", owned.name)
                self._forget(owned.name)

    async def _delete_idle_rooms(self, now_s: float) -> None:
        """Delete rooms idle for ``room_idle_delete_s`` with every key (any live mixer does it)."""
        deadline = now_s - self.settings.room_idle_delete_s
        due: list[bytes] = await self.redis.zrangebyscore(  # type: ignore[assignment]
            keys.IDLE_ROOMS, "-inf", deadline, start=0, num=SWEEP_BATCH
        )
        for raw in due:
            room = bytes(raw).decode()
            if self._cluster:
                deleted = await self._delete_on_cluster(room, deadline)
            else:
                deleted = await self._delete(
                    keys=[keys.ACTIVE_ROOMS, keys.IDLE_ROOMS, keys.ROOMS, *keys.room_keys(room)],
                    args=[room, f"{deadline:.3f}"],
                )
            if deleted:
                self.counters.rooms_deleted += 1
                log.info(
                    "room %s: idle for %.0f s, deleted", room, self.settings.room_idle_delete_s
                )

    async def _retire_on_cluster(self, owned: OwnedRoom) -> bool:
        """RETIRE_SCRIPT's steps where the room's slot and the global sets differ.

        The room's own keys are checked and the lease dropped in one script; then
        the room leaves the active set, and the control stream is read again: a
        gateway writes its command before making the room active
        (common/redisclient.py), so a command that raced in re-activates it.
        """
        room = owned.name
        dropped = await self._retire_room(
            keys=[keys.room_lease(room), keys.room_ctl(room)],
            args=[self.settings.mixer_id, owned.ctl_cursor],
        )
        if not dropped:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.srem(keys.ACTIVE_ROOMS, room)
            pipe.zadd(keys.IDLE_ROOMS, {room: time.time()})
            await pipe.execute()
        waiting = await self.redis.xrange(
            keys.room_ctl(room), b"(" + owned.ctl_cursor, "+", count=1
        )
        if waiting:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.sadd(keys.ACTIVE_ROOMS, room)
                pipe.zrem(keys.IDLE_ROOMS, room)
                await pipe.execute()
        return True

    async def _delete_on_cluster(self, room: str, deadline: float) -> bool:
        """DELETE_SCRIPT's steps on a cluster: the global sets first, then the room's keys."""
        if await self.redis.sismember(keys.ACTIVE_ROOMS, room):
            await self.redis.zrem(keys.IDLE_ROOMS, room)
            return False
        since = await self.redis.zscore(keys.IDLE_ROOMS, room)
        if since is None or float(since) > deadline:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.IDLE_ROOMS, room)
            pipe.srem(keys.ROOMS, room)
            pipe.delete(*keys.room_keys(room))
            await pipe.execute()
        return True

    async def refresh_material(self) -> None:
        """Keep the tracks and images of rooms in use from expiring; forget the expired ones.

        A room is in use while it has a connected member. Their keys carry a
        TTL of ``material_ttl_s``, renewed here every third of it; the
        material of a room left alone for that long expires with nothing
        else to clean up. A key found missing (it expired before someone
        came back) is dropped from the room's state, so no page asks for it.
        """
        ttl_ms = round(self.settings.material_ttl_s * 1000)
        work: list[tuple[OwnedRoom, list[tuple[str, str, str]]]] = []
        for owned in self.rooms.values():
            blobs = store.blob_keys(owned.name, owned.state)
            if blobs and any(m.connected for m in owned.state.members.values()):
                work.append((owned, blobs))
        if not work:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for _owned, blobs in work:
                for _kind, _id, key in blobs:
                    pipe.pexpire(key, ttl_ms)
            results = iter(await pipe.execute())
        for owned, blobs in work:
            gone = [(kind, blob_id) for kind, blob_id, _key in blobs if not next(results)]
            if gone:
                log.info("room %s: %d expired track(s)/image(s) forgotten", owned.name, len(gone))
                owned.state.forget_material(
                    {i for k, i in gone if k == "track"}, {i for k, i in gone if k == "image"}
                )

    async def _disconnect_dead_gateways(self) -> None:
        """Mark disconnected the members whose gateway died without saying goodbye.

        A gateway that stops cleanly sends a ``disconnect`` per singer; one that
        crashes cannot. Its heartbeat key expires while its entry in
        ``bb:gateways`` lingers: that pair means dead. (A gateway that never
        registered there is left alone.) The members keep their places for the
        reconnect grace, so singers resuming through another gateway lose nothing.
        """
        gateways = sorted(set().union(*(owned.host.gateways() for owned in self.rooms.values())))
        if not gateways:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for gw in gateways:
                pipe.exists(keys.gateway_heartbeat(gw))
                pipe.zscore(keys.GATEWAYS, gw)
            answers = await pipe.execute()
        dead = {
            gw
            for gw, alive, seen in zip(gateways, answers[0::2], answers[1::2], strict=True)
            if not alive and seen is not None
        }
        if not dead:
            return
        now = now_samples()
        for owned in self.rooms.values():
            owned.host.disconnect_gateways(dead, now)
        log.warning(
            "gateway(s) %s stopped heartbeating: their singers are marked disconnected",
            ", ".join(sorted(dead)),
        )

    async def _rewrite(self, rooms: list[str]) -> None:
        """Our leases had vanished (Redis restart): write our state back."""
        log.warning("re-asserting %d room(s) after their leases vanished", len(rooms))
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                owned = self.rooms[room]
                store.queue_meta(pipe, room, owned.state, owned.host.meta)
                pipe.sadd(keys.ACTIVE_ROOMS, room)  # we hold it: it is in use
                store.queue_persist(pipe, room, owned.state, owned.ctl_cursor, set())
                owned.host.resync()  # publish a fresh state event next tick
            await pipe.execute()

    async def _claim(self, free_candidates: list[str], live: set[str]) -> None:
        if not free_candidates or len(self.rooms) >= self.settings.max_rooms:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in free_candidates:
                pipe.exists(keys.room_lease(room))
            held = await pipe.execute()
        now = time.monotonic()
        for room, is_held in zip(free_candidates, held, strict=True):
            if is_held:
                self._free_since.pop(room, None)
                continue
            first_seen = self._free_since.setdefault(room, now)
            mine = preferred_owner(room, live) == self.settings.mixer_id
            if not mine and now - first_seen < CLAIM_GRACE_S:
                continue
            if len(self.rooms) >= self.settings.max_rooms:
                return
            got = await self.redis.set(
                keys.room_lease(room),
                self.settings.mixer_id,
                nx=True,
                px=self.settings.lease_ttl_ms,
            )
            if got:
                self._free_since.pop(room, None)
                await self._adopt(room)

    async def _adopt(self, room: str) -> None:
        try:
            state, ctl_cursor, meta = await store.load_room(self.redis, room, self.settings)
        except REDIS_ERRORS:
            await self._release(keys=[keys.room_lease(room)], args=[self.settings.mixer_id])
            raise
        raw_links = await self.redis.hgetall(keys.room_links(room))
        raw_checkpoint = await self.redis.get(keys.room_checkpoint(room))
        now = now_samples()
        owned = OwnedRoom(
            host=RoomHost(
                room,
                state,
                now,
                links=_parse_links(raw_links),
                timing=self._timing,
                mixer_id=self.settings.mixer_id,
                counters=self.room_counters,
                meta=meta,
            ),
            # Without a checkpoint, audio queued before we owned the room is stale by now:
            # start at the present.
            in_cursor=f"{int(time.time() * 1000)}-0".encode(),
            ctl_cursor=ctl_cursor,
        )
        if raw_checkpoint is not None:
            try:
                checkpoint = records.decode(raw_checkpoint, Checkpoint)
                if owned.host.restore(checkpoint, now):
                    owned.in_cursor = checkpoint.in_cursor.encode()
                    self.counters.rooms_restored += 1
                    log.info(
                        "room %s: ring restored from a checkpoint %.1f s old",
                        room,
                        (now - checkpoint.clock) / SAMPLE_RATE,
                    )
            except ValidationError as exc:
                log.warning("room %s: unreadable checkpoint (%s); starting silent", room, exc)
        self.rooms[room] = owned
        self._key_index[keys.room_ctl(room)] = (room, True)
        self._key_index[keys.room_in(room)] = (room, False)
        self.counters.rooms_claimed += 1
        log.info(
            "room %s: now owned by %s (%d members)",
            room,
            self.settings.mixer_id,
            len(state.members),
        )

    def _forget(self, room: str) -> None:
        self.rooms.pop(room, None)
        self._key_index.pop(keys.room_ctl(room), None)
        self._key_index.pop(keys.room_in(room), None)

    def status(self) -> MixerStatus:
        """The heartbeat's content (also what ``brigade inspect`` shows)."""
        return MixerStatus(
            id=self.settings.mixer_id,
            nonce=self._nonce,
            pid=os.getpid(),
            started=self.started,
            rooms=sorted(self.rooms),
            counters={**asdict(self.counters), **asdict(self.room_counters)},
        )

    def summary(self) -> str:
        c, r = self.counters, self.room_counters
        return (
            f"mixer {self.settings.mixer_id}: chunks_in={r.chunks_in} "
            f"rejected={r.chunks_rejected} late={r.late} bad_wire={r.bad_wire} "
            f"frames_out={r.frames_out} commands={r.commands} ticks={c.ticks} "
            f"overruns={c.tick_overruns} redis_errors={c.redis_errors} rooms={len(self.rooms)}"
        )


def _parse_links(raw: Any) -> dict[str, tuple[str, str]]:
    links: dict[str, tuple[str, str]] = {}
    for singer, value in (raw or {}).items():
        parts = bytes(value).decode(errors="replace").split(" ")
        if len(parts) == 2:
            links[bytes(singer).decode(errors="replace")] = (parts[0], parts[1])
    return links


def older_id(entry_id: bytes, ms: int) -> bytes:
    """The older of a stream entry id and the first id of millisecond ``ms``."""
    head, _, tail = entry_id.partition(b"-")
    try:
        mine = (int(head), int(tail or 0))
    except ValueError:
        return entry_id
    return entry_id if mine <= (ms, 0) else f"{ms}-0".encode()
