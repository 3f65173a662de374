"""HTTP endpoints for a room's recordings (made by ``brigade recorder``, docs/recording.md).

- ``GET /api/rooms/{room}/recordings`` lists them, newest first (each one's
  JSON sidecar), and says whether fetching them needs the seat
  (``members_only``).
- ``GET /api/rooms/{room}/recordings/{file}`` sends one file of a recording:
  the mix (``<stem>.flac``, ``<stem>.ogg``), its sidecar (``<stem>.json``),
  and with stems each singer's and the track's FLAC
  (``<stem>.stem-01-Ann.flac``, ``<stem>.track.flac``) and the two projects
  (``<stem>.lof``, ``<stem>.rpp``). Any other name is a 404, before the disk
  is looked at.
- ``GET /api/rooms/{room}/recordings/{stem}.stems.zip`` sends the stems, the
  track and the projects of one recording in one ZIP, the files its sidecar
  lists under their own names (the projects name the stems by bare file
  name, so they open once unzipped together). The ZIP is made while it is
  sent (gateway/zipstream.py): stored, not compressed, one block in memory,
  each block read by one of two worker threads of its own (a slow client
  holds no thread, and the downloads never take the threads the rest of the
  gateway uses). 404 when the recording has no stems.

A room with a password shows them only to its members: the request carries
the seat the page holds (headers ``X-BB-Singer`` and ``X-BB-Token``), checked
as a resume is. The files are read from ``BB_RECORDINGS_DIR`` (the
recorder's volume, mounted read-only). Every file is sent as an attachment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

import msgspec
from aiohttp import web

from common.errors import ValidationError
from common.names import check_room
from common.recording import Recording, decode_sidecar
from common.redisclient import REDIS_ERRORS
from gateway.hub import HUB
from gateway.zipstream import zip_chunks

log = logging.getLogger(__name__)

__all__ = ["add_recording_routes", "recording_file", "stems_of"]

# The names recorder/files.py gives a recording's files: letters, digits, `_`
# and `-` in every part, so no `/`, no `..` and no leading dot can get through.
_STEM: Final = re.compile(r"[A-Za-z0-9_-]{1,200}")
_FILE: Final = re.compile(
    r"[A-Za-z0-9_-]{1,200}"
    r"(?:\.(?:stem-[0-9]{2,4}-[A-Za-z0-9_-]{1,64}|track)\.flac|\.(?:flac|ogg|json|lof|rpp))"
)
_TYPES: Final = {
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "json": "application/json",
    # Audacity's list of files and REAPER's project are plain text.
    "lof": "text/plain; charset=utf-8",
    "rpp": "text/plain; charset=utf-8",
}
_ZIP_THREADS: Final = web.AppKey("recording_zip_threads", ThreadPoolExecutor)


def add_recording_routes(app: web.Application) -> None:
    """Register the recordings endpoints (the ZIP's before the one for single files)."""
    app.cleanup_ctx.append(_zip_threads)
    app.router.add_get("/api/rooms/{room}/recordings", list_recordings)
    app.router.add_get("/api/rooms/{room}/recordings/{stem}.stems.zip", get_stems_zip)
    app.router.add_get("/api/rooms/{room}/recordings/{file}", get_recording)


async def _zip_threads(app: web.Application) -> AsyncIterator[None]:
    app[_ZIP_THREADS] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stems-zip")
    yield
    app[_ZIP_THREADS].shutdown(wait=False, cancel_futures=True)


def recording_file(name: str) -> str | None:
    """The content type of a recording's file called ``name``, or None for any other name."""
    if _FILE.fullmatch(name) is None:
        return None
    return _TYPES[name.rsplit(".", 1)[1]]


def stems_of(sidecar: Recording, stem: str) -> list[str]:
    """The files of recording ``stem`` that go into its stems ZIP, from its sidecar:
    each stem's and the track's FLAC, then the ``.lof`` and ``.rpp``; empty
    without stems. Raises ValueError for a sidecar that names anything else."""
    if not sidecar.stems:
        return []
    names = [s.file for s in sidecar.stems]
    names += [name for name in (sidecar.lof, sidecar.rpp) if name is not None]
    for name in names:
        if recording_file(name) is None:
            raise ValueError(f"the sidecar names a file {name!r}")
        if not name.startswith(f"{stem}.") or name.endswith((".json", ".ogg")):
            raise ValueError(f"the sidecar names {name!r}, not a stem of {stem}")
    if len(set(names)) != len(names):
        raise ValueError("the sidecar names a file twice")
    return names


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _Room(NamedTuple):
    name: str
    folder: Path
    members_only: bool


async def _room(request: web.Request) -> _Room | web.Response:
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
    except REDIS_ERRORS as exc:
        log.warning("recordings: Redis unreachable: %s", exc)
        return _error(503, "Redis is unreachable; retry")
    except ValidationError as exc:
        log.warning("room %s: %s", room, exc)
        return _error(503, "the room's settings cannot be read")
    return _Room(room, Path(hub.settings.recordings_dir) / room, meta.has_password)


def _listing(folder: Path) -> list[Recording]:
    """The sidecars in ``folder``, newest first; unreadable ones are left out."""
    found = []
    for sidecar in folder.glob("*.json"):
        try:
            found.append(decode_sidecar(sidecar.read_bytes()))
        except (OSError, ValidationError):
            continue
    return sorted(found, key=lambda r: r.created, reverse=True)


async def list_recordings(request: web.Request) -> web.Response:
    room = await _room(request)
    if isinstance(room, web.Response):
        return room
    recordings = await asyncio.to_thread(_listing, room.folder)
    return web.json_response(
        {"recordings": msgspec.to_builtins(recordings), "members_only": room.members_only}
    )


def _attachment(content_type: str, name: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, max-age=3600",
    }


async def get_recording(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    content_type = recording_file(name)
    if content_type is None:
        return _error(404, "no such recording")
    room = await _room(request)
    if isinstance(room, web.Response):
        return room
    path = room.folder / name
    if not await asyncio.to_thread(path.is_file):
        return _error(404, "no such recording (retention may have removed it)")
    return web.FileResponse(path, headers=_attachment(content_type, name))


class _Opened(NamedTuple):
    members: Sequence[tuple[str, BinaryIO]]
    files: contextlib.ExitStack


def _open_stems(folder: Path, stem: str) -> _Opened:
    """Open the files of ``stem``'s stems ZIP. Open files stay readable when
    retention deletes them meanwhile. Raises LookupError (a 404) with the reason."""
    try:
        sidecar = decode_sidecar((folder / f"{stem}.json").read_bytes())
    except FileNotFoundError:
        raise LookupError("no such recording (retention may have removed it)") from None
    except (OSError, ValidationError) as exc:
        log.warning("recording %s/%s: its sidecar cannot be read: %s", folder.name, stem, exc)
        raise LookupError("that recording cannot be read") from None
    try:
        names = stems_of(sidecar, stem)
    except ValueError as exc:
        log.warning("recording %s/%s: %s", folder.name, stem, exc)
        raise LookupError("that recording cannot be read") from None
    if not names:
        raise LookupError("that recording has no stems (the leader did not ask for them)")
    files = contextlib.ExitStack()
    try:
        members = [(name, files.enter_context((folder / name).open("rb"))) for name in names]
    except OSError:
        files.close()
        raise LookupError("that recording's stems are gone (retention removed them)") from None
    return _Opened(members, files)


async def get_stems_zip(request: web.Request) -> web.StreamResponse:
    stem = request.match_info["stem"]
    if _STEM.fullmatch(stem) is None:
        return _error(404, "no such recording")
    room = await _room(request)
    if isinstance(room, web.Response):
        return room
    try:
        opened = await asyncio.to_thread(_open_stems, room.folder, stem)
    except LookupError as exc:
        return _error(404, str(exc.args[0]))
    response = web.StreamResponse(headers=_attachment("application/zip", f"{stem}.stems.zip"))
    chunks = zip_chunks(opened.members)
    step: Future[bytes] | None = None
    try:
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        while True:
            step = request.app[_ZIP_THREADS].submit(next, chunks, b"")
            chunk = await asyncio.wrap_future(step)
            if not chunk:
                break
            await response.write(chunk)
    except ConnectionError:
        log.debug("stems of %s/%s: the client went away", room.name, stem)
    except OSError as exc:
        # Too late for a status: cut the connection so the download shows as failed.
        log.warning("stems of %s/%s: %s; the download is cut short", room.name, stem, exc)
        if request.transport is not None:
            request.transport.close()
    finally:
        # A cancelled handler (the gateway stopping) may leave a block being read:
        # close the archive and the files once that read is over, in its thread.
        if step is None or step.done():
            _close(chunks, opened.files)
        else:
            step.add_done_callback(lambda _: _close(chunks, opened.files))
    return response


def _close(chunks: Generator[bytes, None, None], files: contextlib.ExitStack) -> None:
    with files:
        chunks.close()
