"""The tests' own waiting helper: what it returns, and what it says when the wait fails."""

from __future__ import annotations

import itertools

import pytest

from tests.support import StopWaiting, async_wait_until, wait_until


def test_wait_until_returns_what_the_condition_returned() -> None:
    calls = itertools.count(1)
    assert wait_until(lambda: next(calls) >= 3 and "ready", 5, "the third call", 0.001) == "ready"


def test_a_failed_wait_names_what_did_not_happen_and_the_last_error() -> None:
    def check() -> bool:
        raise KeyError("members")

    with pytest.raises(AssertionError) as failed:
        wait_until(check, 0.05, "Ann in the room", 0.01)
    assert str(failed.value).startswith("timed out after 0.05 s waiting for Ann in the room")
    assert "KeyError('members')" in str(failed.value)


def test_stop_waiting_and_errors_not_retried_fail_at_the_first_check() -> None:
    calls: list[str] = []

    def dead() -> bool:
        calls.append("dead")
        raise StopWaiting("the mixer exited")

    def broken() -> bool:
        calls.append("broken")
        raise ZeroDivisionError

    with pytest.raises(StopWaiting):
        wait_until(dead, 60, "a heartbeat", 0.01)
    with pytest.raises(ZeroDivisionError):
        wait_until(broken, 60, "a sum", 0.01, retry_errors=False)
    assert calls == ["dead", "broken"]


async def test_the_async_wait_takes_coroutine_conditions() -> None:
    calls = itertools.count(1)

    async def third() -> bool:
        return next(calls) >= 3

    await async_wait_until(third, 5, "the third call", 0.001)
    with pytest.raises(AssertionError, match="waiting for never"):
        await async_wait_until(lambda: False, 0.05, "never", 0.01)
