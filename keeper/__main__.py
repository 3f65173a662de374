"""``brigade keeper``: keep the rooms' durable state in a small Redis of its own.

The audio Redis then needs no file: the keeper copies each changed room key
(meta, members, song, tokens, links, tracks, image) to ``BB_STATE_REDIS_URL``,
a Redis with an append-only file, and restores them into the audio Redis
when it comes back empty.  It runs through the one process runtime
(common/process.py): id claim, heartbeat ``bb:keeper:{id}``, signals,
``/metrics``.  ``--check`` exits 0 when the keeper's heartbeat is live, the
audio Redis carries the keeper's marker (the copy is restored there) and the
state Redis answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from common import process, redisclient
from common.heartbeat import Heartbeat
from common.records import KeeperStatus
from common.settings import KeeperSettings
from keeper import durable, metrics
from keeper.service import Keeper


async def serve(settings: KeeperSettings) -> int:
    return await process.serve(
        settings,
        Heartbeat.keeper(settings.keeper_id, settings.heartbeat_ttl_ms),
        Keeper,
        metrics.render,
        metrics_host=settings.metrics_host,
        metrics_port=settings.metrics_port,
        describe=f"state kept in {settings.state_redis_url}",
    )


def _describe(status: KeeperStatus) -> str:
    c = status.counters
    return (
        f"follows {status.servers} Redis server(s), {c.get('keys_copied', 0)} key copies, "
        f"{c.get('restores', 0)} restore(s)"
    )


def _state_kept(settings: KeeperSettings) -> process.CheckMore:
    """The keeper's part of ``--check`` beside its heartbeat: the marker and the state Redis."""

    def look(client: redis.Redis) -> tuple[bool, str]:
        if not client.exists(durable.MARKER):
            return False, f"the state is not restored into Redis yet (no {durable.MARKER} marker)"
        try:
            store = redisclient.sync_client(
                settings.state_redis_url, socket_timeout=2, socket_connect_timeout=2
            )
            try:
                store.ping()
            finally:
                store.close()
        except redisclient.SYNC_ERRORS as exc:
            return False, f"the state Redis is unreachable: {exc}"
        return True, f"the state is restored ({durable.MARKER} marker present) and kept"

    return look


def check(settings: KeeperSettings) -> int:
    """Exit 0 when this keeper's heartbeat is live, the audio Redis carries the keeper's
    marker and the state Redis answers; else 1 (the output says each)."""
    return process.check_heartbeat(
        settings.redis_url,
        Heartbeat.keeper(settings.keeper_id, settings.heartbeat_ttl_ms),
        KeeperStatus,
        _describe,
        also=_state_kept(settings),
    )


def main(argv: Sequence[str]) -> int:
    return process.main(
        argv,
        prog="brigade keeper",
        description=__doc__,
        settings_class=KeeperSettings,
        check=check,
        serve=serve,
        check_help="exit 0 if this keeper has a live heartbeat, the state is restored into "
        "Redis and the state Redis answers, else 1",
    )
