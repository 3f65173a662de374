"""``GET /metrics`` for the processes without a web server of their own (mixer, recorder).

A tiny aiohttp app on the process's own event loop; ``render`` is called per
scrape and returns the Prometheus text exposition (prometheus-client's
``generate_latest``).  The gateway serves the same body on its own port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST


def response(body: bytes) -> web.Response:
    """A scrape's response: the exposition with Prometheus's content type."""
    reply = web.Response(body=body)
    reply.headers["Content-Type"] = CONTENT_TYPE_LATEST
    reply.headers["X-Content-Type-Options"] = "nosniff"
    return reply


@asynccontextmanager
async def serve(render: Callable[[], bytes], host: str, port: int) -> AsyncIterator[None]:
    """Serve ``/metrics`` on ``host:port`` while the context lasts (nothing when port is 0)."""
    if not port:
        yield
        return

    async def metrics(_request: web.Request) -> web.Response:
        return response(render())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
