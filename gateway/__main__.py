"""``brigade gateway``: run one gateway until SIGTERM or SIGINT.

Settings come from the CLI and the environment (``GatewaySettings``); logging
is configured here and nowhere else.  ``--check`` asks this gateway's own
``/healthz`` and exits 0 or 1 (for container health checks).  A gateway
refuses to start with an id that a live gateway's heartbeat still holds:
replies from the mixers are routed by gateway id.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import time

import aiohttp
from aiohttp import web

from common import aio, keys
from common.errors import ValidationError
from common.redisclient import REDIS_ERRORS
from common.settings import GatewaySettings
from gateway.app import connect_redis, create_app
from gateway.edge import server_options

log = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT_S = 5.0


def main(argv: list[str]) -> int:
    """Parse ``argv``, then serve until a signal; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="brigade gateway",
        description="Serve the browser client and the singer WebSocket (docs/protocol.md).",
    )
    GatewaySettings.add_arguments(parser)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("BB_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING, ... (env BB_LOG_LEVEL)",
    )
    parser.add_argument("--check", action="store_true", help="exit 0 if Redis answers, else 1")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = GatewaySettings.from_namespace(args)
    except ValidationError as exc:
        log.error("invalid settings: %s", exc)
        return 2
    if args.check:
        return aio.run(_check(settings), settings.event_loop)
    return aio.run(_serve(settings), settings.event_loop)


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


async def _id_free(settings: GatewaySettings) -> bool:
    """False when a live gateway heartbeats with our id (waits out one TTL first)."""
    redis = connect_redis(settings.redis_url)
    key = keys.gateway_heartbeat(settings.gateway_id)
    deadline = time.monotonic() + settings.heartbeat_ttl_ms / 1000 + 1
    try:
        while await redis.exists(key):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.25)
    except (*REDIS_ERRORS, OSError) as exc:
        # Redis down at start-up: serve anyway (answering `unavailable`) and recover later.
        log.warning("Redis unreachable at start-up (%s); starting anyway", exc)
    finally:
        await redis.aclose()
    return True


async def _serve(settings: GatewaySettings) -> int:
    if not await _id_free(settings):
        log.error(
            "gateway id %r is in use by a live gateway; give each gateway its own BB_GATEWAY_ID",
            settings.gateway_id,
        )
        return 1
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        **server_options(settings, app),
    )
    await runner.setup()
    try:
        ssl_context = _ssl_context(settings)
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        await site.start()
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        await runner.cleanup()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("gateway %s listening on %s", settings.gateway_id, runner.addresses)
    await stop.wait()
    log.info("gateway %s shutting down", settings.gateway_id)
    await runner.cleanup()
    return 0
