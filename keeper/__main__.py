"""``brigade keeper``: keep the rooms' durable state in a small Redis of its own.

The audio Redis then needs no file: the keeper copies each changed room key
(meta, members, song, tokens, links, tracks, image) to ``BB_STATE_REDIS_URL``,
a Redis with an append-only file, and restores them into the audio Redis
when it comes back empty.  ``--check`` exits 0 when both Redis answer and
the audio Redis carries the keeper's marker (the copy is restored there).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from common import metricsserver, process, redisclient
from common.settings import KeeperSettings
from keeper import durable, metrics
from keeper.service import Keeper

log = logging.getLogger(__name__)


async def serve(settings: KeeperSettings) -> int:
    main = process.connect(settings)
    store = redisclient.async_client(settings.state_redis_url)
    stop = process.stop_on_signals()
    try:
        keeper = Keeper(settings, main, store)
        log.info(
            "keeper starting (redis %s, state kept in %s)",
            settings.redis_url,
            settings.state_redis_url,
        )
        try:
            async with metricsserver.serve(
                lambda: metrics.render(keeper), settings.metrics_host, settings.metrics_port
            ):
                if settings.metrics_port:
                    log.info(
                        "metrics on http://%s:%d/metrics",
                        settings.metrics_host,
                        settings.metrics_port,
                    )
                await keeper.run(stop)
        finally:
            log.info("keeper stopping: %s", keeper.summary())
    finally:
        await main.aclose()
        await store.aclose()
    return 0


def check(settings: KeeperSettings) -> int:
    """Exit 0 when both Redis answer and the audio one carries the keeper's marker."""
    try:
        main = redisclient.sync_client(settings.redis_url)
        store = redisclient.sync_client(settings.state_redis_url)
        store.ping()
        marked = bool(main.exists(durable.MARKER))
    except redisclient.SYNC_ERRORS as exc:
        print(f"unhealthy: Redis unreachable: {exc}")
        return 1
    if not marked:
        print("unhealthy: the state is not restored into Redis yet")
        return 1
    print("healthy: the state is kept")
    return 0


def main(argv: Sequence[str]) -> int:
    return process.main(
        argv,
        prog="brigade keeper",
        description=__doc__,
        settings_class=KeeperSettings,
        check=check,
        serve=serve,
        check_help="exit 0 if both Redis answer and the state is restored, else 1",
    )
