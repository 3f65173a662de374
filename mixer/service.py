"""The mixer service: the asyncio adapter around :class:`mixer.room.RoomMixer`.

Two loops share one Redis connection pool:

* the **tick** loop, scheduled on the absolute clock (``tick_ms``), reads the
  control and audio streams of every owned room in one ``XREAD``, applies
  them, emits the due tap windows and writes everything back in one
  pipeline; every ``publish_ms`` it also publishes occupancy, stats, levels
  and member counters;
* the **maintenance** loop (heartbeat, lease renewal, claiming free rooms,
  retiring unused ones, deleting idle ones, dead gateways, material TTLs): it
  reads what :class:`mixer.planner.MaintenancePlanner` asks, calls it, and
  carries out its plan; every decision (and ``now``) is the planner's.

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
)
from common.records import Checkpoint, MixerStatus
from common.redisclient import REDIS_ERRORS, is_cluster, xread_keys
from common.settings import MixerSettings
from common.streams import Entry, parse_xread
from mixer import store
from mixer.host import HostCounters, HostTiming, Publish, RoomHost
from mixer.metrics import TickTimes
from mixer.planner import (
    MAINTENANCE_S,
    SWEEP_BATCH,
    Ask,
    GatewaySeen,
    MaintenancePlanner,
    Now,
    Observed,
    Plan,
    PlannerSettings,
    trim_from,
)
from mixer.room import RoomState

log = logging.getLogger(__name__)

READ_COUNT: Final = 2000
"""Most entries read from one stream per tick (the rest wait for the next)."""
_NOTHING: Final[tuple[list[Entry], list[Entry]]] = ([], [])
REDIS_FAILURES: Final = (*REDIS_ERRORS, RuntimeError)
"""What a Redis call raises when Redis is gone. With uvloop, redis-py has been seen
raising a bare RuntimeError for a server that accepts a connection and closes it
(client limit, protected mode): that is Redis being unavailable too, not a reason
to exit."""


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
        self._retire_room_script = redis.register_script(RETIRE_ROOM_SCRIPT)
        self._cluster = is_cluster(redis)
        self._key_index: dict[str, tuple[str, bool]] = {}
        self._timing = HostTiming(
            publish=seconds_to_samples(settings.publish_ms / 1000),
            levels=seconds_to_samples(settings.levels_ms / 1000),
            grace=round(settings.reconnect_grace_s * SAMPLE_RATE),
            checkpoint=seconds_to_samples(settings.checkpoint_ms / 1000),
            tap_ttl=min(SAMPLE_RATE, seconds_to_samples(settings.tap_ttl_ms / 3000)),
        )
        self._healthy = True
        self._backoff = Backoff(0.05, 2.0)
        self.planner = MaintenancePlanner(
            PlannerSettings(
                mixer_id=settings.mixer_id,
                max_rooms=settings.max_rooms,
                lease_ttl_ms=settings.lease_ttl_ms,
                heartbeat_ttl_ms=settings.heartbeat_ttl_ms,
                release_samples=seconds_to_samples(settings.room_release_s),
                idle_delete_s=settings.room_idle_delete_s,
                material_period_s=min(60.0, settings.material_ttl_s / 3),
            )
        )

    # ---------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then hand the rooms back cleanly (the id is
        claimed before: common/process.py)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._tick_loop(stop))
                group.create_task(self._maintenance_loop(stop))
        finally:
            await self._shutdown()

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
            try:
                await pipe.execute()
            except BaseException:
                for owned in self.rooms.values():  # the checkpoints' spans may be lost
                    owned.host.mixer.checkpoint_lost()
                raise
        return True

    def _queue(self, pipe: Any, owned: OwnedRoom, out: Publish, now: int, read_ctl: bool) -> None:
        """Write one room's step: taps, records, events, and the periodic snapshots."""
        store.queue_step(pipe, owned.name, owned.state, owned.ctl_cursor, out, now, read_ctl)
        store.queue_published(pipe, owned.name, out, now, self.settings)
        if out.checkpoint is not None:
            self._queue_checkpoint(pipe, owned, out.checkpoint)
        if out.stats is not None:
            song = owned.state.song
            keep_from = trim_from(
                owned.in_cursor,
                owned.checkpoint_cursor,
                has_ring=owned.host.mixer.ring is not None,
                keeps_stems=song.running and song.recording.stems,
                wall_ms=int(time.time() * 1000),
            )
            pipe.xtrim(keys.room_in(owned.name), minid=keep_from, approximate=True)

    @staticmethod
    def _queue_persist(pipe: Any, owned: OwnedRoom) -> None:
        """Write the room's whole state (before it leaves this mixer)."""
        removed = owned.host.persisted_ids - set(owned.state.members)
        store.queue_persist(pipe, owned.name, owned.state, owned.ctl_cursor, removed)

    def _queue_checkpoint(self, pipe: Any, owned: OwnedRoom, checkpoint: Checkpoint) -> None:
        # Everything up to the input cursor is in it: a new owner replays what came after.
        stamped = msgspec.structs.replace(checkpoint, in_cursor=owned.in_cursor.decode())
        owned.checkpoint_cursor = owned.in_cursor
        store.queue_checkpoint(pipe, owned.name, stamped, self._timing.checkpoint)

    # ----------------------------------------------------------- maintenance

    async def maintain(self) -> None:
        """Heartbeat, renew leases, drop lost rooms, retire, claim, and the sweeps.

        Reads what :class:`MaintenancePlanner` asks, calls it, and carries out its plan.
        """
        now = Now(time.time(), time.monotonic())
        samples = now_samples()
        unused = {name: owned.host.unused_for(samples) for name, owned in self.rooms.items()}
        gateways = set().union(*(owned.host.gateways() for owned in self.rooms.values()))
        ask = self.planner.ask(unused, gateways, now)
        seen = await self._observe(ask, now)
        plan = self.planner.plan(unused, ask, seen, self._keeping_material(ask))
        await self._carry_out(plan, now)

    async def _observe(self, ask: Ask, now: Now) -> Observed:
        """Write the heartbeat and read what ``ask`` asks, in one round trip."""
        s = self.settings
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(
                keys.mixer_heartbeat(s.mixer_id),
                records.encode(self.status()),
                px=s.heartbeat_ttl_ms,
            )
            pipe.zadd(keys.MIXERS, {s.mixer_id: now.wall_s})
            pipe.zremrangebyscore(keys.MIXERS, "-inf", ask.prune_before_s)
            pipe.zrangebyscore(keys.MIXERS, ask.live_since_s, "+inf")
            pipe.smembers(keys.ACTIVE_ROOMS)
            if not self._cluster:
                for room in ask.renew:
                    await self._renew(
                        keys=[keys.room_lease(room)], args=[s.mixer_id, s.lease_ttl_ms], client=pipe
                    )
            for gw in ask.gateways:
                pipe.exists(keys.gateway_heartbeat(gw))
                pipe.zscore(keys.GATEWAYS, gw)
            if ask.idle_before_s is not None:
                pipe.zrangebyscore(
                    keys.IDLE_ROOMS, "-inf", ask.idle_before_s, start=0, num=SWEEP_BATCH
                )
            results = await pipe.execute()
        if self._cluster:
            # redis-py refuses scripts in a cluster pipeline: one EVALSHA per room,
            # their answers put where the pipeline's would have been.
            leases = await asyncio.gather(
                *(
                    self._renew(keys=[keys.room_lease(room)], args=[s.mixer_id, s.lease_ttl_ms])
                    for room in ask.renew
                )
            )
            results = [*results[:5], *leases, *results[5:]]
        renewed = 5 + len(ask.renew)
        answers = results[renewed : renewed + 2 * len(ask.gateways)]
        return Observed(
            live=frozenset(m.decode() for m in results[3]),
            active=frozenset(r.decode() for r in results[4]),
            leases=dict(zip(ask.renew, results[5:renewed], strict=True)),
            gateways={
                gw: GatewaySeen(alive=bool(alive), registered=registered is not None)
                for gw, alive, registered in zip(
                    ask.gateways, answers[0::2], answers[1::2], strict=True
                )
            },
            idle_due=tuple(bytes(r).decode() for r in results[-1])
            if ask.idle_before_s is not None
            else (),
        )

    def _keeping_material(self, ask: Ask) -> set[str]:
        """The rooms that list tracks or images and have a connected member (when due)."""
        if not ask.refresh_material:
            return set()
        return {
            name
            for name, owned in self.rooms.items()
            if any(owned.state.material.blob_ids())
            and any(m.connected for m in owned.state.members.values())
        }

    async def _carry_out(self, plan: Plan, now: Now) -> None:
        for room in plan.drop:
            self.counters.rooms_lost += 1
            log.warning("room %s: lease taken by another mixer; dropping it", room)
            self._forget(room)
        if plan.rewrite:
            await self._rewrite(list(plan.rewrite))
        for room in plan.retire:
            await self._retire_room(self.rooms[room], now)
        if plan.check_free:
            async with self.redis.pipeline(transaction=False) as pipe:
                for room in plan.check_free:
                    pipe.exists(keys.room_lease(room))
                held = await pipe.execute()
            claims = self.planner.claims(
                {r: bool(h) for r, h in zip(plan.check_free, held, strict=True)},
                plan.live,
                len(self.rooms),
                now,
            )
            for room in claims:
                await self._claim(room)
        if plan.dead_gateways:
            self._disconnect_gateways(plan.dead_gateways)
        for room in plan.delete:
            await self._delete_room(room, plan.delete_before_s)
        if plan.refresh_material:
            await self.refresh_material(
                [self.rooms[r] for r in plan.refresh_material if r in self.rooms]
            )

    async def _retire_room(self, owned: OwnedRoom, now: Now) -> None:
        """Give back a room nobody has used for ``room_release_s``: it costs nothing then.

        The state is written first; the room leaves the active set (so no mixer
        claims it) only if no command waits in its control stream. A later
        command from any gateway makes it active again.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            self._queue_persist(pipe, owned)
            await pipe.execute()
        if self._cluster:
            retired = await self._retire_on_cluster(owned, now.wall_s)
        else:
            retired = await self._retire(
                keys=[
                    keys.room_lease(owned.name),
                    keys.room_ctl(owned.name),
                    keys.ACTIVE_ROOMS,
                    keys.IDLE_ROOMS,
                ],
                args=[self.settings.mixer_id, owned.name, owned.ctl_cursor, f"{now.wall_s:.3f}"],
            )
        if retired:
            self.counters.rooms_released += 1
            log.info("room %s: unused, released", owned.name)
            self._forget(owned.name)

    async def _delete_room(self, room: str, idle_before_s: float) -> None:
        """Delete a room idle for ``room_idle_delete_s`` with every key (any live mixer does it)."""
        if self._cluster:
            deleted = await self._delete_on_cluster(room, idle_before_s)
        else:
            deleted = await self._delete(
                keys=[keys.ACTIVE_ROOMS, keys.IDLE_ROOMS, keys.ROOMS, *keys.room_keys(room)],
                args=[room, f"{idle_before_s:.3f}"],
            )
        if deleted:
            self.counters.rooms_deleted += 1
            log.info("room %s: idle for %.0f s, deleted", room, self.settings.room_idle_delete_s)

    async def _retire_on_cluster(self, owned: OwnedRoom, wall_s: float) -> bool:
        """RETIRE_SCRIPT's steps where the room's slot and the global sets differ.

        The room's own keys are checked and the lease dropped in one script; then
        the room leaves the active set, and the control stream is read again: a
        gateway writes its command before making the room active
        (common/redisclient.py), so a command that raced in re-activates it.
        """
        room = owned.name
        dropped = await self._retire_room_script(
            keys=[keys.room_lease(room), keys.room_ctl(room)],
            args=[self.settings.mixer_id, owned.ctl_cursor],
        )
        if not dropped:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.srem(keys.ACTIVE_ROOMS, room)
            pipe.zadd(keys.IDLE_ROOMS, {room: wall_s})
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

    async def _delete_on_cluster(self, room: str, idle_before_s: float) -> bool:
        """DELETE_SCRIPT's steps on a cluster: the global sets first, then the room's keys."""
        if await self.redis.sismember(keys.ACTIVE_ROOMS, room):
            await self.redis.zrem(keys.IDLE_ROOMS, room)
            return False
        since = await self.redis.zscore(keys.IDLE_ROOMS, room)
        if since is None or float(since) > idle_before_s:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.IDLE_ROOMS, room)
            pipe.srem(keys.ROOMS, room)
            pipe.delete(*keys.room_keys(room))
            await pipe.execute()
        return True

    async def refresh_material(self, rooms: list[OwnedRoom]) -> None:
        """Keep the tracks and images of rooms in use from expiring; forget the expired ones.

        A room is in use while it has a connected member. Their keys carry a
        TTL of ``material_ttl_s``, renewed every third of it (the planner says
        when, and which rooms); the material of a room left alone for that long
        expires with nothing else to clean up. A key found missing (it expired
        before someone came back) is dropped from the room's state, so no page
        asks for it.
        """
        ttl_ms = round(self.settings.material_ttl_s * 1000)
        work = [(owned, store.blob_keys(owned.name, owned.state)) for owned in rooms]
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

    def _disconnect_gateways(self, dead: frozenset[str]) -> None:
        """Mark disconnected the members whose gateway died without saying goodbye.

        A gateway that stops cleanly sends a ``disconnect`` per singer; one that
        crashes cannot. Its heartbeat key expires while its entry in
        ``bb:gateways`` lingers: that pair means dead (the planner's rule). The
        members keep their places for the reconnect grace, so singers resuming
        through another gateway lose nothing.
        """
        now = now_samples()
        for owned in self.rooms.values():
            owned.host.disconnect_gateways(set(dead), now)
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
                owned.host.mixer.checkpoint_lost()  # the checkpoint list went with the rest
            await pipe.execute()

    async def _claim(self, room: str) -> None:
        got = await self.redis.set(
            keys.room_lease(room),
            self.settings.mixer_id,
            nx=True,
            px=self.settings.lease_ttl_ms,
        )
        if got:
            self.planner.claimed(room)
            await self._adopt(room)

    async def _adopt(self, room: str) -> None:
        try:
            state, ctl_cursor, meta = await store.load_room(self.redis, room, self.settings)
        except REDIS_ERRORS:
            await self._release(keys=[keys.room_lease(room)], args=[self.settings.mixer_id])
            raise
        raw_links = await self.redis.hgetall(keys.room_links(room))
        raw_checkpoint = await store.read_checkpoint(self.redis, room)
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
        if raw_checkpoint:
            try:
                checkpoint = [records.decode(raw, Checkpoint) for raw in raw_checkpoint]
                if owned.host.restore(checkpoint, now):
                    owned.in_cursor = checkpoint[-1].in_cursor.encode()
                    self.counters.rooms_restored += 1
                    log.info(
                        "room %s: ring restored from a checkpoint %.1f s old",
                        room,
                        (now - checkpoint[-1].clock) / SAMPLE_RATE,
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
