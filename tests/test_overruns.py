"""mixer/overruns.py: when an overrunning tick is reported, and what the report says."""

from __future__ import annotations

import pytest

from mixer.overruns import OverrunLog, TickPhases

PHASES = TickPhases(
    late_s=0.012, read_s=0.040, step_s=0.020, write_s=0.050, cpu_s=0.025, entries=351
)


def test_the_first_overrun_is_reported_with_its_phases() -> None:
    report = OverrunLog(every_s=10).overran(100.0, PHASES)
    assert report == (
        "tick overran (1 overrun): started 12.0 ms late, took 110.0 ms (reading the streams "
        "40.0 ms, stepping the rooms 20.0 ms, writing back 50.0 ms) with 25.0 ms of CPU, 351 "
        "entries read"
    )


def test_later_overruns_wait_for_the_period_and_are_counted_in_the_next_report() -> None:
    log = OverrunLog(every_s=10)
    assert log.overran(100.0, PHASES) is not None
    assert log.overran(101.0, PHASES) is None
    assert log.overran(109.9, PHASES) is None
    report = log.overran(110.0, PHASES)
    assert report is not None
    assert report.startswith("tick overran (3 overruns in the last 10 s): started 12.0 ms late")


def test_a_negative_period_is_refused() -> None:
    with pytest.raises(ValueError, match="every_s"):
        OverrunLog(every_s=-1)
