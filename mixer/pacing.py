"""The tick loop's schedule on an absolute clock, without a clock of its own.

Each tick is due one period after the last one was due (not after it ended),
so ticks do not drift. A tick that ends after the next is due is an overrun:
the next starts at once; one that ends more than a whole period late skips
the ticks it missed instead of running them in a burst. After a Redis
failure (and its back-off) the schedule starts again from the present.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Pacer", "Pause"]


@dataclass(frozen=True)
class Pause:
    """How long to wait before the next tick, and whether this one overran."""

    seconds: float
    overrun: bool


@dataclass
class Pacer:
    """Due times of the ticks, one ``period_s`` apart from ``due_s``."""

    period_s: float
    due_s: float
    """When the next tick is due (the caller's clock, e.g. the event loop's)."""

    def start(self) -> None:
        """A tick starts: the next is due one period after this one was."""
        self.due_s += self.period_s

    def restart(self, now_s: float) -> None:
        """Start the schedule again from ``now_s`` (after a failure and its back-off)."""
        self.due_s = now_s

    def pause(self, now_s: float) -> Pause:
        """The wait after a tick that ended at ``now_s``."""
        delay = self.due_s - now_s
        if delay >= 0:
            return Pause(delay, overrun=False)
        if delay < -self.period_s:
            self.due_s = now_s  # skip the missed ticks instead of bursting
        return Pause(0.0, overrun=True)
