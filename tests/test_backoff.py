"""The shared back-off curve (common/backoff.py): doubling, capped, jittered."""

from __future__ import annotations

import random

import pytest
from redis.backoff import AbstractBackoff

from common.backoff import Backoff


def test_the_nominal_pause_doubles_from_base_up_to_the_cap() -> None:
    policy = Backoff(0.5, 4.0)
    assert [policy.nominal_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.nominal_s(0) == 0.5
    assert policy.nominal_s(10**9) == 4.0


def test_pauses_are_jittered_within_the_upper_half_of_the_nominal() -> None:
    policy = Backoff(0.5, 4.0, random.Random(7))
    for failures in range(1, 8):
        top = policy.nominal_s(failures)
        pauses = [policy.compute(failures) for _ in range(200)]
        assert all(top / 2 <= p <= top for p in pauses)
        # Spread over the half, not stuck at one end: processes do not retry together.
        assert min(pauses) < top * 0.6 and max(pauses) > top * 0.9


def test_it_is_a_redis_backoff_and_rejects_nonsense() -> None:
    assert isinstance(Backoff(0.05, 0.5), AbstractBackoff)
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
