"""The gateway's HTTP endpoints: the browser client, the JSON API, health, metrics.

Every handler answers JSON errors with a status and a message, never a
traceback; Redis being unreachable is a 503 everywhere.  A room with a
password shows nothing but its name (and that it has one) over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Final

import msgspec
from aiohttp import web

from common import metricsserver
from common.constants import constants_json
from common.errors import ValidationError
from common.names import check_room
from common.protocol import MAX_PASSWORD_CHARS, limits_json
from common.redisclient import REDIS_ERRORS
from gateway import ws
from gateway.guard import LimitReached
from gateway.hub import HUB
from gateway.listeners import MAX_LISTENERS
from gateway.material import add_material_routes
from gateway.metrics import render
from gateway.recordings import add_recording_routes
from gateway.rooms import MAX_CAPACITY

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
_MAX_BODY_BYTES: Final = 4096
_PLACEHOLDER: Final = """<!doctype html>
<meta charset="utf-8"><title>Bucket Brigade</title>
<h1>Bucket Brigade</h1>
<p>The browser client is not installed in this build (gateway/static/ is missing).
The WebSocket is at <code>/ws</code>; see docs/protocol.md.</p>
"""


def add_routes(app: web.Application, static_dir: Path = STATIC_DIR) -> None:
    """Register every HTTP route of the gateway (the WebSocket included)."""

    async def index(_: web.Request) -> web.StreamResponse:
        page = static_dir / "index.html"
        if page.is_file():
            return web.FileResponse(page)
        return web.Response(text=_PLACEHOLDER, content_type="text/html")

    app.router.add_get("/", index)
    # A room's link (/r/choir) is the page itself; the page reads the room from its path.
    app.router.add_get("/r/{room}", index)
    app.router.add_get("/ws", ws.handle)
    app.router.add_get("/api/constants", constants)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_post("/api/rooms", create_room)
    app.router.add_get("/api/rooms/{room}", room_state)
    app.router.add_get("/api/rooms/{room}/occupancy", room_occupancy)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_material_routes(app)
    add_recording_routes(app)
    if static_dir.is_dir():
        app.router.add_static("/static/", static_dir, follow_symlinks=False)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _unavailable(exc: Exception) -> web.Response:
    log.warning("request failed, Redis unreachable: %s", exc)
    return _error(503, "Redis is unreachable; retry")


async def constants(request: web.Request) -> web.Response:
    settings = request.app[HUB].settings
    return web.json_response(
        {
            **constants_json(),
            **limits_json(settings.max_message_bytes, settings.max_messages_per_s),
            "reconnect_grace_s": settings.reconnect_grace_s,
        }
    )


async def list_rooms(request: web.Request) -> web.Response:
    try:
        rooms = await request.app[HUB].rooms.listing()
    except REDIS_ERRORS as exc:
        return _unavailable(exc)
    return web.json_response({"rooms": rooms})


async def create_room(request: web.Request) -> web.Response:
    """``POST /api/rooms``: JSON only, and from an allowed Origin when a browser asks.

    A cross-site form or ``fetch`` without a preflight can only send
    ``text/plain`` or form bodies; a JSON one needs a CORS preflight, which
    this gateway never grants.  The Origin check covers the rest.
    """
    hub = request.app[HUB]
    if request.content_type != "application/json":
        hub.metrics.drop("bad_content_type")
        return _error(415, "send the room as JSON (Content-Type: application/json)")
    if not ws.origin_allowed(request, hub.allowed_origins):
        hub.metrics.drop("bad_origin")
        log.info("refused room creation from Origin %r", request.headers.get("Origin"))
        return _error(403, "origin not allowed")
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        room = check_room(body.get("room"))
        password = body.get("password")
        if password is not None and (
            not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD_CHARS
        ):
            raise ValidationError(f"password must be a string of 1-{MAX_PASSWORD_CHARS} characters")
        capacity = body.get("capacity")
        if capacity is not None and (
            not isinstance(capacity, int)
            or isinstance(capacity, bool)
            or not 1 <= capacity <= MAX_CAPACITY
        ):
            raise ValidationError(f"capacity must be an integer in [1, {MAX_CAPACITY}]")
        listeners = body.get("listeners")
        if listeners is not None and (
            not isinstance(listeners, int)
            or isinstance(listeners, bool)
            or not 0 <= listeners <= MAX_LISTENERS
        ):
            raise ValidationError(f"listeners must be an integer in [0, {MAX_LISTENERS}]")
    except ValidationError as exc:
        return _error(400, str(exc))
    try:
        created = await hub.rooms.create(room, password, capacity, listeners)
    except REDIS_ERRORS as exc:
        return _unavailable(exc)
    except LimitReached as exc:
        return _limited(exc)
    if not created:
        return _error(409, f"room {room} already exists")
    return web.json_response(
        {
            "room": room,
            "capacity": capacity or hub.settings.default_capacity,
            "listeners": hub.settings.default_listeners if listeners is None else listeners,
            "password": password is not None,
        },
        status=201,
    )


async def room_state(request: web.Request) -> web.Response:
    room = _room(request)
    if room is None:
        return _error(404, "no such room")
    hub = request.app[HUB]
    try:
        meta = await hub.rooms.meta(room)
        if meta is None:
            return _error(404, f"no room named {room}")
        if meta.has_password:
            return web.json_response({"room": room, "password": True})
        view = hub.views.get(room)
        state = view.state if view is not None else await hub.rooms.state(room)
    except REDIS_ERRORS as exc:
        return _unavailable(exc)
    except ValidationError as exc:
        log.warning("room %s: %s", room, exc)
        return _error(503, "the room's settings cannot be read")
    if state is None:
        return _error(404, f"no room named {room}")
    return web.json_response(msgspec.to_builtins(state))


async def room_occupancy(request: web.Request) -> web.Response:
    room = _room(request)
    if room is None:
        return _error(404, "no such room")
    rooms = request.app[HUB].rooms
    try:
        meta = await rooms.meta(room)
        if meta is not None and meta.has_password:
            return _error(403, f"room {room} is protected by a password")
        snapshot = await rooms.occupancy(room)
    except REDIS_ERRORS as exc:
        return _unavailable(exc)
    except ValidationError as exc:
        log.warning("room %s: %s", room, exc)
        return _error(503, "the room's settings cannot be read")
    if snapshot is None:
        return _error(404, f"no occupancy published for room {room} (no mixer owns it yet)")
    return web.json_response(snapshot)


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[HUB].redis.ping()
    except (*REDIS_ERRORS, OSError) as exc:
        log.debug("health check: Redis unreachable: %s", exc)
        return web.Response(status=503, text="redis unavailable\n")
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return metricsserver.response(render(hub.metrics, hub.gauges(), hub.room_figures()))


def _limited(exc: LimitReached) -> web.Response:
    response = _error(exc.status, str(exc))
    response.headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return response


def _room(request: web.Request) -> str | None:
    try:
        return check_room(request.match_info["room"])
    except ValidationError:
        return None


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > _MAX_BODY_BYTES:
        return _error(413, f"body over {_MAX_BODY_BYTES} bytes")
    hub = request.app[HUB]
    raw = bytearray()
    try:
        # The whole body, however it is split, within the idle timeout: a body
        # trickled byte by byte must not hold the request open for ever.
        async with asyncio.timeout(hub.settings.idle_timeout_s):
            while len(raw) <= _MAX_BODY_BYTES:
                chunk = await request.content.read(_MAX_BODY_BYTES + 1 - len(raw))
                if not chunk:
                    break
                raw += chunk
    except TimeoutError:
        hub.metrics.drop("slow_body")
        return _error(408, f"body not received within {hub.settings.idle_timeout_s:g} s")
    if len(raw) > _MAX_BODY_BYTES:
        return _error(413, f"body over {_MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return _error(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    return body
