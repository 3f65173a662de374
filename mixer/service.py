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
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common import keys
from common.clock import now_samples
from common.constants import SAMPLE_RATE
from common.errors import ValidationError, WireError
from common.names import check_display_name, check_id
from common.settings import MixerSettings
from common.streams import Entry, parse_xread, xread_streams
from common.wire import decode_chunk, encode_tap
from mixer import store
from mixer.lease import RELEASE_SCRIPT, RENEW_SCRIPT, LeaseResult, preferred_owner
from mixer.room import ApplyStatus, CommandError, Role, RoomMixer, RoomState

log = logging.getLogger(__name__)

READ_COUNT: Final = 2000
"""Most entries read from one stream per tick (the rest wait for the next)."""
MAINTENANCE_S: Final = 0.5
CLAIM_GRACE_S: Final = 1.0
"""A free room not claimed by its preferred mixer within this long is anyone's."""
OCC_TTL_MS: Final = 10_000
TAP_TTL_MS: Final = 10_000
MAX_BACKOFF_S: Final = 2.0


@dataclass
class ServiceCounters:
    """Process-wide totals, logged at shutdown and published in the heartbeat."""

    chunks_in: int = 0
    chunks_rejected: int = 0
    late: int = 0
    frames_out: int = 0
    bad_wire: int = 0
    bad_ctl: int = 0
    commands: int = 0
    ticks: int = 0
    tick_overruns: int = 0
    tick_errors: int = 0
    redis_errors: int = 0
    rooms_claimed: int = 0
    rooms_lost: int = 0


@dataclass
class OwnedRoom:
    """A room this mixer owns, with its stream cursors and persistence marks."""

    name: str
    mixer: RoomMixer
    in_cursor: bytes
    ctl_cursor: bytes
    persisted_version: int = -1
    persisted_ids: set[str] = field(default_factory=set)
    counters_dirty: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Singer -> (gateway id, connection id) of their current connection."""
    links_dirty: set[str] = field(default_factory=set)
    levels_at: float = 0.0
    """When the last ``levels`` event went out (monotonic seconds)."""

    @property
    def state(self) -> RoomState:
        return self.mixer.state


_REJECTED: Final = frozenset(
    {
        ApplyStatus.AHEAD,
        ApplyStatus.FUTURE,
        ApplyStatus.TOO_OLD,
        ApplyStatus.TOO_LONG,
        ApplyStatus.OVERLAP,
        ApplyStatus.UNKNOWN_SINGER,
    }
)


class MixerService:
    """Owns rooms through leases and runs their mixers against Redis."""

    def __init__(self, settings: MixerSettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.rooms: dict[str, OwnedRoom] = {}
        self.counters = ServiceCounters()
        self.started = time.time()
        self._nonce = f"{os.getpid()}-{time.time_ns()}"
        self._renew = redis.register_script(RENEW_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)
        self._free_since: dict[str, float] = {}
        self._last_publish = 0.0
        self._key_index: dict[str, tuple[str, bool]] = {}
        self._grace = round(settings.reconnect_grace_s * SAMPLE_RATE)
        self._healthy = True

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
            except RedisError as exc:
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
        backoff = 0.0
        while not stop.is_set():
            next_at += period
            try:
                await self.tick()
                backoff = 0.0
                self._redis_up()
            except RedisError as exc:
                backoff = await self._redis_down(exc, backoff)
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
        backoff = 0.0
        while not stop.is_set():
            try:
                await self.maintain()
                backoff = 0.0
            except RedisError as exc:
                backoff = await self._redis_down(exc, backoff)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MAINTENANCE_S)

    async def _redis_down(self, exc: Exception, backoff: float = 0.0) -> float:
        self.counters.redis_errors += 1
        if self._healthy:
            log.warning("Redis unavailable (%s); retrying with back-off", exc)
            self._healthy = False
        backoff = min(MAX_BACKOFF_S, max(0.05, backoff * 2))
        await asyncio.sleep(backoff)
        return backoff

    def _redis_up(self) -> None:
        if not self._healthy:
            log.warning("Redis reachable again")
            self._healthy = True

    async def _shutdown(self) -> None:
        """Write the rooms back and release their leases so another mixer takes over now."""
        if not self.rooms:
            with contextlib.suppress(RedisError):
                await self._drop_heartbeat()
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for owned in self.rooms.values():
                    store.queue_persist(
                        pipe,
                        owned.name,
                        owned.state,
                        owned.ctl_cursor,
                        owned.persisted_ids - set(owned.state.members),
                    )
                await pipe.execute()
            for owned in self.rooms.values():
                await self._release(
                    keys=[keys.room_lease(owned.name)], args=[self.settings.mixer_id]
                )
            await self._drop_heartbeat()
        except RedisError as exc:
            log.warning("could not hand rooms back cleanly (%s); their leases will expire", exc)

    async def _drop_heartbeat(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.mixer_heartbeat(self.settings.mixer_id))
            pipe.zrem(keys.MIXERS, self.settings.mixer_id)
            await pipe.execute()

    # ------------------------------------------------------------------ tick

    async def tick(self) -> None:
        """One tick: read, apply, emit, write back."""
        self.counters.ticks += 1
        if not self.rooms:
            return
        streams: dict[str, bytes] = {}
        for room in self.rooms.values():
            streams[keys.room_ctl(room.name)] = room.ctl_cursor
            streams[keys.room_in(room.name)] = room.in_cursor
        replies = parse_xread(await self.redis.xread(xread_streams(streams), count=READ_COUNT))
        now = now_samples()
        audio: list[tuple[OwnedRoom, list[Entry]]] = []
        for key, entries in replies:
            name, is_ctl = self._key_index.get(key, ("", False))
            owned = self.rooms.get(name)
            if owned is None or not entries:
                continue
            if not is_ctl:
                audio.append((owned, entries))
                continue
            for entry_id, value in entries:
                self._command(owned, value, now)
                owned.ctl_cursor = entry_id
        # Audio after commands: a join in this tick makes the singer's chunks welcome.
        for target, entries in audio:
            for _entry_id, value in entries:
                self._chunk(target, value, now)
            target.in_cursor = entries[-1][0]

        publish = time.monotonic() - self._last_publish >= self.settings.publish_ms / 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for owned in self.rooms.values():
                self._queue_taps(pipe, owned, now, publish)
                self._queue_state(pipe, owned, now, publish)
            if publish:
                self._last_publish = time.monotonic()
            await pipe.execute()

    def _command(self, owned: OwnedRoom, data: bytes | None, now: int) -> None:
        try:
            msg = _parse_command(data)
        except ValidationError as exc:
            self.counters.bad_ctl += 1
            log.debug("room %s: dropped control entry: %s", owned.name, exc)
            return
        self.counters.commands += 1
        reply: dict[str, Any] = {
            "type": "reply",
            "singer": msg["singer"],
            "gw": msg.get("gw"),
            "req": msg.get("req"),
            "cmd": msg["cmd"],
            "ok": True,
        }
        try:
            if _stale_disconnect(owned, msg):
                # The singer resumed on another connection before this one's close arrived.
                owned.events.append(reply)
                return
            _dispatch(owned.state, msg, now)
            if msg["cmd"] == "join":
                owned.links[msg["singer"]] = (str(msg.get("gw") or ""), str(msg.get("conn") or ""))
                owned.links_dirty.add(msg["singer"])
        except CommandError as exc:
            reply.update(ok=False, code=exc.code, message=exc.message)
        except ValidationError as exc:
            reply.update(ok=False, code="bad_message", message=str(exc))
        owned.events.append(reply)

    def _chunk(self, owned: OwnedRoom, data: bytes | None, now: int) -> None:
        try:
            if data is None:
                raise WireError("stream entry has no 'd' field")
            chunk = decode_chunk(data)
            if chunk.room != owned.name:
                raise WireError(f"chunk for room {chunk.room!r} in the stream of {owned.name!r}")
        except WireError as exc:
            self.counters.bad_wire += 1
            log.debug("room %s: dropped chunk: %s", owned.name, exc)
            return
        status = owned.mixer.apply(chunk.singer, chunk.start, chunk.samples, now)
        self.counters.chunks_in += 1
        owned.counters_dirty = True
        if status is ApplyStatus.OK:
            return  # the common case, before any set lookup (Enum.__hash__ is Python code)
        if status is ApplyStatus.LATE:
            self.counters.late += 1
        elif status in _REJECTED:
            self.counters.chunks_rejected += 1

    def _queue_taps(self, pipe: Any, owned: OwnedRoom, now: int, publish: bool) -> None:
        for out in owned.mixer.tick(now):
            key = keys.room_tap(owned.name, out.delay)
            pipe.xadd(
                key,
                {"d": encode_tap(owned.name, out.delay, out.start, now, out.samples)},
                maxlen=self.settings.tap_maxlen,
                approximate=True,
            )
            if publish:
                pipe.pexpire(key, TAP_TTL_MS)
            self.counters.frames_out += len(out.samples) // 960

    def _queue_state(self, pipe: Any, owned: OwnedRoom, now: int, publish: bool) -> None:
        state = owned.state
        if publish:
            expired = state.expire(now, self._grace)
            if expired:
                log.info("room %s: %d member(s) left for good", owned.name, len(expired))
        if state.version != owned.persisted_version or (publish and owned.counters_dirty):
            current = set(state.members)
            gone = owned.persisted_ids - current
            store.queue_persist(pipe, owned.name, state, owned.ctl_cursor, gone)
            if gone:
                # Their places are gone for good: so are their resume tokens and links.
                pipe.hdel(keys.room_tokens(owned.name), *gone)
                pipe.hdel(keys.room_links(owned.name), *gone)
                for singer in gone:
                    owned.links.pop(singer, None)
                    owned.links_dirty.discard(singer)
            if state.version != owned.persisted_version:
                store.queue_event(
                    pipe,
                    owned.name,
                    {
                        "type": "state",
                        "version": state.version,
                        "state": store.public_state(owned.name, state),
                    },
                )
            owned.persisted_ids = current
            owned.persisted_version = state.version
            owned.counters_dirty = False
        elif owned.events:
            # Replies that changed nothing still move the control cursor forward.
            pipe.hset(keys.room_song(owned.name), "ctl", owned.ctl_cursor)
        if owned.links_dirty:
            links = {
                singer: " ".join(owned.links[singer])
                for singer in owned.links_dirty
                if singer in owned.links
            }
            if links:
                pipe.hset(keys.room_links(owned.name), mapping=links)
            owned.links_dirty.clear()
        for event in owned.events:
            store.queue_event(pipe, owned.name, event)
        owned.events.clear()
        if publish:
            self._queue_publish(pipe, owned, now)

    def _queue_publish(self, pipe: Any, owned: OwnedRoom, now: int) -> None:
        snap = owned.mixer.ring.occupancy_snapshot()
        pipe.set(
            keys.room_occupancy(owned.name),
            msgpack.packb(
                {
                    "clock": snap.clock,
                    "ring_samples": snap.ring_samples,
                    "frame_samples": snap.frame_samples,
                    "occupied": snap.occupied,
                    "bitmap": snap.bitmap,
                    "mixer": self.settings.mixer_id,
                }
            ),
            px=OCC_TTL_MS,
        )
        stats: dict[str, Any] = dict(owned.mixer.counters.to_dict())
        stats.update(clock=now, mixer=self.settings.mixer_id)
        pipe.hset(keys.room_stats(owned.name), mapping=stats)
        # Everything read so far is applied: trim it so the stream holds only the backlog.
        pipe.xtrim(keys.room_in(owned.name), minid=owned.in_cursor, approximate=True)
        # Every singer's level goes to every browser in the room, O(members^2) bytes per
        # event: so levels go out less often (levels_ms) than occupancy and stats.
        mono = time.monotonic()
        if owned.state.song.running and mono - owned.levels_at >= self.settings.levels_ms / 1000:
            owned.levels_at = mono
            levels = {
                m.singer_id: round(m.level_db, 1)
                for m in owned.state.members.values()
                if m.connected and m.role is Role.SINGER
            }
            store.queue_event(pipe, owned.name, {"type": "levels", "clock": now, "levels": levels})

    # ----------------------------------------------------------- maintenance

    async def maintain(self) -> None:
        """Heartbeat, renew leases, drop lost rooms, claim free ones."""
        s = self.settings
        now_s = time.time()
        owned = list(self.rooms)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(
                keys.mixer_heartbeat(s.mixer_id),
                msgpack.packb(self.status()),
                px=s.heartbeat_ttl_ms,
            )
            pipe.zadd(keys.MIXERS, {s.mixer_id: now_s})
            pipe.zremrangebyscore(keys.MIXERS, "-inf", now_s - 2 * s.heartbeat_ttl_ms / 1000)
            pipe.zrangebyscore(keys.MIXERS, now_s - s.heartbeat_ttl_ms / 1000, "+inf")
            pipe.smembers(keys.ROOMS)
            for room in owned:
                await self._renew(
                    keys=[keys.room_lease(room)], args=[s.mixer_id, s.lease_ttl_ms], client=pipe
                )
            results = await pipe.execute()
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
        await self._claim(sorted(all_rooms - set(self.rooms)), live)
        await self._disconnect_dead_gateways()

    async def _disconnect_dead_gateways(self) -> None:
        """Mark disconnected the members whose gateway died without saying goodbye.

        A gateway that stops cleanly sends a ``disconnect`` per singer; one that
        crashes cannot. Its heartbeat key expires while its entry in
        ``bb:gateways`` lingers: that pair means dead. (A gateway that never
        registered there is left alone.) The members keep their places for the
        reconnect grace, so singers resuming through another gateway lose nothing.
        """
        gateways = sorted(
            {
                gw
                for owned in self.rooms.values()
                for singer, (gw, _conn) in owned.links.items()
                if gw and (m := owned.state.members.get(singer)) is not None and m.connected
            }
        )
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
            for singer, (gw, _conn) in list(owned.links.items()):
                member = owned.state.members.get(singer)
                if gw in dead and member is not None and member.connected:
                    owned.state.disconnect(singer, now)
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
                store.queue_meta(pipe, room, owned.state)
                store.queue_persist(pipe, room, owned.state, owned.ctl_cursor, set())
                owned.persisted_version = -1  # publish a fresh state event next tick
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
            state, ctl_cursor = await store.load_room(self.redis, room, self.settings)
        except RedisError:
            await self._release(keys=[keys.room_lease(room)], args=[self.settings.mixer_id])
            raise
        raw_links = await self.redis.hgetall(keys.room_links(room))
        now = now_samples()
        owned = OwnedRoom(
            name=room,
            mixer=RoomMixer(room, state, now),
            # Audio queued before we owned the room is stale by now: start at the present.
            in_cursor=f"{int(time.time() * 1000)}-0".encode(),
            ctl_cursor=ctl_cursor,
            persisted_version=state.version,
            persisted_ids=set(state.members),
            links=_parse_links(raw_links),
        )
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

    def status(self) -> dict[str, Any]:
        """The heartbeat's content (also what ``brigade inspect`` shows)."""
        return {
            "id": self.settings.mixer_id,
            "nonce": self._nonce,
            "pid": os.getpid(),
            "started": self.started,
            "rooms": sorted(self.rooms),
            "counters": asdict(self.counters),
        }

    def summary(self) -> str:
        c = self.counters
        return (
            f"mixer {self.settings.mixer_id}: chunks_in={c.chunks_in} "
            f"rejected={c.chunks_rejected} late={c.late} bad_wire={c.bad_wire} "
            f"frames_out={c.frames_out} commands={c.commands} ticks={c.ticks} "
            f"overruns={c.tick_overruns} redis_errors={c.redis_errors} rooms={len(self.rooms)}"
        )


# ------------------------------------------------------------------ commands


def _parse_command(data: bytes | None) -> dict[str, Any]:
    if data is None:
        raise ValidationError("control entry has no 'd' field")
    try:
        msg = msgpack.unpackb(
            data, max_str_len=4096, max_bin_len=0, max_array_len=64, max_map_len=32
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValidationError(f"control entry is not msgpack: {type(exc).__name__}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
        raise ValidationError("control entry must be a map with a 'cmd' string")
    check_id(msg.get("singer"), "singer")
    req = msg.get("req")
    if req is not None and (not isinstance(req, int) or isinstance(req, bool)):
        raise ValidationError("'req' must be an integer")
    return msg


def _dispatch(state: RoomState, msg: dict[str, Any], now: int) -> None:
    """Apply one control command to the room state (raises CommandError)."""
    cmd: str = msg["cmd"]
    singer: str = msg["singer"]
    if cmd == "join":
        role = msg.get("role")
        if role not in ("singer", "spectator"):
            raise ValidationError(f"role must be 'singer' or 'spectator', got {role!r:.20}")
        state.join(singer, check_display_name(msg.get("name")), Role(role), now)
    elif cmd == "disconnect":
        state.disconnect(singer, now)
    elif cmd == "leave":
        state.leave(singer, now)
    elif cmd == "lead":
        state.request_lead(singer, now)
    elif cmd == "start":
        state.start_song(singer, now)
    elif cmd == "stop":
        state.stop_song(singer, now)
    elif cmd == "halt":
        state.halt(singer, now)
    elif cmd == "join_bucket":
        state.join_bucket(singer, _int_arg(msg, "bucket"))
    elif cmd == "set_delay":
        state.set_delay(singer, _int_arg(msg, "delay"))
    elif cmd == "mute":
        muted = msg.get("muted")
        if not isinstance(muted, bool):
            raise ValidationError("'muted' must be true or false")
        state.set_muted(singer, muted)
    else:
        raise ValidationError(f"unknown command {cmd!r:.30}")


def _stale_disconnect(owned: OwnedRoom, msg: dict[str, Any]) -> bool:
    """A ``disconnect`` from a connection the singer has since replaced."""
    if msg["cmd"] != "disconnect":
        return False
    link = owned.links.get(msg["singer"])
    sender = (str(msg.get("gw") or ""), str(msg.get("conn") or ""))
    return link is not None and all(link) and all(sender) and link != sender


def _parse_links(raw: Any) -> dict[str, tuple[str, str]]:
    links: dict[str, tuple[str, str]] = {}
    for singer, value in (raw or {}).items():
        parts = bytes(value).decode(errors="replace").split(" ")
        if len(parts) == 2:
            links[bytes(singer).decode(errors="replace")] = (parts[0], parts[1])
    return links


def _int_arg(msg: dict[str, Any], name: str) -> int:
    value = msg.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{name!r} must be an integer")
    return value
