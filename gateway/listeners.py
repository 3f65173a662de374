"""A concert's listeners, the pure part: which tap they hear, and how they are counted.

A listener (``hello`` with ``role: "listener"``) is no member of the room: the
mixer never hears of it, it takes no place in the member cap (``capacity``),
it sends no audio and needs no calibration.  Every listener of a room hears
one tap, the one a recorder records (:func:`listener_delay`): every voice as
the last occupied bucket hears it.  The gateway keeps that tap alive with a
tap subscription of its own (``subscribe_tap``, like a recorder's), so the
mixer writes it once whatever the number of listeners, and the gateway
encodes it once per window for all of them (gateway/fanout.py).

The room's listener limit (``listeners`` in ``bb:{R}:meta``) counts the
listeners of every gateway: ``bb:{R}:listeners`` holds one field per gateway,
``"<count> <expiry ms>"``, changed only by :data:`COUNT_SCRIPT`, which
refuses an admission over the limit.  A gateway refreshes its field while it
has listeners; the field of a gateway that died expires with it.  Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

from common.listening import last_voice_tap
from common.roomview import PublicRoom

MAX_LISTENERS: Final = 100_000
"""The largest listener limit a room may set."""

COUNT_TTL_MS: Final = 15_000
"""A gateway's listener count expires this long after its last refresh."""


COUNT_SCRIPT: Final = """
local gw = ARGV[1]
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local delta = tonumber(ARGV[5])
local mine = 0
local others = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, expiry = string.match(all[i + 1], '^(%d+) (%d+)$')
  if all[i] == gw then
    mine = tonumber(n) or 0
  elseif n and tonumber(expiry) > now then
    others = others + tonumber(n)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
if delta > 0 and mine + others + delta > limit then
  return -1
end
mine = math.max(0, mine + delta)
if mine == 0 then
  redis.call('HDEL', KEYS[1], gw)
else
  redis.call('HSET', KEYS[1], gw, mine .. ' ' .. (now + ttl))
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return mine + others
"""
"""KEYS: ``bb:{R}:listeners``; ARGV: gateway id, now (unix ms), ttl ms, limit, delta.
Returns the room's listeners after the change, or -1 (nothing changed) when
``delta`` > 0 would go over ``limit``.  A delta of 0 refreshes the expiry."""


def listener_delay(state: PublicRoom) -> int:
    """The tap the room's listeners hear: the one the recorder records, every voice as
    the last occupied bucket hears it (:func:`common.listening.last_voice_tap`)."""
    buckets = state.buckets
    return last_voice_tap(buckets.spacing, buckets.n, ((m.role, m.delay) for m in state.members))


def subscriber_id(gateway_id: str) -> str:
    """The name of a gateway's tap subscription for its listeners (an id, 64 at most)."""
    return f"audience-{gateway_id}"[:64]


class FreezePolicy:
    """When to take the listeners' long-lived objects out of Python's cyclic collector.

    Each connection holds a few hundred objects the collector tracks; with
    thousands of listeners a full collection walks millions of them and stops
    the event loop for 0.2-1 s (measured: 0.5 s at 7 000 listeners on one
    gateway), long enough to make every socket's audio late.  ``gc.freeze()``
    moves every object alive then out of the collector's sight; the
    listeners' connections live for a concert, so they are frozen once there
    are enough of them (``min_listeners``) and again when they have grown by
    a tenth.  A frozen object that becomes garbage in a reference cycle waits
    for ``gc.unfreeze()``: once a fifth of the frozen listeners have left,
    the policy unfreezes, the next full collection reclaims them, and a
    later round freezes again.
    """

    def __init__(self, min_listeners: int = 500) -> None:
        self.min_listeners = min_listeners
        self.frozen = 0
        """Listeners when the process was last frozen (0: not frozen)."""
        self.left = 0
        """Listeners gone since then."""

    def departed(self, n: int = 1) -> None:
        if self.frozen:
            self.left += n

    def decide(self, listeners: int) -> str | None:
        """``"freeze"``, ``"unfreeze"`` or None for a process with ``listeners`` now."""
        if self.frozen and self.left > max(100, self.frozen // 5):
            self.frozen = self.left = 0
            return "unfreeze"
        if listeners >= self.min_listeners and listeners * 10 > self.frozen * 11:
            self.frozen, self.left = listeners, 0
            return "freeze"
        return None
