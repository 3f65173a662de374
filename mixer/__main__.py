"""``brigade mixer``: run a mixer process, or ``--check`` a running one."""

from collections.abc import Sequence

from common import process
from common.heartbeat import Heartbeat
from common.records import MixerStatus
from common.settings import MixerSettings
from mixer import metrics
from mixer.service import MixerService


async def serve(settings: MixerSettings) -> int:
    return await process.serve(
        settings,
        Heartbeat.mixer(settings.mixer_id, settings.heartbeat_ttl_ms),
        MixerService,
        metrics.render,
        metrics_host=settings.metrics_host,
        metrics_port=settings.metrics_port,
        describe=(
            f"tick {settings.tick_ms} ms, ring {settings.ring_s} s, lead {settings.lead_s:.2f} s"
        ),
    )


def check(settings: MixerSettings) -> int:
    """Exit 0 when this mixer id has a live heartbeat in Redis, else 1."""
    return process.check_heartbeat(
        settings.redis_url,
        Heartbeat.mixer(settings.mixer_id, settings.heartbeat_ttl_ms),
        MixerStatus,
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
    )
