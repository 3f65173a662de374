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

What it reads and writes lives beside it: the maintenance read and the leases
(mixer/observe.py), taking a room over (mixer/adoption.py), giving rooms back
and deleting idle ones (mixer/retirement.py), a room's writes
(mixer/outbox.py), material TTLs (mixer/material_upkeep.py); the tick's
schedule is mixer/pacing.py (pure).

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
from typing import Final

from redis.asyncio import Redis

from common import keys
from common.backoff import Backoff
from common.clock import now_samples
from common.heartbeat import Heartbeat
from common.process import RedisHealth
from common.records import MixerStatus
from common.redisclient import REDIS_ERRORS, xread_keys
from common.settings import MixerSettings
from common.streams import Entry, parse_xread
from mixer import adoption, material_upkeep, outbox, wiring
from mixer.host import HostCounters
from mixer.metrics import TickTimes
from mixer.observe import Observer
from mixer.overruns import OverrunLog, TickPhases
from mixer.owned import OwnedRoom
from mixer.pacing import Pacer
from mixer.planner import MAINTENANCE_S, MaintenancePlanner, Now, Plan
from mixer.retirement import Retirement

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
    rooms_handed_over: int = 0
    """Rooms given, between songs, to a mixer that ranks first for them (mixer/planner.py)."""
    rooms_deleted: int = 0


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
        self.beat = Heartbeat.mixer(settings.mixer_id, settings.heartbeat_ttl_ms)
        self.observer = Observer(redis, self.beat, settings.lease_ttl_ms)
        self.retirement = Retirement(redis, settings.mixer_id)
        self._key_index: dict[str, tuple[str, bool]] = {}
        self._timing = wiring.host_timing(settings)
        self.health = RedisHealth(Backoff(0.05, 2.0))
        self.planner = MaintenancePlanner(wiring.planner_settings(settings))
        self.overruns = OverrunLog()
        self._phases = (0.0, 0.0, 0.0)
        """The last tick's read, step and write times (s)."""
        self._entries = 0
        """The entries the last tick read."""

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
        pacer = Pacer(self.settings.tick_ms / 1000, loop.time())
        failures = 0
        while not stop.is_set():
            pacer.start()
            cpu = time.thread_time()
            self._phases, self._entries = (0.0, 0.0, 0.0), 0  # a failed tick reports zeros
            started = loop.time()
            late = started - (pacer.due_s - pacer.period_s)
            try:
                talked = await self.tick()
                self.tick_times.observe(loop.time() - started)
                if talked:
                    failures = 0
                    self.health.up()
            except REDIS_FAILURES as exc:
                failures += 1
                self.counters.redis_errors += 1
                await self.health.down(exc, failures)
                pacer.restart(loop.time())
            except Exception:
                # One bad tick must not stop the mixer: log it with its traceback, count it.
                self.counters.tick_errors += 1
                log.exception("tick failed")
            ended = loop.time()
            pause = pacer.pause(ended)
            self.counters.tick_overruns += pause.overrun
            if pause.overrun:
                report = self.overruns.overran(
                    ended,
                    TickPhases(
                        late,
                        *self._phases,
                        cpu_s=time.thread_time() - cpu,
                        entries=self._entries,
                    ),
                )
                if report is not None:
                    log.warning("%s", report)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause.seconds)

    async def _maintenance_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self.maintain()
                failures = 0
                self.health.up()
            except REDIS_FAILURES as exc:
                failures += 1
                self.counters.redis_errors += 1
                await self.health.down(exc, failures)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MAINTENANCE_S)

    async def _shutdown(self) -> None:
        """Write the rooms back and release their leases so another mixer takes over now."""
        try:
            await self.retirement.hand_back(
                list(self.rooms.values()), self.settings.checkpoint_ms > 0
            )
            await self.beat.drop(self.redis)
        except REDIS_ERRORS as exc:
            if self.rooms:
                log.warning("could not hand rooms back cleanly (%s); their leases will expire", exc)

    # ------------------------------------------------------------------ tick

    async def tick(self) -> bool:
        """One tick: read, step every room, write back in one pipeline.

        Returns whether it talked to Redis (not when no room is owned).
        """
        self.counters.ticks += 1
        if not self.rooms:
            return False
        began = time.perf_counter()
        streams: dict[str, bytes] = {}
        for room in self.rooms.values():
            streams[keys.room_ctl(room.name)] = room.ctl_cursor
            streams[keys.room_in(room.name)] = room.in_cursor
        replies = parse_xread(await xread_keys(self.redis, streams, count=READ_COUNT))
        got = time.perf_counter()
        now = now_samples()
        read: dict[str, tuple[list[Entry], list[Entry]]] = {}
        self._entries = 0
        for key, entries in replies:
            self._entries += len(entries)
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
                outbox.queue_step(pipe, owned, out, now, bool(ctl), self.settings)
            stepped = time.perf_counter()
            try:
                await pipe.execute()
            except BaseException:
                for owned in self.rooms.values():  # the checkpoints' spans may be lost
                    owned.host.mixer.checkpoint_lost()
                raise
        self._phases = (got - began, stepped - got, time.perf_counter() - stepped)
        return True

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
        seen = await self.observer.observe(ask, now, self.status())
        keeping = (
            material_upkeep.keeping_material(self.rooms.values()) if ask.refresh_material else set()
        )
        between = {
            n for n, owned in self.rooms.items() if not owned.host.mixer.song_audible(samples)
        }
        plan = self.planner.plan(unused, ask, seen, keeping, between, now)
        await self._carry_out(plan, now)

    async def _carry_out(self, plan: Plan, now: Now) -> None:
        for room in plan.drop:
            self.counters.rooms_lost += 1
            log.warning("room %s: lease taken by another mixer; dropping it", room)
            self._forget(room)
        if plan.rewrite:
            await self._rewrite(list(plan.rewrite))
        for room in plan.retire:
            await self._retire_room(self.rooms[room], now)
        if plan.hand_over:
            await self._hand_over(plan.hand_over)
        if plan.check_free:
            held = await self.observer.held(plan.check_free)
            for room in self.planner.claims(held, plan.live, len(self.rooms), now):
                await self._claim(room)
        if plan.dead_gateways:
            self._disconnect_gateways(plan.dead_gateways)
        for room in plan.delete:
            if await self.retirement.delete(room, plan.delete_before_s):
                self.counters.rooms_deleted += 1
                log.info(
                    "room %s: idle for %.0f s, deleted", room, self.settings.room_idle_delete_s
                )
        if plan.refresh_material:
            await material_upkeep.refresh_material(
                self.redis,
                [self.rooms[r] for r in plan.refresh_material if r in self.rooms],
                self.settings.material_ttl_s,
            )

    async def _retire_room(self, owned: OwnedRoom, now: Now) -> None:
        """Give back a room nobody has used for ``room_release_s``: it costs nothing then.

        The state is written first; the room leaves the active set (so no mixer
        claims it) only if no command waits in its control stream. A later
        command from any gateway makes it active again.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            outbox.queue_persist(pipe, owned)
            await pipe.execute()
        if await self.retirement.retire(owned.name, owned.ctl_cursor, now.wall_s):
            self.counters.rooms_released += 1
            log.info("room %s: unused, released", owned.name)
            self._forget(owned.name)

    async def _hand_over(self, rooms: tuple[tuple[str, str], ...]) -> None:
        """Give rooms between songs to the mixer that ranks first for each (it claims them
        on its next round): written back, with their checkpoints, and released, as at
        shutdown. Their singers stay connected; the taps pause for about a second.

        The rooms are forgotten first, so no tick consumes their streams between the
        write and the release: what arrives meanwhile is the new owner's to read. If
        Redis fails here, the leases expire and the rooms are claimed as after a crash.
        """
        owned = [self.rooms[room] for room, _ in rooms]
        for room, _ in rooms:
            self._forget(room)
        await self.retirement.hand_back(owned, self.settings.checkpoint_ms > 0)
        for room, target in rooms:
            self.counters.rooms_handed_over += 1
            log.info(
                "room %s: between songs, handed over to mixer %s (it ranks first)", room, target
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
                outbox.queue_rewrite(pipe, self.rooms[room])
            await pipe.execute()

    async def _claim(self, room: str) -> None:
        if not await self.observer.claim(room):
            return
        self.planner.claimed(room)
        try:
            owned, restored = await adoption.adopt(
                self.redis, room, self.settings, self._timing, self.room_counters
            )
        except REDIS_ERRORS:
            await self.retirement.release(room)
            raise
        self.rooms[room] = owned
        self._key_index[keys.room_ctl(room)] = (room, True)
        self._key_index[keys.room_in(room)] = (room, False)
        self.counters.rooms_claimed += 1
        self.counters.rooms_restored += restored

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
            max_rooms=self.settings.max_rooms,
        )

    def summary(self) -> str:
        c, r = self.counters, self.room_counters
        return (
            f"mixer {self.settings.mixer_id}: chunks_in={r.chunks_in} "
            f"rejected={r.chunks_rejected} late={r.late} bad_wire={r.bad_wire} "
            f"frames_out={r.frames_out} commands={r.commands} ticks={c.ticks} "
            f"overruns={c.tick_overruns} redis_errors={c.redis_errors} rooms={len(self.rooms)}"
        )
