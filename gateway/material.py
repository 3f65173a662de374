"""HTTP endpoints for song material: backing tracks (upload, library) and the room's image.

Uploads change room state, so only the room's leader may make them. The
request proves who sends it with the seat the page already holds: headers
``X-BB-Singer`` and ``X-BB-Token`` (the resume token of ``welcome``),
checked against ``bb:{R}:tokens`` exactly as a resume is. The gateway then
checks the file (in a thread: decoding is CPU work), stores its bytes under
a fresh id with a TTL (``bb:{R}:track:{id}``, ``bb:{R}:image:{id}``), and
asks the room's mixer to list it (``add_track`` / ``set_image``); a refusal
deletes the bytes again, so a refused upload changes nothing.

Reading a track or an image needs no seat, like the room state itself.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Final, Literal

from aiohttp import web

from common import keys, records
from common.codes import Code
from common.commands import AddTrack, SetImage
from common.errors import ValidationError
from common.events import Reply
from common.names import check_room
from common.records import Image, Song, Track
from common.redisclient import REDIS_ERRORS
from gateway.hub import HUB, Hub
from gateway.images import MAX_IMAGE_BYTES, image_type
from gateway.tracks import (
    MAX_TRACK_BYTES,
    PreparedTrack,
    UploadError,
    library_file,
    library_listing,
    prepare_track,
)

log = logging.getLogger(__name__)

__all__ = ["add_material_routes"]

_DECODES: Final = web.AppKey("track_decodes", asyncio.Semaphore)
"""At most two tracks decode at once per gateway (each holds up to ~200 MB while it does)."""
_MAX_NAME_CHARS: Final = 120
_STATUS: Final = {Code.NOT_LEADER: 403, Code.SONG_RUNNING: 409, Code.UNKNOWN_SINGER: 403}


def add_material_routes(app: web.Application) -> None:
    """Register the track and image endpoints."""
    app[_DECODES] = asyncio.Semaphore(2)
    app.router.add_get("/api/tracks", list_library)
    app.router.add_post("/api/rooms/{room}/tracks", add_track)
    app.router.add_get("/api/rooms/{room}/tracks/{id}", get_track)
    app.router.add_post("/api/rooms/{room}/image", set_image)
    app.router.add_get("/api/rooms/{room}/images/{id}", get_image)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def list_library(request: web.Request) -> web.Response:
    """``GET /api/tracks``: the files of ``BB_TRACKS_DIR``, read on every request."""
    folder = request.app[HUB].settings.tracks_dir
    return web.json_response({"tracks": await asyncio.to_thread(library_listing, folder)})


async def add_track(request: web.Request) -> web.Response:
    """``POST /api/rooms/{room}/tracks``: the body is an audio file (``?name=``), or
    ``?library=NAME`` takes a file of the tracks folder. Leader only."""
    hub = request.app[HUB]
    try:
        room, singer = await _leader_of(request)
        library = request.query.get("library")
        source: Literal["upload", "library"]
        if library is not None:
            path = library_file(hub.settings.tracks_dir, library)
            data = await asyncio.to_thread(path.read_bytes)
            name = path.name
            source = "library"
        else:
            data = await _body(request, MAX_TRACK_BYTES)
            name = request.query.get("name", "") or "upload"
            source = "upload"
        async with request.app[_DECODES]:
            prepared: PreparedTrack = await asyncio.to_thread(prepare_track, data)
        track = Track(
            id=f"t-{secrets.token_hex(6)}",
            name=_clean_name(name),
            samples=prepared.samples,
            size_bytes=len(prepared.ogg),
            source=source,
        )
        key = keys.room_track(room, track.id)
        await _store_and_send(hub, room, singer, key, prepared.ogg, AddTrack(track=track))
    except UploadError as exc:
        hub.metrics.inc("uploads_refused_total")
        log.info("room upload refused (%d): %s", exc.status, exc.message)
        return _error(exc.status, exc.message)
    except REDIS_ERRORS as exc:
        log.warning("track upload: Redis unreachable: %s", exc)
        return _error(503, "Redis is unreachable; retry")
    hub.metrics.inc("uploads_total")
    log.info(
        "room %s: track %s (%s, %.1f s) from a %s file in %.2f s",
        room,
        track.id,
        track.name,
        track.samples / 48000,
        prepared.source_kind,
        prepared.decode_s,
    )
    return web.json_response(
        {
            "track": {
                "id": track.id,
                "name": track.name,
                "samples": track.samples,
                "bytes": track.size_bytes,
            },
            "source": {
                "kind": prepared.source_kind,
                "rate": prepared.source_rate,
                "channels": prepared.source_channels,
            },
            "decode_ms": round(prepared.decode_s * 1000, 1),
        },
        status=201,
    )


async def set_image(request: web.Request) -> web.Response:
    """``POST /api/rooms/{room}/image``: the body is a PNG, JPEG or WebP image. Leader only."""
    hub = request.app[HUB]
    try:
        room, singer = await _leader_of(request)
        data = await _body(request, MAX_IMAGE_BYTES)
        content_type = image_type(data)
        image = Image(
            id=f"i-{secrets.token_hex(6)}", content_type=content_type, size_bytes=len(data)
        )
        key = keys.room_image(room, image.id)
        await _store_and_send(hub, room, singer, key, data, SetImage(image=image))
    except UploadError as exc:
        hub.metrics.inc("uploads_refused_total")
        log.info("image upload refused (%d): %s", exc.status, exc.message)
        return _error(exc.status, exc.message)
    except REDIS_ERRORS as exc:
        log.warning("image upload: Redis unreachable: %s", exc)
        return _error(503, "Redis is unreachable; retry")
    hub.metrics.inc("uploads_total")
    return web.json_response(
        {"image": {"id": image.id, "content_type": content_type, "bytes": len(data)}}, status=201
    )


async def get_track(request: web.Request) -> web.StreamResponse:
    """``GET /api/rooms/{room}/tracks/{id}``: the track as Ogg Opus (48 kHz mono)."""
    return await _blob(request, "track")


async def get_image(request: web.Request) -> web.StreamResponse:
    """``GET /api/rooms/{room}/images/{id}``: the image, with its own type and ``nosniff``."""
    return await _blob(request, "image")


async def _blob(request: web.Request, kind: str) -> web.StreamResponse:
    blob_id = request.match_info["id"]
    try:
        room = check_room(request.match_info["room"])
    except ValidationError:
        return _error(404, "no such room")
    prefix = "t-" if kind == "track" else "i-"
    if not (blob_id.startswith(prefix) and len(blob_id) == 14 and blob_id[2:].isalnum()):
        return _error(404, f"no such {kind}")
    key = keys.room_track(room, blob_id) if kind == "track" else keys.room_image(room, blob_id)
    try:
        data = await request.app[HUB].redis.get(key)
    except REDIS_ERRORS as exc:
        log.warning("%s read: Redis unreachable: %s", kind, exc)
        return _error(503, "Redis is unreachable; retry")
    if not isinstance(data, bytes):
        return _error(404, f"no such {kind} (it may have expired)")
    if kind == "track":
        content_type = "audio/ogg"
    else:
        try:
            content_type = image_type(data)
        except UploadError:
            return _error(404, "no such image")
    return web.Response(
        body=data,
        headers={
            "Content-Type": content_type,
            "X-Content-Type-Options": "nosniff",
            # Ids are never reused: a stored track or image never changes.
            "Cache-Control": "private, max-age=3600, immutable",
            "Content-Disposition": "inline",
        },
    )


async def _leader_of(request: web.Request) -> tuple[str, str]:
    """The room and the singer, once the seat is proven and belongs to the leader."""
    try:
        room = check_room(request.match_info["room"])
    except ValidationError:
        raise UploadError(404, "no such room") from None
    singer = request.headers.get("X-BB-Singer", "")
    token = request.headers.get("X-BB-Token", "")
    if not singer or not token or len(singer) > 64 or len(token) > 128:
        raise UploadError(401, "send your seat (X-BB-Singer and X-BB-Token) with an upload")
    rooms = request.app[HUB].rooms
    if not await request.app[HUB].redis.exists(keys.room_meta(room)):
        raise UploadError(404, "no such room")
    if not await rooms.resume_ok(room, singer, token):
        raise UploadError(403, "that seat is not in this room")
    raw = await request.app[HUB].redis.hget(keys.room_song(room), "state")
    try:
        song = records.decode(raw, Song) if raw is not None else Song()
    except ValidationError:
        song = Song()
    if song.leader != singer:
        raise UploadError(403, "only the leader can add a track or an image")
    return room, singer


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise UploadError(413, f"the file is over {limit // (1024 * 1024)} MB")
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.read(1 << 16)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise UploadError(413, f"the file is over {limit // (1024 * 1024)} MB")
        chunks.append(chunk)


async def _store_and_send(
    hub: Hub, room: str, singer: str, key: str, data: bytes, cmd: AddTrack | SetImage
) -> None:
    """Store the bytes, then have the room list them; undo the store when it does not."""
    ttl_ms = round(hub.settings.material_ttl_s * 1000)
    await hub.redis.set(key, data, px=ttl_ms)
    reply: Reply | None = None
    try:
        # The reply comes on the room's events, which this gateway may not follow yet.
        await hub.events.watch(room)
        try:
            reply = await hub.events.command(room, singer, cmd, hub.options.reply_timeout_s)
        finally:
            hub.events.unwatch(room)
    finally:
        if reply is None or not reply.ok:
            await hub.redis.delete(key)
    if reply is None:
        raise UploadError(503, "the room's mixer did not answer; retry")
    if not reply.ok:
        raise UploadError(
            _STATUS.get(reply.code, 400) if reply.code else 400,
            reply.message or "the room refused it",
        )


def _clean_name(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in name if c.isprintable()).strip()
    return (cleaned or "track")[:_MAX_NAME_CHARS]
