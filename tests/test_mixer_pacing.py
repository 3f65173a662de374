"""The tick loop's schedule (mixer/pacing.py): pure, the clock passed in, no sleeps."""

from __future__ import annotations

from mixer.pacing import Pacer

PERIOD = 0.25


def test_ticks_are_due_on_the_grid_whatever_each_one_took() -> None:
    pacer = Pacer(PERIOD, 0.0)
    for n, ended_at in enumerate([0.01, 0.3, 0.55, 0.99], start=1):
        pacer.start()
        assert pacer.due_s == n * PERIOD  # not shifted by a tick that ended late
        pause = pacer.pause(ended_at)
        assert pause.overrun == (ended_at > pacer.due_s)
        assert pacer.due_s == n * PERIOD


def test_an_early_tick_waits_until_the_next_is_due() -> None:
    pacer = Pacer(PERIOD, 0.0)
    pacer.start()
    pause = pacer.pause(0.125)
    assert not pause.overrun and pause.seconds == PERIOD - 0.125


def test_a_tick_a_whole_period_late_skips_the_missed_ones() -> None:
    pacer = Pacer(PERIOD, 0.0)
    pacer.start()
    pause = pacer.pause(1.0)  # three ticks were missed: no burst of them
    assert pause.overrun and pause.seconds == 0.0
    assert pacer.due_s == 1.0
    pacer.start()
    assert pacer.due_s == 1.0 + PERIOD


def test_a_restart_after_a_failure_starts_the_grid_again_from_now() -> None:
    pacer = Pacer(PERIOD, 0.0)
    pacer.start()
    pacer.restart(7.5)
    assert not pacer.pause(7.5).overrun
    pacer.start()
    assert pacer.due_s == 7.5 + PERIOD
