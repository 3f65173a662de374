"""The gateway application factory: ``create_app(settings)``.

The application's state is one :class:`gateway.hub.Hub` under a typed
``web.AppKey``; a ``cleanup_ctx`` opens Redis (unless the process's runtime
gives its client: gateway/__main__.py), starts the background tasks, and on
shutdown cancels and awaits them and closes the Redis it opened.  ``on_shutdown``
closes every WebSocket with 1001 (going away) so handlers finish promptly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

from common import process
from common.settings import GatewaySettings
from gateway import edge
from gateway.api import STATIC_DIR, add_routes
from gateway.hub import HUB, Hub, Options
from gateway.session import CLOSE_GOING_AWAY

log = logging.getLogger(__name__)


MAX_REDIS_CONNECTIONS = 64
"""Connections per gateway: two blocking readers, the uplinks, and bursts (mass disconnects)."""


async def stop_tasks(tasks: list[asyncio.Task[None]], timeout_s: float = 5.0) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again while any survives.

    Cancelling once is not always enough: a cancellation that lands while
    redis-py releases a pipeline's connection (under ``asyncio.shield``) can
    be absorbed, and the task would then loop on as if nothing happened.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = [task for task in tasks if not task.done()]
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.2)
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())
    if pending:
        log.warning("%d background task(s) did not stop", len(pending))


def create_app(
    settings: GatewaySettings,
    options: Options | None = None,
    *,
    static_dir: Path = STATIC_DIR,
    redis: Redis | None = None,
) -> web.Application:
    """A gateway web application for ``settings`` (nothing runs until it starts).

    With ``redis`` it uses that client and leaves it open; else it opens its own.
    """
    app = web.Application(client_max_size=64 * 1024, middlewares=[edge.middleware(settings)])
    options = options or Options()

    async def hub_context(app: web.Application) -> AsyncIterator[None]:
        client = redis or process.connect(settings, pool_size=MAX_REDIS_CONNECTIONS)
        hub = Hub(settings, client, options)
        app[HUB] = hub
        tasks = [asyncio.create_task(coro, name=name) for name, coro in hub.background()]
        log.info("gateway %s ready (Redis %s)", settings.gateway_id, settings.redis_url)
        yield
        await stop_tasks(tasks)
        await hub.drop_heartbeat()
        await hub.close()
        if redis is None:
            await client.aclose()
            log.info("gateway %s stopped; counters %s", settings.gateway_id, hub.metrics.snapshot())

    async def close_sockets(app: web.Application) -> None:
        app[HUB].close_all(CLOSE_GOING_AWAY, "server shutting down")

    app.cleanup_ctx.append(hub_context)
    app.on_shutdown.append(close_sockets)
    add_routes(app, static_dir)
    return app
