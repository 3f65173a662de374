"""How the gateway's Redis loops wait after a failure (one policy for all of them).

Reading taps, reading room events and pushing audio each run forever; when
Redis fails they count the error, say so once per failure, and sleep 0.1 s,
doubling up to 2 s, so that a Redis outage costs neither CPU nor log floods.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from gateway.metrics import Metrics

log = logging.getLogger(__name__)

MAX_DELAY_S: Final = 2.0


def delay_s(failures: int) -> float:
    """The pause after ``failures`` failures in a row (1: 0.1 s, then doubling, 2 s at most)."""
    return min(MAX_DELAY_S, 0.05 * 2.0 ** min(failures, 6))


async def back_off(metrics: Metrics, failures: int, what: str, exc: Exception) -> None:
    """Count and log a Redis failure of ``what``, then sleep for :func:`delay_s`."""
    metrics.inc("redis_errors_total")
    delay = delay_s(failures)
    log.warning("%s failed (%s); retrying in %.2f s", what, exc, delay)
    await asyncio.sleep(delay)
