"""The recorder's Prometheus metrics (``GET /metrics`` on ``BB_METRICS_PORT``).

Read at scrape time from the service's heartbeat status (the rooms it records
and its counters), so the service counts nothing twice and knows nothing of
Prometheus.  The counters in :data:`COUNTERS` are always exported (0 until
they move), so a dashboard's queries find them on a recorder that has not
recorded yet; any other counter the service keeps is exported beside them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recorder.service import RecorderStatus

PREFIX: Final = "bb_recorder_"

COUNTERS: Final[dict[str, str]] = {
    "takes": "takes started (a song being recorded)",
    "takes_resumed": "takes carried on from another recorder or an earlier run",
    "recordings": "recordings finished and listed",
    "recordings_deleted": "recordings removed by retention",
    "failures": "room tasks that failed (the take is finished as it is)",
    "redis_errors": "failed Redis operations (retried)",
    "leases_lost": "recording leases lost to another recorder",
    "bad_windows": "tap windows that could not be read",
    "taps_refused": "tap subscriptions the room refused",
    "gap_samples": "samples of silence written for gaps in a tap",
    "samples": "samples written to recordings",
}


class Recorder(Protocol):
    def status(self) -> RecorderStatus: ...


class RecorderCollector(Collector):
    """The rooms being recorded as a gauge; the service's counters as counters."""

    def __init__(self, service: Recorder) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        status = self.service.status()
        labels = ["recorder"]
        rooms = GaugeMetricFamily(
            PREFIX + "rooms", "rooms this recorder holds the recording lease of", labels=labels
        )
        rooms.add_metric([status.id], len(status.rooms))
        yield rooms
        names = {
            **COUNTERS,
            **{k: k.replace("_", " ") for k in status.counters if k not in COUNTERS},
        }
        for name, helptext in names.items():
            family = CounterMetricFamily(PREFIX + name, helptext, labels=labels)
            family.add_metric([status.id], status.counters.get(name, 0))
            yield family


def render(service: Recorder) -> bytes:
    """The Prometheus text exposition of ``service``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(service))
    return generate_latest(registry)
