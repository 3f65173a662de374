"""The taps a room writes: what its connected members hear, plus subscriptions (recorders).

Pure: ``now`` and the room's ``version`` are arguments. Which mix a member hears is
:func:`common.listening.listeners`'s rule; here it is only cached per version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from common.listening import anyone_soloed, listeners
from common.names import check_id
from common.records import Mix, Rounds
from mixer.members import Members

__all__ = ["Subscription", "Tap", "Taps", "TapsNow"]


class Tap(NamedTuple):
    """A subscription to a room's audio: the mix as heard at ``delay``."""

    delay: int
    mix: Mix = "full"


@dataclass
class Subscription:
    """A tap asked for by a non-member (a recorder), alive until ``expires``."""

    tap: Tap
    expires: int


@dataclass
class TapsNow:
    """The taps in use at one version of the room, and whether anyone solos then."""

    version: int = -1
    taps: list[Tap] = field(default_factory=list)
    """Connected members' (delay, mix heard) plus live subscriptions, sorted and distinct."""
    soloing: bool = False
    """Whether anyone is in the solo mix (else the solo mix does not exist)."""


class Taps:
    """The taps in use and the subscriptions that keep taps alive without a member."""

    def __init__(self, members: Members) -> None:
        self.members = members
        self.subscriptions: dict[str, Subscription] = {}
        self._cache = TapsNow()

    def at(self, version: int) -> TapsNow:
        """The taps in use at ``version`` (cached: worked out once per version).

        A solo tap exists only while someone is soloed.
        """
        cache = self._cache
        return cache if cache.version == version else self._refresh(version)

    def largest_delay(self) -> int:
        """The largest delay a tap may have now: the last bucket, or a larger one in use."""
        delays = [sub.tap.delay for sub in self.subscriptions.values()]
        return max([self.members.largest_delay(), *delays])

    def subscribe(
        self, subscriber: str, delay: int, mix: Mix, now: int, ttl: int, rounds: Rounds
    ) -> bool:
        """Keep a tap ``(delay, mix)`` for ``subscriber`` (not a member) for ``ttl`` samples."""
        check_id(subscriber, "subscriber")
        self.members.check_delay(delay, rounds)
        tap = Tap(delay, mix)
        old = self.subscriptions.get(subscriber)
        self.subscriptions[subscriber] = Subscription(tap, now + ttl)
        return old is None or old.tap != tap

    def expire(self, now: int) -> bool:
        """Drop the subscriptions past their time; returns whether any went."""
        stale = [name for name, sub in self.subscriptions.items() if sub.expires <= now]
        for name in stale:
            del self.subscriptions[name]
        return bool(stale)

    def _refresh(self, version: int) -> TapsNow:
        members = self.members.by_id.values()
        soloing = anyone_soloed(members)
        taps = {Tap(delay, mix) for delay, mix in listeners(members)}
        taps.update(
            sub.tap for sub in self.subscriptions.values() if sub.tap.mix == "full" or soloing
        )
        self._cache = TapsNow(version, sorted(taps), soloing)
        return self._cache
