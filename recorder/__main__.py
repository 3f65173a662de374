"""``brigade recorder``: record every song to FLAC and Ogg Opus, or ``--check`` a recorder."""

from collections.abc import Sequence

from common import process
from common.heartbeat import Heartbeat
from common.records import RecorderStatus
from common.settings import RecorderSettings
from recorder import metrics
from recorder.service import RecorderService


async def serve(settings: RecorderSettings) -> int:
    return await process.serve(
        settings,
        Heartbeat.recorder(settings.recorder_id, settings.heartbeat_ttl_ms),
        RecorderService,
        metrics.render,
        metrics_host=settings.metrics_host,
        metrics_port=settings.metrics_port,
        describe=f"recordings in {settings.recordings_dir}",
    )


def check(settings: RecorderSettings) -> int:
    """Exit 0 when this recorder id has a live heartbeat in Redis, else 1."""
    return process.check_heartbeat(
        settings.redis_url,
        Heartbeat.recorder(settings.recorder_id, settings.heartbeat_ttl_ms),
        RecorderStatus,
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
    )
