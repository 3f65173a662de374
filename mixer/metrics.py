"""The mixer's Prometheus metrics (``GET /metrics`` on ``BB_METRICS_PORT``).

A custom collector reads the service's counters at scrape time (nothing is
counted twice, nothing runs per chunk), rendered by prometheus-client and
served by common/metricsserver.py on the mixer's own event loop.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mixer.service import MixerService

PREFIX = "bb_mixer_"

TICK_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds of the tick-time histogram (the default tick is 100 ms)."""


class TickTimes:
    """How long the mixer's ticks took: a Prometheus histogram kept by hand (no locks,
    one bisect per tick), exported as ``bb_mixer_tick_seconds``."""

    def __init__(self) -> None:
        self.counts = [0] * (len(TICK_BUCKETS_S) + 1)
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(TICK_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, ``+Inf`` last (Prometheus's shape)."""
        bounds = [*(repr(b) for b in TICK_BUCKETS_S), "+Inf"]
        totals, running = [], 0
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            totals.append((bound, float(running)))
        return totals


class MixerCollector(Collector):
    """The service's loop and room totals as counters; rooms and members as gauges."""

    def __init__(self, service: MixerService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        labels = ["mixer"]
        mixer_id = service.settings.mixer_id
        for counters in (service.counters, service.room_counters):
            for field in dataclasses.fields(counters):
                family = CounterMetricFamily(
                    PREFIX + field.name, field.name.replace("_", " "), labels=labels
                )
                family.add_metric([mixer_id], getattr(counters, field.name))
                yield family
        ticks = HistogramMetricFamily(
            PREFIX + "tick_seconds", "time one tick took (read, mix, write)", labels=labels
        )
        ticks.add_metric([mixer_id], service.tick_times.buckets(), service.tick_times.sum_s)
        yield ticks
        rooms = GaugeMetricFamily(PREFIX + "rooms", "rooms this mixer owns", labels=labels)
        rooms.add_metric([mixer_id], len(service.rooms))
        yield rooms
        rings = GaugeMetricFamily(
            PREFIX + "rings", "rooms holding a ring (a song can be heard)", labels=labels
        )
        rings.add_metric([mixer_id], sum(1 for o in service.rooms.values() if o.host.mixer.ring))
        yield rings
        members = GaugeMetricFamily(
            PREFIX + "room_members", "connected members, per room", labels=["mixer", "room"]
        )
        late = CounterMetricFamily(
            PREFIX + "room_late", "late writes, per room", labels=["mixer", "room"]
        )
        for name, owned in sorted(service.rooms.items()):
            state = owned.state
            members.add_metric(
                [mixer_id, name], sum(1 for m in state.members.values() if m.connected)
            )
            late.add_metric([mixer_id, name], owned.host.mixer.counters.late)
        yield members
        yield late


def render(service: MixerService) -> bytes:
    """The Prometheus text exposition of ``service``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MixerCollector(service))
    return generate_latest(registry)
