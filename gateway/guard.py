"""Limits shared by every gateway through Redis: password guesses, room creation, room cap.

Wrong passwords are counted per client address and per room, each in a
hash (``bb:client:{ADDR}:guesses``, ``bb:{R}:guesses``).  The wrong guess
that reaches the limit locks the subject for a minute, then two, four, ...
up to an hour (the lock count is remembered for an hour after the last
wrong guess); while locked, guesses are refused before the (costly) PBKDF2
check.

A locked address meets only its own lock.  A room's lock is a slowdown for
strangers, not a lock-out for its members (OWASP, "Slow Down Online Guessing
Attacks with Device Cookies": the resume token is the device cookie the lock
does not apply to, the rest is locked per room and address): it refuses only
addresses that have already guessed wrong :attr:`Limits.address_room_tries`
times for this room within the hour (``bb:{R}:guesses:{ADDR}``).  So a flood from many addresses
still locks each of them out of the room after a few guesses, but the right
password from an address that has not been guessing is always checked, and a
member's resume token never meets a password limit at all (gateway/ws.py
checks it first).  Right passwords never count, so a reconnect storm into a
big password room is never refused.

Concurrent guesses could all pass the check before the first failure is
recorded; the caller therefore checks again when its turn at the hashing
comes (:class:`gateway.rooms.RoomDirectory`, a few at a time per gateway
process, fewest wrong guesses first: gateway/checks.py), which bounds a
burst to the limit plus the check's concurrency.  Room creation is a plain count
per client address and minute, and the deployment's rooms (``bb:rooms``) are
capped.

Whose guess it is comes from :data:`CLIENT`, set for each HTTP request (the
WebSocket included) by the gateway's middleware (gateway/edge.py), so the
code that checks passwords and creates rooms needs no request at hand.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from common import keys
from common.errors import ValidationError
from common.settings import GatewaySettings
from gateway.metrics import Metrics

CLIENT: Final[ContextVar[str]] = ContextVar("client_address", default="unknown")
"""The address of the client whose request is being served (gateway/edge.py sets it)."""

WINDOW_MS: Final = 60_000
MAX_LOCK_MS: Final = 3_600_000

# KEYS[1]: the subject's hash.  Returns 0 (go ahead) or the ms until it is unlocked.
_LOCKED: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local locked = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') or 0
if now < locked then return locked - now end
return 0
"""

# KEYS[1]: the room's hash, KEYS[2]: this address's wrong guesses for the room.
# ARGV[1]: the guesses an address may make while the room is locked.
# Returns {0 (go ahead) or the ms until the room is unlocked, this address's guesses}.
_ROOM_LOCKED: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local locked = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') or 0
local mine = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if now >= locked or mine < tonumber(ARGV[1]) then return {0, mine} end
return {locked - now, mine}
"""

# KEYS[1]: the subject's hash.  ARGV: limit, window ms, longest lock ms.
# Counts one wrong guess; returns the lock it started in ms (0: none).
_WRONG: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'start', 'n', 'locks')
local start, n, locks = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
local limit, window, longest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if now - start >= window then start = now; n = 0 end
n = n + 1
if n >= limit then
  locks = locks + 1
  local lock = math.min(longest, window * 2 ^ math.min(locks - 1, 30))
  redis.call('HSET', KEYS[1], 'start', now, 'n', 0, 'locks', locks, 'until', now + lock)
  redis.call('PEXPIRE', KEYS[1], longest + lock)
  return lock
end
redis.call('HSET', KEYS[1], 'start', start, 'n', n)
redis.call('PEXPIRE', KEYS[1], longest)
return 0
"""

# KEYS[1]: a counter of one address's wrong guesses for one room.  ARGV: its TTL in ms.
_COUNT: Final = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
"""

# KEYS[1]: the counter.  ARGV: limit, window ms.  Returns 0 or the ms until allowed.
_TAKE_CREATION: Final = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]); ttl = tonumber(ARGV[2]) end
if n > tonumber(ARGV[1]) then return ttl end
return 0
"""


class LimitReached(ValidationError):
    """A limit refused the request (WebSocket: ``rate_limited``; HTTP: 429, or 403 for
    the room cap).  A :class:`ValidationError`, so code that maps those still refuses."""

    status = 429
    reason = "rate_limited"
    """The drop reason counted in gateway/metrics.py."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManyGuesses(LimitReached):
    """Too many wrong passwords from this client address, or from it for this room."""

    reason = "password_limited"


class ChecksBusy(LimitReached):
    """This gateway has too many password checks waiting (a guessing flood)."""

    reason = "password_busy"


class TooManyRooms(LimitReached):
    """This client address created too many rooms in the last minute."""

    reason = "rooms_limited"


class RoomCapReached(LimitReached):
    """The deployment holds ``room_cap`` rooms already."""

    status = 403
    reason = "room_cap"


@dataclass(frozen=True, slots=True)
class Limits:
    """The guard's settings (see :class:`common.settings.GatewaySettings`)."""

    password_tries_per_min: int = 5
    room_password_tries_per_min: int = 20
    address_room_tries: int = 3
    """Wrong passwords an address may try for a room within the hour even while the
    room is locked (a newcomer's typo or two); beyond them the room's lock applies."""
    rooms_per_min: int = 10
    room_cap: int = 10_000

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Limits:
        return cls(
            password_tries_per_min=settings.password_tries_per_min,
            room_password_tries_per_min=settings.room_password_tries_per_min,
            rooms_per_min=settings.rooms_per_min,
            room_cap=settings.room_cap,
        )


class Guard:
    """The limits above, kept in Redis so every gateway enforces the same counts.

    Every refusal is counted (its ``reason``) in the gateway's metrics.
    """

    def __init__(self, redis: Redis, limits: Limits, metrics: Metrics) -> None:
        self._redis = redis
        self.limits = limits
        self._metrics = metrics
        self._locked = redis.register_script(_LOCKED)
        self._room_locked = redis.register_script(_ROOM_LOCKED)
        self._count = redis.register_script(_COUNT)
        self._wrong = redis.register_script(_WRONG)
        self._take_creation = redis.register_script(_TAKE_CREATION)

    async def check_guess(self, room: str, client: str) -> int:
        """Raise TooManyGuesses when ``client`` is locked, or when ``room`` is locked and
        ``client`` has used its guesses for it (call before hashing); else return the
        wrong guesses ``client`` made for ``room`` within the hour."""
        wait_ms = int(await self._locked(keys=[keys.client_guesses(client)]))
        whose = "from your address"
        mine = 0
        if wait_ms <= 0:
            wait_ms, mine = (
                int(n)
                for n in await self._room_locked(
                    keys=[keys.room_guesses(room), keys.room_guesser(room, client)],
                    args=[self.limits.address_room_tries],
                )
            )
            whose = "for this room from your address"
        if wait_ms > 0:
            wait_s = math.ceil(wait_ms / 1000)
            message = f"too many wrong passwords {whose}; try again in {wait_s} s"
            raise self._refused(TooManyGuesses(message, wait_s))
        return mine

    async def wrong_guess(self, room: str, client: str) -> None:
        """Count a wrong password against ``client`` and ``room`` (may lock either)."""
        limits = self.limits
        args = [WINDOW_MS, MAX_LOCK_MS]
        await self._wrong(
            keys=[keys.client_guesses(client)], args=[limits.password_tries_per_min, *args]
        )
        await self._wrong(
            keys=[keys.room_guesses(room)], args=[limits.room_password_tries_per_min, *args]
        )
        await self._count(keys=[keys.room_guesser(room, client)], args=[MAX_LOCK_MS])

    async def take_creation(self, client: str) -> None:
        """Admit one room creation by ``client``; raises RoomCapReached or TooManyRooms."""
        rooms = int(await self._redis.scard(keys.ROOMS))
        if rooms >= self.limits.room_cap:
            raise self._refused(
                RoomCapReached(
                    f"this deployment holds its maximum of {self.limits.room_cap} rooms; "
                    "join an existing room",
                    60.0,
                )
            )
        wait_ms = int(
            await self._take_creation(
                keys=[keys.client_creations(client)], args=[self.limits.rooms_per_min, WINDOW_MS]
            )
        )
        if wait_ms > 0:
            wait_s = math.ceil(wait_ms / 1000)
            raise self._refused(
                TooManyRooms(
                    f"more than {self.limits.rooms_per_min} new rooms a minute from your "
                    f"address; try again in {wait_s} s",
                    wait_s,
                )
            )

    def busy(self) -> ChecksBusy:
        """The (counted) refusal of a password check when too many wait already."""
        exc = ChecksBusy("too many password checks waiting on this server; try again in 5 s", 5)
        self._metrics.drop(exc.reason)
        return exc

    def _refused(self, exc: LimitReached) -> LimitReached:
        self._metrics.drop(exc.reason)
        return exc
