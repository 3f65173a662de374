"""Room ownership: which live mixer should own a room, and the lease scripts.

A room is owned by exactly one live mixer through ``bb:{room}:lease`` (a
string holding the owner's id, with a PX time-to-live).  Ranking is
rendezvous hashing, so mixers started together split the rooms without
talking to each other, and a dead mixer's rooms spread over the survivors.
"""

import enum
import hashlib
from collections.abc import Iterable
from typing import Final


def rendezvous_rank(room: str, mixer_id: str) -> int:
    """The score of ``mixer_id`` for ``room``; the highest score wins."""
    digest = hashlib.blake2b(f"{room}\x00{mixer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_owner(room: str, mixers: Iterable[str]) -> str | None:
    """The live mixer that ranks first for ``room`` (None when there is none)."""
    return max(mixers, key=lambda m: (rendezvous_rank(room, m), m), default=None)


class LeaseResult(enum.IntEnum):
    """What :data:`RENEW_SCRIPT` found."""

    LOST = 0
    """Another mixer holds the lease: drop the room now."""
    RENEWED = 1
    REACQUIRED = 2
    """The lease was gone (Redis restarted or it expired) and is ours again:
    write the room state back, Redis may have lost it."""


RENEW_SCRIPT: Final = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

RELEASE_SCRIPT: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

RETIRE_SCRIPT: Final = """
-- KEYS: lease, ctl stream, active set, idle set; ARGV: mixer id, room, ctl cursor, now (s)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #redis.call('XRANGE', KEYS[2], '(' .. ARGV[3], '+', 'COUNT', 1) > 0 then return 0 end
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""
"""Give a room nobody uses back: only while we own it and no command waits in its
control stream (a gateway adds the room to the active set and its command in one
transaction, so a join is either seen here or re-activates the room after)."""

RETIRE_ROOM_SCRIPT: Final = """
-- KEYS: lease, ctl stream; ARGV: mixer id, ctl cursor
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #redis.call('XRANGE', KEYS[2], '(' .. ARGV[2], '+', 'COUNT', 1) > 0 then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
"""RETIRE_SCRIPT's part on the room's own slot (a Redis Cluster): the caller then moves
the room from the active set to the idle set and re-reads the control stream."""

DELETE_SCRIPT: Final = """
-- KEYS: active set, idle set, rooms set, then every key of the room; ARGV: room, deadline (s)
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
local since = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not since or tonumber(since) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return redis.call('DEL', unpack(KEYS, 4))
"""
"""Delete a room idle since before the deadline, with all its keys, unless it is in use."""
