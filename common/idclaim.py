"""Whether a starting process may take its id: the decision, with time passed in.

Every process kind announces itself under a heartbeat key named by its id
(``bb:mixer:{id}``, ``bb:gateway:{id}``, ``bb:recorder:{id}``); two live
processes with one id would answer each other's work.  A process that finds
its key held waits, with back-off, for the old heartbeat to expire (a
restarted process finds its predecessor's key for up to one TTL) and gives up
once the key has outlived ``ttl_s`` plus a grace: then a live process holds
it.  While Redis cannot be asked it keeps asking with back-off, without a
bound: a process can do nothing useful before Redis answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

GRACE_S: Final = 1.0
"""How long past one TTL a held key may last before it counts as a live process's."""


@dataclass(frozen=True, slots=True)
class Free:
    """Nobody holds the id: start."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Ask again after ``pause_s``; ``reason`` is logged when it changes."""

    pause_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class InUse:
    """A live process holds the id: exit non-zero with ``message``."""

    message: str


Verdict = Free | Wait | InUse


@dataclass
class IdClaim:
    """The claim of ``ident`` by a process of ``kind``, fed one observation at a time."""

    kind: str
    ident: str
    ttl_s: float
    pause_s: Callable[[int], float]
    """The pause after n observations in a row that were not free (a back-off curve)."""
    held_since: float | None = None
    """When the key was first seen held (None: not seen held yet)."""
    failures: int = 0
    """Observations in a row that were not ``free``."""

    def observe(self, now: float, held: bool | None) -> Verdict:
        """``held``: the heartbeat key exists (True), does not (False), Redis failed (None)."""
        if held is False:
            self.failures = 0
            return Free()
        self.failures += 1
        pause = self.pause_s(self.failures)
        if held is None:
            return Wait(pause, "Redis unreachable; waiting for it to check the id")
        if self.held_since is None:
            self.held_since = now
        if now - self.held_since > self.ttl_s + GRACE_S:
            return InUse(
                f"{self.kind} id {self.ident!r} is in use by a live {self.kind} "
                f"(its heartbeat outlived {self.ttl_s:g} s); "
                f"give each {self.kind} its own BB_{self.kind.upper()}_ID"
            )
        return Wait(pause, f"{self.kind} id {self.ident!r} is held; waiting for it to expire")
