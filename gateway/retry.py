"""How the gateway's Redis loops wait after a failure (one policy for all of them).

Reading taps, reading room events and pushing audio each run forever; when
Redis fails they count the error, say so once per failure, and sleep on the
shared jittered curve of :mod:`common.backoff` (0.05 to 0.1 s after the first
failure, doubling up to 1 to 2 s), so that a Redis outage costs neither CPU nor
log floods, and gateways that lost Redis together do not return in lock-step.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from common.backoff import Backoff
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

BASE_S: Final = 0.1
MAX_DELAY_S: Final = 2.0


_POLICY: Final = Backoff(BASE_S, MAX_DELAY_S)


def delay_s(failures: int) -> float:
    """The pause after ``failures`` failures in a row (jittered, 2 s at most)."""
    return _POLICY.compute(failures)


async def back_off(metrics: Metrics, failures: int, what: str, exc: Exception) -> None:
    """Count and log a Redis failure of ``what``, then sleep for :func:`delay_s`."""
    metrics.inc("redis_errors_total")
    delay = delay_s(failures)
    log.warning("%s failed (%s); retrying in %.2f s", what, exc, delay)
    await asyncio.sleep(delay)
