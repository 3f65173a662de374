"""``brigade mixer``: run a mixer process, or ``--check`` a running one."""

import asyncio
import logging
import signal
from collections.abc import Sequence

from redis.asyncio import Redis

from common import keys, process, redisclient
from common.records import MixerStatus
from common.settings import MixerSettings
from mixer import metrics
from mixer.service import MixerService

log = logging.getLogger("mixer")


def connect(url: str) -> Redis:
    """The mixer's Redis client: RESP2 pinned, so reply shapes never change under us;
    a cluster node's URL gives the cluster client."""
    return redisclient.async_client(url, socket_timeout=5, socket_connect_timeout=2)


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
    return process.check_heartbeat(
        settings.redis_url,
        keys.mixer_heartbeat(settings.mixer_id),
        MixerStatus,
        f"mixer {settings.mixer_id}",
        lambda status: f"owns {len(status.rooms)} room(s)",
    )


def main(argv: Sequence[str]) -> int:
    return process.main(
        argv,
        prog="brigade mixer",
        description=__doc__,
        settings_class=MixerSettings,
        check=check,
        serve=serve,
        log=log,
    )
