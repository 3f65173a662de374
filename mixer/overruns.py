"""What an overrunning tick spent its time on, reported in the log now and then.

A tick overruns when it ends after the next one is due (mixer/pacing.py). The
count alone (``bb_mixer_tick_overruns_total``) does not say why; this says,
per report, how late the tick started and how its time divided between the
read of the rooms' streams, stepping the rooms, and the write-back pipeline,
beside the CPU the loop's thread used meanwhile: wall time far above CPU time
means the tick waited (for Redis, or for a CPU), not that it computed. Pure:
times are passed in; at most one report per ``every_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OverrunLog", "TickPhases"]


@dataclass(frozen=True, slots=True)
class TickPhases:
    """One tick's times, in seconds."""

    late_s: float
    """How long after its due time the tick started."""
    read_s: float
    """The read of every owned room's control and audio streams (one round trip)."""
    step_s: float
    """Stepping the rooms and queuing their writes."""
    write_s: float
    """The write-back pipeline (one round trip)."""
    cpu_s: float
    """CPU time of the loop's thread during the tick."""
    entries: int = 0
    """Control and audio entries the tick read (a burst after a stall reads more)."""


class OverrunLog:
    """Decides when an overrun is reported and words the report."""

    def __init__(self, every_s: float = 10.0) -> None:
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.every_s = every_s
        self._last_s: float | None = None
        self._unreported = 0

    def overran(self, now_s: float, phases: TickPhases) -> str | None:
        """Count an overrun at ``now_s``; the report to log, or None while one was logged
        less than ``every_s`` ago."""
        self._unreported += 1
        if self._last_s is not None and now_s - self._last_s < self.every_s:
            return None
        count, self._unreported = self._unreported, 0
        since = "" if self._last_s is None else f" in the last {now_s - self._last_s:.0f} s"
        self._last_s = now_s
        took = phases.read_s + phases.step_s + phases.write_s
        return (
            f"tick overran ({count} overrun{'s' if count != 1 else ''}{since}): started "
            f"{_ms(phases.late_s)} late, took {_ms(took)} (reading the streams "
            f"{_ms(phases.read_s)}, stepping the rooms {_ms(phases.step_s)}, writing back "
            f"{_ms(phases.write_s)}) with {_ms(phases.cpu_s)} of CPU, {phases.entries} "
            "entries read"
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
