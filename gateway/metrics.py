"""The gateway's counters and their Prometheus metrics (``GET /metrics`` on its own port).

Counters only ever go up; gauges (connections, per-room sessions, the room
figures the mixers publish) are passed in when rendering.  Every drop has a
reason label, so ``bb_gateway_drops_total`` shows what was refused and why.
Rendered by prometheus-client from a collector read at scrape time, like the
mixer's and the recorder's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX: Final = "bb_gateway_"

COUNTERS: Final[dict[str, str]] = {
    "connections_total": "WebSocket connections accepted",
    "joins_total": "successful joins (welcome sent)",
    "listeners_joined_total": "listeners admitted (listen-only connections, no members)",
    "messages_in_total": "WebSocket messages received from clients",
    "chunks_in_total": "upstream audio messages accepted and queued for the mixer",
    "chunks_pushed_total": "audio chunks written to Redis",
    "samples_in_total": "upstream audio samples accepted",
    "decode_errors_total": "upstream Opus packets that failed to decode",
    "decoder_resets_total": "Opus decoder resets (a new stream, or a gap in one)",
    "control_total": "control commands forwarded to the mixer",
    "chat_total": "chat lines posted",
    "errors_sent_total": "error messages sent to clients",
    "windows_in_total": "tap windows read from Redis",
    "windows_stale_total": "tap windows skipped because their play time had passed",
    "tap_gaps_total": "discontinuities in a tap stream (encoder reset)",
    "frames_encoded_total": "tap frames Opus-encoded (once per tap, not per client)",
    "frames_out_total": "tap frames sent to clients",
    "frames_dropped_total": "tap frames dropped from slow clients' send queues",
    "events_in_total": "room events read from Redis",
    "redis_errors_total": "failed Redis operations (the gateway retries with back-off)",
    "uploads_total": "backing tracks and images stored for a room",
    "uploads_refused_total": "uploads refused (not the leader, too big, not audio or an image...)",
}

DROP_REASONS: Final[dict[str, str]] = {
    "bad_message": "JSON that is not a valid message",
    "not_joined": "a message before a successful hello",
    "bad_audio": "malformed audio message, wrong codec or corrupt Opus",
    "audio_future": "audio positioned ahead of the room clock",
    "audio_old": "audio positioned older than the ring",
    "spectator": "audio from a spectator",
    "listener": "audio, a room command or chat from a listener",
    "listeners_full": "a listener refused: the room has its listeners",
    "rate_limited": "over the per-connection message rate",
    "too_large": "a message over the size limit",
    "push_queue_full": "audio dropped because the Redis push queue was full",
    "push_failed": "audio dropped because Redis refused or was unreachable",
    "busy": "control message refused: too many commands in flight",
    "unavailable": "control message refused: Redis or the mixer did not answer",
    "after_close": "a message that arrived after the server closed the connection",
    "close_timeout": "a connection dropped because the client never completed the close",
    "bad_request": "a malformed HTTP request (aiohttp answered 400)",
    "bad_host": "an HTTP request for a host name this gateway does not serve",
    "slow_body": "an HTTP request body that did not arrive within idle_timeout_s",
    "bad_origin": "room creation from a foreign Origin",
    "bad_content_type": "room creation whose body is not declared application/json",
    "password_limited": "a password guess refused unchecked: too many wrong ones",
    "password_busy": "a password check refused: too many waiting on this gateway",
    "rooms_limited": "room creation refused: too many from one client address",
    "room_cap": "room creation refused: the deployment holds room_cap rooms",
}


class Metrics:
    """The counters of one gateway process."""

    def __init__(self) -> None:
        self._counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter named in :data:`COUNTERS` (KeyError otherwise)."""
        self._counters[name] += n

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` dropped messages for a reason named in :data:`DROP_REASONS`."""
        self._drops[reason] += n

    def get(self, name: str) -> int:
        return self._counters[name]

    def drops(self, reason: str) -> int:
        return self._drops[reason]

    def snapshot(self) -> dict[str, int]:
        """Every counter and every drop (``drops_<reason>``), for status and logs."""
        values = dict(self._counters)
        values.update({f"drops_{reason}": n for reason, n in self._drops.items()})
        return values


@dataclass(frozen=True, slots=True)
class RoomFigures:
    """Per-room gauges: this gateway's sessions and what the room's mixer reports."""

    singers: int
    spectators: int
    late_writes: int | None = None
    members: int | None = None


class GatewayCollector(Collector):
    """Counters, drops by reason, the gateway's gauges and its per-room figures,
    read at scrape time (nothing is counted twice, nothing runs per message)."""

    def __init__(
        self, metrics: Metrics, gauges: Mapping[str, float], rooms: Mapping[str, RoomFigures]
    ) -> None:
        self.metrics = metrics
        self.gauges = gauges
        self.rooms = rooms

    def collect(self) -> Iterator[Metric]:
        for name, helptext in COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, helptext, value=self.metrics.get(name))
        drops = CounterMetricFamily(
            PREFIX + "drops_total", "messages dropped, by reason", labels=["reason"]
        )
        for reason in DROP_REASONS:
            drops.add_metric([reason], self.metrics.drops(reason))
        yield drops
        for name, gauge in sorted(self.gauges.items()):
            yield GaugeMetricFamily(PREFIX + name, name.replace("_", " "), value=gauge)
        ordered = sorted(self.rooms.items())
        for name, helptext, pick in _ROOM_GAUGES:
            family = GaugeMetricFamily(PREFIX + name, helptext, labels=["room"])
            for room, figures in ordered:
                value = pick(figures)
                if value is not None:
                    family.add_metric([room], value)
            yield family


_ROOM_GAUGES: Final[list[tuple[str, str, Callable[[RoomFigures], int | None]]]] = [
    ("room_singers", "singers connected to this gateway, per room", lambda f: f.singers),
    ("room_spectators", "spectators connected to this gateway, per room", lambda f: f.spectators),
    (
        "room_members",
        "members of the room (all gateways), from the room state",
        lambda f: f.members,
    ),
    (
        "room_late_writes",
        "audio chunks the room's mixer received after their tap had played (mixer's count)",
        lambda f: f.late_writes,
    ),
]


def render(
    metrics: Metrics, gauges: Mapping[str, float], rooms: Mapping[str, RoomFigures]
) -> bytes:
    """The Prometheus text exposition of counters, gauges and rooms (prometheus-client)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(metrics, gauges, rooms))
    return generate_latest(registry)
