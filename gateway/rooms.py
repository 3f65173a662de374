"""The room directory in Redis: creation, settings, passwords, resume tokens,
and read-only views of a room (its public state, occupancy, listing).

Only the gateway creates rooms (``bb:{R}:meta`` + ``bb:rooms``) and writes
resume tokens; members, song and taps belong to the room's mixer and are only
read here.  Every method raises ``RedisError`` when Redis cannot be reached;
callers turn that into ``unavailable``.  Creation and password checks go
through the limits of gateway/guard.py (for the client of the request being
served) and raise its :class:`gateway.guard.LimitReached` errors.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any, Final

from redis.asyncio import Redis

from common import keys, records, roomview
from common.constants import DEFAULT_BUCKET_SPACING_S, DEFAULT_N_BUCKETS, seconds_to_samples
from common.errors import ValidationError
from common.passwords import check_password, hash_password
from common.records import Material, Member, Occupancy, Role, RoomMeta, Song
from gateway.checks import CheckQueue, QueueFull
from gateway.guard import CLIENT, Guard
from gateway.listeners import MAX_LISTENERS

log = logging.getLogger(__name__)

MAX_CAPACITY: Final = 1000
PASSWORD_CHECKS: Final = 2
"""Password checks (PBKDF2 in a thread) one gateway runs at once; more wait their turn."""
PASSWORD_QUEUE: Final = 64
"""Password checks that may wait their turn on one gateway; beyond, the worst is refused."""
MAX_LISTED_ROOMS: Final = 1000

# Create the meta hash only if the room does not exist yet, in one step, so no
# other gateway can ever see a half-written room (say, without its password).
_CREATE_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def token_digest(token: str) -> str:
    """What ``bb:{R}:tokens`` stores for a resume token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class RoomDirectory:
    """Rooms as the gateway sees them in Redis."""

    def __init__(
        self, redis: Redis, default_capacity: int, guard: Guard, default_listeners: int = 10_000
    ) -> None:
        self._redis = redis
        self._default_capacity = default_capacity
        self._default_listeners = default_listeners
        self._guard = guard
        self._checks = CheckQueue(PASSWORD_CHECKS, PASSWORD_QUEUE)
        self._create = redis.register_script(_CREATE_SCRIPT)

    # --- creation and settings ----------------------------------------------------

    async def create(
        self,
        room: str,
        password: str | None = None,
        capacity: int | None = None,
        listeners: int | None = None,
    ) -> bool:
        """Create ``room``; False when it already exists.  Hashing runs in a thread.

        ``capacity`` bounds its members (singers and spectators), ``listeners``
        its listeners, who are no members (gateway/listeners.py).

        Raises :class:`gateway.guard.RoomCapReached` when the deployment is full
        and :class:`gateway.guard.TooManyRooms` when this client created too many.
        """
        capacity = self._default_capacity if capacity is None else capacity
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValidationError(f"capacity must be 1-{MAX_CAPACITY}, got {capacity}")
        listeners = self._default_listeners if listeners is None else listeners
        if not 0 <= listeners <= MAX_LISTENERS:
            raise ValidationError(f"listeners must be 0-{MAX_LISTENERS}, got {listeners}")
        await self._guard.take_creation(CLIENT.get())
        stored = await asyncio.to_thread(hash_password, password) if password else ""
        fields = {
            "created_at": f"{time.time():.3f}",
            "capacity": str(capacity),
            "listeners": str(listeners),
            "password_hash": stored,
            "n_buckets": str(DEFAULT_N_BUCKETS),
            "bucket_spacing_s": str(DEFAULT_BUCKET_SPACING_S),
        }
        args = [item for pair in fields.items() for item in pair]
        created = bool(await self._create(keys=[keys.room_meta(room)], args=args))
        # Idempotent, and also repairs the set if a creator died in between. A room
        # nobody joins stays idle, and is deleted after the mixers' idle time.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(keys.ROOMS, room)
            if created:
                pipe.zadd(keys.IDLE_ROOMS, {room: time.time()}, nx=True)
            await pipe.execute()
        return created

    async def meta(self, room: str) -> RoomMeta | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(keys.room_meta(room))  # type: ignore[assignment]
        return records.decode_meta(raw) if raw else None

    async def ensure(self, room: str, password: str | None) -> RoomMeta:
        """The room's settings, creating it (with ``password``) if it does not exist."""
        meta = await self.meta(room)
        if meta is None:
            await self.create(room, password)
            meta = await self.meta(room)
            if meta is None:
                raise ValidationError(f"room {room} vanished right after its creation")
        return meta

    async def password_ok(self, room: str, meta: RoomMeta, password: str | None) -> bool:
        """Constant-time check of ``password`` against the room's (in a thread).

        Raises :class:`gateway.guard.TooManyGuesses`, without hashing, when this
        client has had too many wrong passwords lately (or the room has, and this
        client has used its guesses for it), and :class:`gateway.guard.ChecksBusy`
        when :data:`PASSWORD_QUEUE` checks with as few wrong guesses wait already
        (gateway/checks.py).
        """
        if not meta.has_password:
            return True
        client = CLIENT.get()
        # Turned away before queueing: a locked guesser never waits for (or delays) a check.
        # Who has guessed least for this room goes first: a newcomer before the guessers.
        priority = await self._guard.check_guess(room, client)
        try:
            async with self._checks.turn(priority):
                # Checked again in turn: a burst of guesses sees the failures recorded
                # before it, so it costs at most the limit plus this concurrency.
                await self._guard.check_guess(room, client)
                ok = await asyncio.to_thread(check_password, password, meta.password_hash)
                if not ok:
                    await self._guard.wrong_guess(room, client)
        except QueueFull:
            raise self._guard.busy() from None
        return ok

    # --- resume tokens --------------------------------------------------------------

    async def new_singer(self, room: str) -> tuple[str, str]:
        """A fresh singer id and resume token; only the token's hash is stored."""
        singer = f"s-{secrets.token_hex(6)}"
        token = secrets.token_urlsafe(24)
        await self._redis.hset(keys.room_tokens(room), singer, token_digest(token))
        return singer, token

    async def resume_ok(self, room: str, singer: str, token: str) -> bool:
        stored = await self._redis.hget(keys.room_tokens(room), singer)
        if not isinstance(stored, bytes):
            return False
        return hmac.compare_digest(stored, token_digest(token).encode("ascii"))

    async def forget_token(self, room: str, singer: str) -> None:
        await self._redis.hdel(keys.room_tokens(room), singer)

    # --- views ------------------------------------------------------------------

    async def state(self, room: str) -> roomview.PublicRoom | None:
        """The room's public state built from the mixer's hashes (None: no such room).

        Same shape as the ``state`` events the mixer publishes; used where no
        event has been seen yet (``welcome``, ``GET /api/rooms/{room}``).
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.room_meta(room))
            pipe.hgetall(keys.room_members(room))
            pipe.hgetall(keys.room_song(room))
            raw_meta, raw_members, raw_song = await pipe.execute()
        if not raw_meta:
            return None
        return public_state(room, records.decode_meta(raw_meta), raw_members, raw_song)

    async def listing(self) -> list[dict[str, Any]]:
        """``GET /api/rooms``: every room with its singer count and flags.

        A room with a password shows only its name and that it has one.
        """
        members: set[bytes] = await self._redis.smembers(keys.ROOMS)  # type: ignore[assignment]
        names = sorted(name.decode() for name in members)[:MAX_LISTED_ROOMS]
        if not names:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.room_meta(name))
                pipe.hvals(keys.room_members(name))
                pipe.hget(keys.room_song(name), "state")
            results = await pipe.execute()
        rooms: list[dict[str, Any]] = []
        for index, name in enumerate(names):
            raw_meta, member_values, song_raw = results[3 * index : 3 * index + 3]
            if not raw_meta:
                continue
            meta = records.decode_meta(raw_meta)
            if meta.has_password:
                rooms.append({"room": name, "password": True})
                continue
            song = _song(song_raw)
            singers = [m for m in _members(member_values) if m.role is Role.SINGER and m.connected]
            rooms.append(
                {
                    "room": name,
                    "singers": len(singers),
                    "capacity": meta.capacity,
                    "password": meta.has_password,
                    "song": song.running,
                }
            )
        return rooms

    async def occupancy(self, room: str) -> dict[str, Any] | None:
        """``GET /api/rooms/{room}/occupancy``: the mixer's snapshot, bitmap in base64."""
        raw = await self._redis.get(keys.room_occupancy(room))
        if raw is None:
            return None
        try:
            snapshot = records.decode(raw, Occupancy)
        except ValidationError:
            return None
        return {
            "room": room,
            "clock": snapshot.clock,
            "ring_samples": snapshot.ring_samples,
            "frame_samples": snapshot.frame_samples,
            "occupied": snapshot.occupied,
            "bitmap": base64.b64encode(snapshot.bitmap).decode(),
        }

    async def late_writes(self, rooms: list[str]) -> dict[str, int]:
        """The mixers' ``late`` counters for ``rooms`` (from ``bb:{R}:stats``)."""
        if not rooms:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.hget(keys.room_stats(room), "late")
            values = await pipe.execute()
        late: dict[str, int] = {}
        for room, value in zip(rooms, values, strict=True):
            try:
                late[room] = int(value) if value is not None else 0
            except ValueError:
                continue
        return late


def public_state(
    room: str, meta: RoomMeta, raw_members: dict[bytes, bytes], raw_song: dict[bytes, bytes]
) -> roomview.PublicRoom:
    """The public room state (docs/protocol.md, *Room state*) from Redis hashes."""
    try:
        version = int(raw_song.get(b"version", b"0"))
    except ValueError:
        version = 0
    try:
        material_version = int(raw_song.get(b"material_version", b"0"))
    except ValueError:
        material_version = 0
    return roomview.public_state(
        room,
        version=version,
        capacity=meta.capacity,
        n_buckets=meta.n_buckets,
        bucket_spacing=seconds_to_samples(meta.bucket_spacing_s),
        song=_song(raw_song.get(b"state")),
        members=_members(raw_members.values()),
        material=_material(raw_song.get(b"material")),
        material_version=material_version,
    )


def _members(values: Iterable[bytes]) -> list[Member]:
    """The readable member records (an unreadable one is skipped: the mixer rewrites it)."""
    members: list[Member] = []
    for value in values:
        try:
            members.append(records.decode(value, Member))
        except ValidationError as exc:
            log.debug("skipping an unreadable member record: %s", exc)
    return members


def _song(value: bytes | None) -> Song:
    if value is None:
        return Song()
    try:
        return records.decode(value, Song)
    except ValidationError as exc:
        log.debug("unreadable song record: %s", exc)
        return Song()


def _material(value: bytes | None) -> Material:
    if value is None:
        return Material()
    try:
        return records.decode(value, Material)
    except ValidationError as exc:
        log.debug("unreadable material record: %s", exc)
        return Material()
