"""The keeper's Prometheus metrics (``GET /metrics`` on ``BB_METRICS_PORT``).

Read at scrape time from the keeper's counters: every key copy, deletion and
restore, so a dashboard shows the state being kept (and the bytes it costs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from keeper.service import Keeper

PREFIX: Final = "bb_keeper_"

HELP: Final[dict[str, str]] = {
    "cycles": "connections to the audio Redis, each with a full pass",
    "restores": "restores of the kept state into an emptied Redis (or master)",
    "keys_restored": "keys restored",
    "keys_copied": "keys copied to the state Redis",
    "keys_deleted": "keys deleted from the state Redis (gone from the audio Redis)",
    "bytes_copied": "bytes of the keys copied (DUMP payloads)",
    "redis_errors": "failed Redis operations (retried)",
}


class KeeperCollector(Collector):
    def __init__(self, keeper: Keeper) -> None:
        self.keeper = keeper

    def collect(self) -> Iterator[Metric]:
        counters = dataclasses.asdict(self.keeper.counters)
        for name, value in counters.items():
            family = CounterMetricFamily(PREFIX + name, HELP.get(name, name.replace("_", " ")))
            family.add_metric([], value)
            yield family
        dirty = GaugeMetricFamily(PREFIX + "dirty_keys", "changed keys waiting to be copied")
        dirty.add_metric([], len(self.keeper.dirty))
        yield dirty


def render(keeper: Keeper) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KeeperCollector(keeper))
    return generate_latest(registry)
