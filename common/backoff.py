"""One back-off policy for every retry loop: exponential, capped, with equal jitter.

After ``n`` failures in a row the nominal pause is ``min(cap_s, base_s * 2**(n-1))``
and the actual pause is drawn uniformly from its upper half, so processes that
failed together (a Redis restart seen by every gateway, children of ``brigade
up`` dying with it) do not retry in lock-step, yet none retries sooner than
half the nominal pause.  :class:`Backoff` is also a redis-py back-off, so the
client's own reconnect retries follow the same curve.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from redis.backoff import AbstractBackoff

_MAX_DOUBLINGS: Final = 30
"""Beyond this the exponent no longer matters (the cap wins); it keeps floats finite."""


class Backoff(AbstractBackoff):
    """Capped exponential back-off with equal jitter (``failures`` counts from 1)."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {base_s}, {cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        # The module's shared generator unless the caller brings its own (tests).
        self._uniform: Callable[[float, float], float] = rng.uniform if rng else random.uniform

    def nominal_s(self, failures: int) -> float:
        """The pause before jitter: ``base_s`` after one failure, doubling up to ``cap_s``."""
        doublings = min(max(failures, 1) - 1, _MAX_DOUBLINGS)
        return min(self.cap_s, self.base_s * 2.0**doublings)

    def compute(self, failures: int) -> float:
        """The pause after ``failures`` failures in a row, in ``[nominal/2, nominal]``."""
        half = self.nominal_s(failures) / 2
        return half + self._uniform(0, half)

    def reset(self) -> None:
        """Nothing to forget: the pause depends only on the failure count."""
