"""What the servers counted during a load run: gateway ``/metrics`` and mixer status.

Upstream audio is judged by the servers, not the generator: a gateway
counts the messages it accepted and every drop by reason
(``bb_gateway_drops_total``); a mixer counts the chunks it applied, rejected
and received late, and its tick overruns, in its heartbeat
(``bb:mixer:{id}``, docs/redis.md).  A :class:`Snapshot` holds them all at
one instant; :func:`upstream_delta` turns two snapshots into the figures of
the interval between them.  Per singer, the room's member records
(``bb:{R}:members``) hold the chunks, rejections and late writes since join.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from redis.asyncio import Redis

from common import keys, records
from common.errors import ValidationError
from common.heartbeat import mixer_statuses
from common.records import LiveCounters, Member
from common.redisclient import REDIS_ERRORS

log = logging.getLogger(__name__)

AUDIO_DROP_REASONS: Final = (
    "bad_audio",
    "audio_future",
    "audio_old",
    "spectator",
    "rate_limited",
    "too_large",
    "push_queue_full",
    "push_failed",
)
"""Gateway drop reasons that apply to upstream audio messages."""

_SAMPLE: Final = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition: ``name{labels}`` -> value."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, raw = match.groups()
        try:
            values[name + (labels or "")] = float(raw)
        except ValueError:
            continue
    return values


@dataclass
class Snapshot:
    """Server counters at one instant (missing sources are simply absent)."""

    time: float
    gateways: dict[str, dict[str, float]] = field(default_factory=dict)
    """Gateway URL -> its /metrics samples."""
    mixers: dict[str, dict[str, int]] = field(default_factory=dict)
    """Mixer id -> its heartbeat counters."""
    errors: list[str] = field(default_factory=list)


async def gateway_metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """One gateway's ``/metrics`` (raises aiohttp.ClientError, TimeoutError)."""
    async with http.get(url.rstrip("/") + "/metrics") as response:
        response.raise_for_status()
        return parse_prometheus(await response.text())


async def mixer_counters(redis: Redis) -> dict[str, dict[str, int]]:
    """Every live mixer's heartbeat counters (raises RedisError)."""
    ids = [
        m.decode() if isinstance(m, bytes) else str(m)
        for m in await redis.zrange(keys.MIXERS, 0, -1)
    ]
    if not ids:
        return {}
    # One GET per heartbeat in a pipeline, not MGET: on a cluster the heartbeats
    # live in different slots (MGET across slots is refused).
    async with redis.pipeline(transaction=False) as pipe:
        for mixer_id in ids:
            pipe.get(keys.mixer_heartbeat(mixer_id))
        raws = await pipe.execute()
    return {m: dict(status.counters) for m, status in mixer_statuses(ids, raws).items()}


async def snapshot(
    http: aiohttp.ClientSession, urls: Iterable[str], redis: Redis | None
) -> Snapshot:
    """Read every gateway's metrics and every mixer's counters, concurrently."""
    snap = Snapshot(time=time.time())
    urls = list(urls)
    results = await asyncio.gather(
        *(gateway_metrics(http, url) for url in urls), return_exceptions=True
    )
    for url, result in zip(urls, results, strict=True):
        if isinstance(result, BaseException):
            snap.errors.append(f"{url}/metrics: {result!r}")
        else:
            snap.gateways[url] = result
    if redis is not None:
        try:
            snap.mixers = await mixer_counters(redis)
        except (*REDIS_ERRORS, OSError) as exc:
            snap.errors.append(f"mixer counters: {exc!r}")
    return snap


def _gateway_sum(snap: Snapshot, name: str) -> float:
    return sum(metrics.get(name, 0.0) for metrics in snap.gateways.values())


def _mixer_sum(snap: Snapshot, name: str) -> int:
    return sum(counters.get(name, 0) for counters in snap.mixers.values())


def upstream_delta(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """What the servers counted between two snapshots.

    ``accepted``: audio messages the gateways accepted; ``rejected``: audio
    the gateways dropped (by reason) plus chunks the mixers rejected;
    ``late``: chunks the mixers applied after a tap had already played them.
    Counters of a process missing from either snapshot are left out.
    """
    gateways = [u for u in after.gateways if u in before.gateways]
    mixers = [m for m in after.mixers if m in before.mixers]
    b = Snapshot(
        before.time,
        {u: before.gateways[u] for u in gateways},
        {m: before.mixers[m] for m in mixers},
    )
    a = Snapshot(
        after.time, {u: after.gateways[u] for u in gateways}, {m: after.mixers[m] for m in mixers}
    )

    def gw(name: str) -> int:
        return round(_gateway_sum(a, f"bb_gateway_{name}") - _gateway_sum(b, f"bb_gateway_{name}"))

    def mx(name: str) -> int:
        return _mixer_sum(a, name) - _mixer_sum(b, name)

    drops = {reason: gw(f'drops_total{{reason="{reason}"}}') for reason in AUDIO_DROP_REASONS}
    result: dict[str, Any] = {
        "seconds": round(after.time - before.time, 3),
        "gateways": len(gateways),
        "accepted": gw("chunks_in_total"),
        "gateway_drops": {k: v for k, v in drops.items() if v},
        "frames_out": gw("frames_out_total"),
        "frames_dropped": gw("frames_dropped_total"),
        "windows_stale": gw("windows_stale_total"),
        "tap_gaps": gw("tap_gaps_total"),
        "decoder_resets": gw("decoder_resets_total"),
        "redis_errors_gateway": gw("redis_errors_total"),
        "mixers": len(mixers),
    }
    if mixers:
        result.update(
            mixer_chunks_in=mx("chunks_in"),
            mixer_rejected=mx("chunks_rejected"),
            late=mx("late"),
            tick_overruns=mx("tick_overruns"),
            tick_errors=mx("tick_errors"),
            redis_errors_mixer=mx("redis_errors"),
        )
    result["rejected"] = sum(drops.values()) + result.get("mixer_rejected", 0)
    return result


async def member_records(redis: Redis, rooms: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per singer id: the mixer's ``chunks``, ``rejected`` and ``late`` since they joined
    (the counters it publishes with the room's stats, else the member record's)."""
    rooms = list(rooms)
    async with redis.pipeline(transaction=False) as pipe:
        for room in rooms:
            pipe.hgetall(keys.room_members(room))
            pipe.hget(keys.room_stats(room), "members")
        replies = await pipe.execute()
    found: dict[str, dict[str, Any]] = {}
    for reply, live_raw in zip(replies[::2], replies[1::2], strict=True):
        try:
            live = records.decode(live_raw, LiveCounters)
        except ValidationError:
            live = LiveCounters(members={})
        for raw_id, raw in dict(reply).items():
            try:
                member = live.apply(records.decode(raw, Member))
            except ValidationError:
                continue
            singer = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            found[singer] = {
                "chunks": member.chunks,
                "rejected": member.rejected,
                "late": member.late,
                "delay": member.delay,
                "connected": member.connected,
            }
    return found
