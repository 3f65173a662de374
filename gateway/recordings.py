"""HTTP endpoints for a room's recordings (made by ``brigade recorder``, docs/recording.md).

``GET /api/rooms/{room}/recordings`` lists them, newest first (each one's
JSON sidecar); ``GET /api/rooms/{room}/recordings/{file}`` sends one file
(``.flac``, ``.ogg`` or ``.json``). A room with a password shows them only
to its members: the request carries the seat the page holds (headers
``X-BB-Singer`` and ``X-BB-Token``), checked as a resume is. The files are
read from ``BB_RECORDINGS_DIR`` (the recorder's volume, mounted read-only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from redis.exceptions import RedisError

from common.errors import ValidationError
from common.names import check_room
from gateway.hub import HUB

log = logging.getLogger(__name__)

__all__ = ["add_recording_routes"]

_FILE: Final = re.compile(r"[A-Za-z0-9_-]{1,200}\.(flac|ogg|json)")
_TYPES: Final = {"flac": "audio/flac", "ogg": "audio/ogg", "json": "application/json"}


def add_recording_routes(app: web.Application) -> None:
    """Register the recordings endpoints."""
    app.router.add_get("/api/rooms/{room}/recordings", list_recordings)
    app.router.add_get("/api/rooms/{room}/recordings/{file}", get_recording)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _folder(request: web.Request) -> Path | web.Response:
    """The room's recordings folder, once the request may see it."""
    try:
        room = check_room(request.match_info["room"])
    except ValidationError:
        return _error(404, "no such room")
    hub = request.app[HUB]
    try:
        meta = await hub.rooms.meta(room)
        if meta is None:
            return _error(404, f"no room named {room}")
        if meta.has_password:
            singer = request.headers.get("X-BB-Singer", "")
            token = request.headers.get("X-BB-Token", "")
            if not singer or not token or len(singer) > 64 or len(token) > 128:
                return _error(401, "members only: send your seat (X-BB-Singer and X-BB-Token)")
            if not await hub.rooms.resume_ok(room, singer, token):
                return _error(403, "that seat is not in this room")
    except RedisError as exc:
        log.warning("recordings: Redis unreachable: %s", exc)
        return _error(503, "Redis is unreachable; retry")
    except ValidationError as exc:
        log.warning("room %s: %s", room, exc)
        return _error(503, "the room's settings cannot be read")
    return Path(hub.settings.recordings_dir) / room


def _listing(folder: Path) -> list[dict[str, Any]]:
    found = []
    for sidecar in folder.glob("*.json"):
        try:
            found.append(json.loads(sidecar.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(
        (r for r in found if isinstance(r, dict)),
        key=lambda r: float(r.get("created", 0.0)),
        reverse=True,
    )


async def list_recordings(request: web.Request) -> web.Response:
    folder = await _folder(request)
    if isinstance(folder, web.Response):
        return folder
    recordings = await asyncio.to_thread(_listing, folder)
    return web.json_response({"recordings": recordings})


async def get_recording(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    match = _FILE.fullmatch(name)
    if match is None:
        return _error(404, "no such recording")
    folder = await _folder(request)
    if isinstance(folder, web.Response):
        return folder
    path = folder / name
    if not await asyncio.to_thread(path.is_file):
        return _error(404, "no such recording (retention may have removed it)")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": _TYPES[match.group(1)],
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, max-age=3600",
        },
    )
