"""``brigade mixer``: run a mixer process, or ``--check`` a running one."""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import redis
from redis.asyncio import Redis

from common import aio, keys, logs, records
from common.errors import ValidationError
from common.records import MixerStatus
from common.settings import MixerSettings
from mixer import metrics
from mixer.service import MixerService

log = logging.getLogger("mixer")


def connect(url: str) -> Redis:
    """The mixer's Redis client: RESP2 pinned, so reply shapes never change under us."""
    return Redis.from_url(url, protocol=2, socket_timeout=5, socket_connect_timeout=2)


async def serve(settings: MixerSettings) -> int:
    client = connect(settings.redis_url)
    service = MixerService(settings, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "mixer %s starting (redis %s, tick %d ms, ring %d s, lead %.2f s)",
        settings.mixer_id,
        settings.redis_url,
        settings.tick_ms,
        settings.ring_s,
        settings.lead_s,
    )
    try:
        if settings.metrics_port:
            async with metrics.serve(service, settings.metrics_host, settings.metrics_port):
                log.info(
                    "metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port
                )
                await service.run(stop)
        else:
            await service.run(stop)
    finally:
        log.info("stopping: %s", service.summary())
        await client.aclose()
    return 0


def check(settings: MixerSettings) -> int:
    """Exit 0 when this mixer id has a live heartbeat in Redis, else 1."""
    try:
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        raw = client.get(keys.mixer_heartbeat(settings.mixer_id))
    except redis.RedisError as exc:
        print(f"unhealthy: Redis unreachable: {exc}")
        return 1
    if raw is None:
        print(f"unhealthy: no heartbeat from mixer {settings.mixer_id}")
        return 1
    try:
        status = records.decode(raw, MixerStatus)
    except ValidationError as exc:
        print(f"unhealthy: unreadable heartbeat: {exc}")
        return 1
    print(f"healthy: mixer {settings.mixer_id} owns {len(status.rooms)} room(s)")
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="brigade mixer", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 0 if this mixer id has a live heartbeat, else 1"
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (env BB_LOG_LEVEL)")
    MixerSettings.add_arguments(parser)
    args = parser.parse_args(list(argv))
    try:
        settings = MixerSettings.from_namespace(args)
    except ValidationError as exc:
        print(f"brigade mixer: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(settings)
    logs.configure(args.log_level)
    try:
        return aio.run(serve(settings), settings.event_loop)
    except SystemExit as exc:
        log.error("%s", exc)
        return 1
