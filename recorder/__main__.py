"""``brigade recorder``: record every song to FLAC and Ogg Opus, or ``--check`` a recorder."""

import asyncio
import logging
import signal
from collections.abc import Sequence

from common import keys, process, redisclient
from common.settings import RecorderSettings
from recorder import metrics
from recorder.service import RecorderService, RecorderStatus

log = logging.getLogger("recorder")


async def serve(settings: RecorderSettings) -> int:
    client = redisclient.async_client(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=2
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
        async with metrics.serve(service, settings.metrics_host, settings.metrics_port):
            await service.run(stop)
    finally:
        log.info("stopping: %s", service.summary())
        await client.aclose()
    return 0


def check(settings: RecorderSettings) -> int:
    """Exit 0 when this recorder id has a live heartbeat in Redis, else 1."""
    return process.check_heartbeat(
        settings.redis_url,
        keys.recorder_heartbeat(settings.recorder_id),
        RecorderStatus,
        f"recorder {settings.recorder_id}",
        lambda status: f"records {len(status.rooms)} room(s)",
    )


def main(argv: Sequence[str]) -> int:
    return process.main(
        argv,
        prog="brigade recorder",
        description=__doc__,
        settings_class=RecorderSettings,
        check=check,
        serve=serve,
        log=log,
    )
