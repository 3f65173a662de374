"""The gateway serves a room's recordings: listed newest first, downloaded by name,
the stems of one in a ZIP made while it is sent, members only in a room with a
password (in-process gateway, real redis-server, recordings made by the
recorder's own code)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from common import keys
from common.errors import ValidationError
from common.recording import Recording, decode_sidecar, encode_sidecar
from gateway.recordings import recording_file, stems_of
from gateway.rooms import token_digest
from gateway.zipstream import zip_chunks
from tests.recordingfiles import make_recording
from tests.support import async_wait_until
from tests.test_gateway import ClientFactory
from tests.test_gateway_guard import JSON, make_app, start

SEAT = {"X-BB-Singer": "s-1", "X-BB-Token": "tok"}
STEM = "open-song2-20261201-0810-Ann"


def recording(root: Path, room: str, stem: str, created: float) -> None:
    folder = root / room
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.flac").write_bytes(b"fLaC" + stem.encode())
    sidecar = Recording(
        room=room, song=1, start_pos=0, end_pos=1, created=created, flac=f"{stem}.flac", ogg=""
    )
    (folder / f"{stem}.json").write_text(encode_sidecar(sidecar))


async def rooms(client: TestClient[Any, Any], redis_url: str) -> None:
    """Rooms ``open`` and ``closed`` (password), with seat SEAT in ``closed``."""
    for body in ({"room": "open"}, {"room": "closed", "password": "secret"}):
        assert (await client.post("/api/rooms", data=json.dumps(body), headers=JSON)).status == 201
    store = redis.Redis.from_url(redis_url)
    store.hset(keys.room_tokens("closed"), "s-1", token_digest("tok"))
    store.close()


async def test_recordings_are_listed_and_served_to_members_only(
    aiohttp_client: ClientFactory, redis_url: str, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, redis_url, recordings_dir=str(tmp_path))
    for body in ({"room": "open"}, {"room": "closed", "password": "secret"}):
        assert (await client.post("/api/rooms", data=json.dumps(body), headers=JSON)).status == 201
    recording(tmp_path, "open", "open-song1-20261201-0800-Ann", 1.0)
    recording(tmp_path, "open", "open-song2-20261201-0810-Ann", 2.0)
    recording(tmp_path, "closed", "closed-song1-20261201-0800-Bo", 1.0)
    # A sidecar that is not a Recording (common/recording.py) is left out of the list.
    (tmp_path / "open" / "broken.json").write_text("[1, 2]")
    (tmp_path / "open" / "odd.json").write_text(json.dumps({"created": "yesterday"}))

    listed = await (await client.get("/api/rooms/open/recordings")).json()
    assert [r["created"] for r in listed["recordings"]] == [2.0, 1.0]
    assert listed["members_only"] is False
    got = await client.get("/api/rooms/open/recordings/open-song1-20261201-0800-Ann.flac")
    assert got.status == 200 and await got.read() == b"fLaCopen-song1-20261201-0800-Ann"
    assert got.headers["Content-Type"] == "audio/flac"
    for bad in ("../closed/x.flac", "nothing.flac", "open-song1.wav", "%2e%2e%2fclosed.json"):
        assert (await client.get(f"/api/rooms/open/recordings/{bad}")).status == 404
    assert (await client.get("/api/rooms/nowhere/recordings")).status == 404

    # A password room: only a seat in the room sees its recordings.
    assert (await client.get("/api/rooms/closed/recordings")).status == 401
    seat = {"X-BB-Singer": "s-1", "X-BB-Token": "tok"}
    assert (await client.get("/api/rooms/closed/recordings", headers=seat)).status == 403
    store = redis.Redis.from_url(redis_url)
    store.hset(keys.room_tokens("closed"), "s-1", token_digest("tok"))
    store.close()
    listed = await (await client.get("/api/rooms/closed/recordings", headers=seat)).json()
    assert len(listed["recordings"]) == 1 and listed["members_only"] is True
    name = "closed-song1-20261201-0800-Bo.flac"
    assert (await client.get(f"/api/rooms/closed/recordings/{name}")).status == 401
    assert (await client.get(f"/api/rooms/closed/recordings/{name}", headers=seat)).status == 200


def test_file_names_are_the_recorders_and_nothing_else() -> None:
    good = {
        f"{STEM}.flac": "audio/flac",
        f"{STEM}.ogg": "audio/ogg",
        f"{STEM}.json": "application/json",
        f"{STEM}.stem-01-Ann.flac": "audio/flac",
        f"{STEM}.stem-12-Bob-B.flac": "audio/flac",
        f"{STEM}.stem-100-s-3f2a.flac": "audio/flac",
        f"{STEM}.track.flac": "audio/flac",
        f"{STEM}.lof": "text/plain; charset=utf-8",
        f"{STEM}.rpp": "text/plain; charset=utf-8",
    }
    for name, content_type in good.items():
        assert recording_file(name) == content_type, name
    bad = [
        f"{STEM}.wav",
        f"{STEM}.zip",
        f"{STEM}.stems.zip",
        f"{STEM}.flac.tmp",
        f"{STEM}.lof.tmp",
        f".{STEM}.flac",
        f"{STEM}..flac",
        f"{STEM}.stem-01-Ann.ogg",
        f"{STEM}.stem-01-Ann.lof",
        f"{STEM}.stem-1-Ann.flac",
        f"{STEM}.stem-01-.flac",
        f"{STEM}.stem-01-A.n.flac",
        f"{STEM}.track.ogg",
        f"{STEM}.other.flac",
        f"{STEM}.track.track.flac",
        f"../{STEM}.flac",
        f"x/{STEM}.flac",
        f"{STEM}.flac/",
        f"{STEM}.flac\n",
        "x" * 201 + ".flac",
        ".flac",
        "",
    ]
    for name in bad:
        assert recording_file(name) is None, name


def sidecar(**fields: object) -> Recording:
    """A sidecar as the gateway reads it: JSON decoded into the one Recording type."""
    base = {"room": "choir", "song": 1, "start_pos": 0, "end_pos": 48_000}
    return decode_sidecar(
        json.dumps({**base, "flac": f"{STEM}.flac", "ogg": f"{STEM}.ogg", **fields})
    )


def test_a_sidecar_reads_and_writes_as_the_recorder_wrote_it(tmp_path: Path) -> None:
    """The text the recorder wrote before the sidecar was typed (a637896's dict) round-trips."""
    old = {
        "room": "choir",
        "song": 3,
        "start_pos": 1,
        "end_pos": 48_001,
        "length_s": 1.0,
        "leader": "s-0",
        "created": 1764576000.5,
        "track": "t-0123456789ab",
        "metronome": False,
        "flac": f"{STEM}.flac",
        "ogg": f"{STEM}.ogg",
        "stems": [{"singer": None, "name": "Backing track", "file": f"{STEM}.track.flac"}],
        "lof": f"{STEM}.lof",
        "rpp": None,
    }
    text = json.dumps(old, indent=1)
    assert encode_sidecar(decode_sidecar(text)) == text
    written = make_recording(tmp_path, "choir", 2, created=5.0, stems=["Ann"], track=True)
    path = tmp_path / "choir" / written["flac"].replace(".flac", ".json")
    assert encode_sidecar(decode_sidecar(path.read_bytes())) == path.read_text()


def test_a_sidecar_names_only_its_own_stems() -> None:
    named = sidecar(
        stems=[{"singer": "s-0", "name": "Ann", "file": f"{STEM}.stem-01-Ann.flac"}],
        lof=f"{STEM}.lof",
        rpp=f"{STEM}.rpp",
    )
    assert stems_of(named, STEM) == [f"{STEM}.stem-01-Ann.flac", f"{STEM}.lof", f"{STEM}.rpp"]
    assert stems_of(sidecar(stems=[], lof=None, rpp=None), STEM) == []
    assert stems_of(sidecar(created=1.0), STEM) == []  # a sidecar from before stems
    for malformed in ({"stems": "all"}, {"stems": [{"file": None}]}, {"created": True}):
        with pytest.raises(ValidationError, match="sidecar"):
            sidecar(**malformed)
    with pytest.raises(ValidationError, match="sidecar"):
        decode_sidecar("[]")

    def stem(file: str) -> dict[str, object]:
        return {"singer": None, "name": "x", "file": file}

    for broken, why in (
        (sidecar(stems=[stem("../x.flac")]), "names a file"),
        (sidecar(stems=[stem("other-song1-20261201-0800-Bo.stem-01-Bo.flac")]), "not a stem"),
        (sidecar(stems=[stem(f"{STEM}.ogg")]), "not a stem"),
        (sidecar(stems=[stem(f"{STEM}.track.flac")], lof=f"{STEM}.track.flac"), "twice"),
    ):
        with pytest.raises(ValueError, match=why):
            stems_of(broken, STEM)


def test_a_zip_is_made_a_block_at_a_time(tmp_path: Path) -> None:
    """Each chunk holds at most one block of a member (plus headers), and the chunks
    together are a valid ZIP of the files, stored, byte for byte."""
    contents = {"a.flac": os.urandom(10_000), "empty.lof": b"", "b.flac": os.urandom(2_500)}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    opened = [(name, (tmp_path / name).open("rb")) for name in contents]
    try:
        chunks = list(zip_chunks(opened, block_bytes=1000))
    finally:
        for _, f in opened:
            f.close()
    assert all(0 < len(c) <= 1000 + 200 for c in chunks[:-1])
    assert len(chunks) >= 13  # 10 blocks of a, 3 of b
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert archive.testzip() is None
        assert [i.filename for i in archive.infolist()] == list(contents)
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
        for name, data in contents.items():
            assert archive.read(name) == data
    with pytest.raises(ValueError, match="block_bytes"):
        next(zip_chunks([], block_bytes=0))


def files_of(sidecar: dict[str, Any]) -> list[str]:
    return [s["file"] for s in sidecar["stems"]] + [sidecar["lof"], sidecar["rpp"]]


async def test_every_file_of_a_recording_with_stems_is_served(
    aiohttp_client: ClientFactory, redis_url: str, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, redis_url, recordings_dir=str(tmp_path))
    await rooms(client, redis_url)
    sidecar = make_recording(tmp_path, "open", 2, 1796112600.0, stems=["Ann", "Bo"], track=True)
    folder = tmp_path / "open"
    names = [sidecar["flac"], sidecar["ogg"], f"{Path(sidecar['flac']).stem}.json"]
    names += files_of(sidecar)
    assert len(names) == 8  # mix, listening copy, sidecar, 2 singers, track, 2 projects
    for name in names:
        got = await client.get(f"/api/rooms/open/recordings/{name}")
        assert got.status == 200, name
        assert await got.read() == (folder / name).read_bytes()
        assert got.headers["Content-Type"] == recording_file(name)
        assert got.headers["Content-Disposition"] == f'attachment; filename="{name}"'
        assert got.headers["X-Content-Type-Options"] == "nosniff"
    # Names of the right shape that are not on disk; names of the wrong shape.
    for name in (f"{STEM}.stem-03-Cy.flac", f"{STEM}.stem-01-Ann.wav", f".{STEM}.lof"):
        got = await client.get(f"/api/rooms/open/recordings/{name}")
        assert got.status == 404 and "error" in await got.json()


async def test_the_stems_come_in_one_zip_that_opens_in_the_editors(
    aiohttp_client: ClientFactory, redis_url: str, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, redis_url, recordings_dir=str(tmp_path))
    await rooms(client, redis_url)
    sidecar = make_recording(tmp_path, "open", 2, 1796112600.0, stems=["Ann", "Bo"], track=True)
    stem = Path(sidecar["flac"]).stem
    got = await client.get(f"/api/rooms/open/recordings/{stem}.stems.zip")
    assert got.status == 200
    assert got.headers["Content-Type"] == "application/zip"
    assert got.headers["Content-Disposition"] == f'attachment; filename="{stem}.stems.zip"'
    body = await got.read()
    folder = tmp_path / "open"
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == files_of(sidecar)
        for info in archive.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            assert archive.read(info) == (folder / info.filename).read_bytes()
        # The projects name the stems by bare file name: all of them are in the ZIP.
        lof = archive.read(sidecar["lof"]).decode()
        assert [line.split('"')[1] for line in lof.splitlines()] == files_of(sidecar)[:3]
        rpp = archive.read(sidecar["rpp"]).decode()
        assert all(f'FILE "{name}"' in rpp for name in files_of(sidecar)[:3])
    head = await client.head(f"/api/rooms/open/recordings/{stem}.stems.zip")
    assert head.status == 200 and await head.read() == b""


async def test_a_zip_is_refused_in_words_without_stems_or_seat(
    aiohttp_client: ClientFactory, redis_url: str, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, redis_url, recordings_dir=str(tmp_path))
    await rooms(client, redis_url)
    plain = Path(make_recording(tmp_path, "open", 1, 1796112000.0)["flac"]).stem
    for url, words in (
        (f"/api/rooms/open/recordings/{plain}.stems.zip", "no stems"),
        ("/api/rooms/open/recordings/open-song9-20261201-0900-Ann.stems.zip", "no such"),
        ("/api/rooms/open/recordings/a.b.stems.zip", "no such"),
        ("/api/rooms/open/recordings/..stems.zip", "no such"),
        ("/api/rooms/nowhere/recordings/x.stems.zip", "no room"),
    ):
        got = await client.get(url)
        assert got.status == 404, url
        assert words in (await got.json())["error"], url
    # A sidecar that names a file outside its recording is not followed.
    (tmp_path / "open" / "evil.json").write_text(
        json.dumps({"stems": [{"file": f"{plain}.flac"}], "lof": "../closed/x.lof"})
    )
    got = await client.get("/api/rooms/open/recordings/evil.stems.zip")
    assert got.status == 404 and "cannot be read" in (await got.json())["error"]

    # A password room: members only, as for every other file.
    sidecar = make_recording(tmp_path, "closed", 1, 1796112000.0, stems=["Bo"])
    url = f"/api/rooms/closed/recordings/{Path(sidecar['flac']).stem}.stems.zip"
    assert (await client.get(url)).status == 401
    assert (await client.get(url, headers={**SEAT, "X-BB-Token": "wrong"})).status == 403
    got = await client.get(url, headers=SEAT)
    assert got.status == 200
    with zipfile.ZipFile(io.BytesIO(await got.read())) as archive:
        assert archive.namelist() == files_of(sidecar)


def open_files_under(folder: Path) -> list[str]:
    """Files under ``folder`` this process holds open."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            held.append(target)
    return held


class _Server(TestServer):
    """The test server, with or without cancelling a handler whose client went away
    (aiohttp's test server cancels; ``brigade gateway`` runs aiohttp's default, not)."""

    def __init__(self, app: web.Application, cancel: bool) -> None:
        super().__init__(app)
        self.cancel = cancel

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs["handler_cancellation"] = self.cancel
        return await super()._make_runner(**kwargs)


@pytest.mark.parametrize("cancel", [False, True], ids=["as-deployed", "handler-cancelled"])
async def test_a_client_that_goes_away_mid_zip_leaves_nothing_open(
    aiohttp_client: ClientFactory, redis_url: str, tmp_path: Path, cancel: bool
) -> None:
    """Bigger than the socket buffers, so the gateway is still sending when the client
    hangs up: the files are closed, and the next download is whole."""
    app, server_kwargs = make_app(redis_url, recordings_dir=str(tmp_path))
    server = _Server(app, cancel)
    await server.start_server(**server_kwargs)
    client: TestClient[Any, Any] = await aiohttp_client(server)  # type: ignore[arg-type]
    await rooms(client, redis_url)
    folder = tmp_path / "open"
    folder.mkdir()
    stems = []
    for i in range(3):
        name = f"{STEM}.stem-0{i + 1}-S{i}.flac"
        (folder / name).write_bytes(os.urandom(16 * 1024 * 1024))
        stems.append({"singer": f"s-{i}", "name": f"S{i}", "file": name})
    (folder / f"{STEM}.json").write_text(encode_sidecar(sidecar(created=1.0, stems=stems)))
    url = f"/api/rooms/open/recordings/{STEM}.stems.zip"
    got = await client.get(url)
    assert got.status == 200
    assert len(await got.content.readexactly(100_000)) == 100_000
    assert open_files_under(folder)  # still sending
    got.close()
    await async_wait_until(
        lambda: not open_files_under(folder), 20, "the gateway to close the stems"
    )
    again = await client.get(url)
    with zipfile.ZipFile(io.BytesIO(await again.read())) as archive:
        assert archive.namelist() == [s["file"] for s in stems]
        assert archive.testzip() is None
    assert not open_files_under(folder)
