"""``brigade recorder``: record every song to FLAC and Ogg Opus, or ``--check`` a recorder."""

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
from common.settings import RecorderSettings
from recorder.service import RecorderService, RecorderStatus

log = logging.getLogger("recorder")


async def serve(settings: RecorderSettings) -> int:
    client = Redis.from_url(
        settings.redis_url, protocol=2, socket_timeout=5, socket_connect_timeout=2
    )
    service = RecorderService(settings, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "recorder %s starting (redis %s, recordings in %s)",
        settings.recorder_id,
        settings.redis_url,
        settings.recordings_dir,
    )
    try:
        await service.run(stop)
    finally:
        log.info("stopping: %s", service.summary())
        await client.aclose()
    return 0


def check(settings: RecorderSettings) -> int:
    """Exit 0 when this recorder id has a live heartbeat in Redis, else 1."""
    try:
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        raw = client.get(keys.recorder_heartbeat(settings.recorder_id))
    except redis.RedisError as exc:
        print(f"unhealthy: Redis unreachable: {exc}")
        return 1
    if raw is None:
        print(f"unhealthy: no heartbeat from recorder {settings.recorder_id}")
        return 1
    try:
        status = records.decode(raw, RecorderStatus)
    except ValidationError as exc:
        print(f"unhealthy: unreadable heartbeat: {exc}")
        return 1
    print(f"healthy: recorder {settings.recorder_id} records {len(status.rooms)} room(s)")
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="brigade recorder", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 0 if this recorder has a live heartbeat"
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (env BB_LOG_LEVEL)")
    RecorderSettings.add_arguments(parser)
    args = parser.parse_args(list(argv))
    try:
        settings = RecorderSettings.from_namespace(args)
    except ValidationError as exc:
        print(f"brigade recorder: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(settings)
    logs.configure(args.log_level)
    try:
        return aio.run(serve(settings), settings.event_loop)
    except SystemExit as exc:
        log.error("%s", exc)
        return 1
