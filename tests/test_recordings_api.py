"""The gateway serves a room's recordings: listed newest first, downloaded by name,
members only in a room with a password (in-process gateway, real redis-server)."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from common import keys
from gateway.rooms import token_digest
from tests.test_gateway import ClientFactory
from tests.test_gateway_guard import JSON, start


def recording(root: Path, room: str, stem: str, created: float) -> None:
    folder = root / room
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.flac").write_bytes(b"fLaC" + stem.encode())
    (folder / f"{stem}.json").write_text(json.dumps({"room": room, "created": created}))


async def test_recordings_are_listed_and_served_to_members_only(
    aiohttp_client: ClientFactory, redis_url: str, tmp_path: Path
) -> None:
    client = await start(aiohttp_client, redis_url, recordings_dir=str(tmp_path))
    for body in ({"room": "open"}, {"room": "closed", "password": "secret"}):
        assert (await client.post("/api/rooms", data=json.dumps(body), headers=JSON)).status == 201
    recording(tmp_path, "open", "open-song1-20261201-0800-Ann", 1.0)
    recording(tmp_path, "open", "open-song2-20261201-0810-Ann", 2.0)
    recording(tmp_path, "closed", "closed-song1-20261201-0800-Bo", 1.0)

    listed = await (await client.get("/api/rooms/open/recordings")).json()
    assert [r["created"] for r in listed["recordings"]] == [2.0, 1.0]
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
    assert len(listed["recordings"]) == 1
    name = "closed-song1-20261201-0800-Bo.flac"
    assert (await client.get(f"/api/rooms/closed/recordings/{name}")).status == 401
    assert (await client.get(f"/api/rooms/closed/recordings/{name}", headers=seat)).status == 200
