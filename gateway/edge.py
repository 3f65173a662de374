"""The HTTP edge of the gateway: who is asking, through which host name, and how
aiohttp's own server treats connections that misbehave before any handler runs.

- **Host check** (DNS rebinding): a page on an attacker's domain that
  re-resolves to a gateway's address sends that domain as ``Host``.  Every
  route but ``/healthz`` and ``/metrics`` accepts only ``localhost``, the
  machine's host name, IP addresses (a rebinding needs a name), the hosts of
  ``BB_ALLOWED_ORIGINS`` and ``BB_PUBLIC_HOST``; others get 421.
- **Client address** for the limits of gateway/guard.py: the peer, or with
  ``BB_TRUST_FORWARDED_FOR`` the last ``X-Forwarded-For`` entry (the one the
  proxy in front wrote).  IPv6 clients count per /64, what one host gets.
- **Server options**: connections that send no complete request within
  ``idle_timeout_s`` are closed (slow header trickles, idle keep-alives), and
  malformed requests are logged at INFO without a traceback and counted.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from common.settings import GatewaySettings
from gateway.guard import CLIENT
from gateway.hub import HUB

log = logging.getLogger(__name__)

LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
UNCHECKED_PATHS: Final = frozenset({"/healthz", "/metrics"})
"""Health checks and scrapers address gateways by container or host name."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def allowed_hosts(settings: GatewaySettings) -> frozenset[str]:
    """Host names (lower case, no port) that may appear in ``Host`` besides IP addresses."""
    # The machine's own name: a page elsewhere cannot make a browser send it.
    hosts = {*LOCAL_HOSTS, socket.gethostname().lower()}
    for origin in settings.allowed_origins.split(","):
        name = _hostname(origin.strip()) if "//" in origin else None
        if name:
            hosts.add(name)
    for host in settings.public_host.split(","):
        name = _hostname("//" + host.strip()) if host.strip() else None
        if name:
            hosts.add(name)
    return frozenset(hosts)


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """True for a ``Host`` header naming an allowed host or an IP address.

    No header at all is a non-browser client (HTTP/1.0 scripts): browsers always send it.
    """
    if host is None:
        return True
    name = _hostname("//" + host.strip())
    if not name:
        return False
    if name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def client_address(request: web.BaseRequest, trust_forwarded_for: bool) -> str:
    """The address the limits count against: an IPv4 address or an IPv6 /64."""
    candidates = [request.remote or ""]
    if trust_forwarded_for:
        values = request.headers.getall("X-Forwarded-For", [])
        if values:
            candidates.insert(0, values[-1].split(",")[-1].strip())
    for raw in candidates:
        try:
            ip = ipaddress.ip_address(raw)
            break
        except ValueError:
            continue
    else:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.ip_network(f'{ip}/64', strict=False).network_address}/64"
    return str(ip)


def middleware(settings: GatewaySettings) -> Middleware:
    """Refuse foreign ``Host`` names; note the client address for the request's code."""
    hosts = allowed_hosts(settings)

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in UNCHECKED_PATHS and not host_allowed(
            request.headers.get("Host"), hosts
        ):
            request.app[HUB].metrics.drop("bad_host")
            log.info("refused a request for Host %r", request.headers.get("Host"))
            return web.json_response(
                {"error": "this gateway does not serve that host name"}, status=421
            )
        token = CLIENT.set(client_address(request, settings.trust_forwarded_for))
        try:
            return await handler(request)
        finally:
            CLIENT.reset(token)

    return edge


def _hostname(url: str) -> str | None:
    """The lower-case host name of ``url`` (``//host:port`` works), None if malformed."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, quiet about what strangers send.

    aiohttp logs a request it cannot parse with ``logger.exception`` (ERROR and
    a traceback).  On the internet that is noise: log it at INFO in one line
    and count it (``bad_request``).  Errors in our own handlers keep their
    traceback.
    """

    def __init__(self, app: web.Application) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._app = app

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            self._malformed(logging.INFO, msg, args, exc)
        else:
            super().exception(msg, *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        # aiohttp already logs non-HTTP bytes (TLS to a plain port) at DEBUG; count them.
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            self._malformed(logging.DEBUG, msg, args, exc)
        else:
            super().debug(msg, *args, **kwargs)

    def _malformed(
        self, level: int, msg: object, args: tuple[object, ...], exc: HttpProcessingError
    ) -> None:
        if HUB in self._app:
            self._app[HUB].metrics.drop("bad_request")
        text = str(msg) % args if args else str(msg)
        self.logger.log(level, "%s: %s %s", text, type(exc).__name__, exc.message)


def server_options(settings: GatewaySettings, app: web.Application) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` (and the tests' servers)."""
    return {
        "access_log": None,
        # aiohttp applies it from the connection's start until a request is
        # complete, and between requests: no other timeout covers slow headers.
        "keepalive_timeout": settings.idle_timeout_s,
        "logger": ServerLog(app),
    }
