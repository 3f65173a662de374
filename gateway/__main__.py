"""``brigade gateway``: run one gateway until SIGTERM or SIGINT.

The process's edges (settings, logging, the Redis client, the id claim,
signals, the counter summary at the end) are the shared runtime's
(common/process.py), as for the mixer and the recorder.  ``--check`` asks
this gateway's own ``/healthz`` and exits 0 or 1 (for container health
checks).  A gateway waits for an old heartbeat with its id to expire and
refuses to start beside a live one: replies from the mixers are routed by
gateway id.  ``/metrics`` is served by the gateway's own HTTP port.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from common import aio, process
from common.heartbeat import Heartbeat
from common.settings import GatewaySettings
from gateway.app import MAX_REDIS_CONNECTIONS, create_app
from gateway.edge import server_options
from gateway.hub import HUB

log = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT_S = 5.0


def main(argv: Sequence[str]) -> int:
    """Parse ``argv``, then serve until a signal; returns the exit code."""
    return process.main(
        argv,
        prog="brigade gateway",
        description="Serve the browser client and the singer WebSocket (docs/protocol.md).",
        settings_class=GatewaySettings,
        check=lambda settings: aio.run(_check(settings), settings.event_loop),
        serve=_serve,
        check_help="exit 0 if this gateway's /healthz answers 200, else 1",
    )


def _ssl_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    """The server's TLS context with ``tls_cert``/``tls_key``; None serves plain HTTP."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def _check(settings: GatewaySettings) -> int:
    host = "127.0.0.1" if settings.host in {"0.0.0.0", "::", ""} else settings.host
    scheme = "https" if settings.tls_cert else "http"
    url = f"{scheme}://{host}:{settings.port}/healthz"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
            # Our own certificate, asked by address: whether it verifies is not the question.
            http.get(url, ssl=False) as response,
        ):
            healthy = response.status == 200
            print(f"{'healthy' if healthy else 'unhealthy'}: {url} answered {response.status}")
            return 0 if healthy else 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"unhealthy: {url} does not answer: {exc!r}")
        return 1


class GatewayProcess:
    """The gateway's web application as the runtime's service."""

    def __init__(self, settings: GatewaySettings, redis: Redis) -> None:
        self.settings = settings
        self.app = create_app(settings, redis=redis)

    async def run(self, stop: asyncio.Event) -> int | None:
        """Listen until ``stop`` is set; 1 when the port cannot be listened on."""
        settings = self.settings
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
            **server_options(settings, self.app),
        )
        await runner.setup()
        try:
            try:
                site = web.TCPSite(
                    runner, settings.host, settings.port, ssl_context=_ssl_context(settings)
                )
                await site.start()
            except (OSError, ssl.SSLError) as exc:
                log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
                return 1
            log.info("gateway %s listening on %s", settings.gateway_id, runner.addresses)
            await stop.wait()
            log.info("gateway %s shutting down", settings.gateway_id)
        finally:
            await runner.cleanup()
        return None

    def summary(self) -> str:
        hub = self.app.get(HUB)
        return f"counters {hub.metrics.snapshot()}" if hub is not None else "never started"


async def _serve(settings: GatewaySettings) -> int:
    return await process.serve(
        settings,
        Heartbeat.gateway(settings.gateway_id, settings.heartbeat_ttl_ms),
        GatewayProcess,
        None,
        describe=f"http{'s' if settings.tls_cert else ''} on {settings.host}:{settings.port}",
        pool_size=MAX_REDIS_CONNECTIONS,
    )
