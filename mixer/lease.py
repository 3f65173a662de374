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
