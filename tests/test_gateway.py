"""The gateway app in-process (aiohttp test server) against a real redis-server.

No mixer runs here: these tests cover the HTTP API, the checks made before a
join, and Redis outages.  tests/test_gateway_e2e.py runs the real processes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import pytest
import redis
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from common import keys
from common.commands import Disconnect, Join, decode_envelope
from common.protocol import hello_message
from common.settings import GatewaySettings
from gateway.app import create_app
from gateway.hub import Options
from tests.support import RedisServer, async_wait_until

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]

FAST = Options(hello_timeout_s=0.5, reply_timeout_s=0.5)


def make_app(url: str, options: Options = FAST, **changes: Any) -> web.Application:
    settings = GatewaySettings(redis_url=url, gateway_id="gw-test", **changes)
    return create_app(settings, options)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, redis_url: str) -> TestClient[Any, Any]:
    return await aiohttp_client(make_app(redis_url))


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def expect_error(
    ws: aiohttp.ClientWebSocketResponse, code: str, *, fatal: bool = False
) -> dict[str, Any]:
    msg = await next_json(ws)
    assert msg["type"] == "error", msg
    assert (msg["code"], msg["fatal"]) == (code, fatal), msg
    assert msg["message"] and "Traceback" not in msg["message"]
    if fatal:
        closed = await ws.receive(timeout=5)
        assert closed.type in {WSMsgType.CLOSE, WSMsgType.CLOSED}
    return msg


async def metrics(client: TestClient[Any, Any]) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status == 200
    values = {}
    for line in (await response.text()).splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


# --- HTTP ---------------------------------------------------------------------------


async def test_health_constants_and_the_client_page(client: TestClient[Any, Any]) -> None:
    response = await client.get("/healthz")
    assert (response.status, await response.text()) == (200, "ok\n")
    constants = await (await client.get("/api/constants")).json()
    assert constants["sample_rate"] == 48000
    assert constants["opus_frame_samples"] == 960
    assert constants["max_message_bytes"] == 64 * 1024
    assert constants["reconnect_grace_s"] == 30.0  # the page's give-up time
    page = await client.get("/")
    assert page.status == 200
    assert "<html" in (await page.text()).lower() or "Bucket Brigade" in await page.text()
    # A room's link is the same page.
    link = await client.get("/r/choir")
    assert (link.status, await link.text()) == (200, await page.text())


async def test_rooms_api(client: TestClient[Any, Any], redis_url: str) -> None:
    created = await client.post("/api/rooms", json={"room": "choir", "password": "pw"})
    assert created.status == 201
    assert await created.json() == {
        "room": "choir",
        "capacity": 100,
        "listeners": 10_000,
        "password": True,
    }
    assert (await client.post("/api/rooms", json={"room": "choir"})).status == 409
    assert (await client.post("/api/rooms", json={"room": "Choir"})).status == 409  # one room
    small = await client.post("/api/rooms", json={"room": "duo", "capacity": 2})
    assert small.status == 201
    for body in (
        {"room": "bad name"},
        {"room": "x", "capacity": 0},
        {"room": "x", "capacity": "9"},
        {"room": "x", "password": 5},
        {"room": "x", "password": ""},
        ["room"],
    ):
        response = await client.post("/api/rooms", json=body)
        assert response.status == 400, body
        assert "error" in await response.json()
    as_json = {"Content-Type": "application/json"}
    assert (await client.post("/api/rooms", data=b"{nope", headers=as_json)).status == 400
    assert (await client.post("/api/rooms", data=b"x" * 10_000, headers=as_json)).status == 413

    listing = await (await client.get("/api/rooms")).json()
    assert listing == {
        "rooms": [
            {"room": "choir", "password": True},
            {"room": "duo", "singers": 0, "capacity": 2, "password": False, "song": False},
        ]
    }
    state = await (await client.get("/api/rooms/duo")).json()
    assert state["room"] == "duo"
    assert await (await client.get("/api/rooms/DUO")).json() == state
    assert state["members"] == []
    assert state["buckets"]["delays"][:2] == [144000, 288000]
    assert (await client.get("/api/rooms/nowhere")).status == 404
    assert (await client.get("/api/rooms/bad%20name")).status == 404
    assert (await client.get("/api/rooms/duo/occupancy")).status == 404

    # The password is stored hashed, never in clear.
    meta: dict[bytes, bytes] = redis.Redis.from_url(redis_url).hgetall(keys.room_meta("choir"))  # type: ignore[assignment]
    stored = meta[b"password_hash"].decode()
    assert stored.startswith("pbkdf2_sha256$") and "pw" not in stored.split("$", 2)[2]


async def test_occupancy_is_served_as_json(client: TestClient[Any, Any], redis_url: str) -> None:
    snapshot = {
        "clock": 5,
        "ring_samples": 1280,
        "frame_samples": 128,
        "occupied": 3,
        "bitmap": b"\xe0\x00",
    }
    redis.Redis.from_url(redis_url).set(
        keys.room_occupancy("choir"), msgspec.msgpack.encode(snapshot)
    )
    body = await (await client.get("/api/rooms/choir/occupancy")).json()
    assert body == {**snapshot, "room": "choir", "bitmap": "4AA="}


async def test_the_websocket_checks_the_origin(client: TestClient[Any, Any]) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    assert info.value.status == 403
    own = f"http://{client.server.host}:{client.server.port}"
    async with client.ws_connect("/ws", headers={"Origin": own}) as ws:
        await ws.send_str("{}")
        await expect_error(ws, "bad_message")


async def test_configured_origins_are_allowed(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    client = await aiohttp_client(
        make_app(redis_url, allowed_origins="https://choir.example, https://b.example")
    )
    async with client.ws_connect("/ws", headers={"Origin": "https://choir.example"}) as ws:
        await ws.send_str("[]")
        await expect_error(ws, "bad_message")


# --- before the join ----------------------------------------------------------------


async def test_everything_before_hello_is_refused(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("garbage")
        await expect_error(ws, "bad_message")
        await ws.send_json({"type": "ping", "id": 1, "t": 0, "req": 7})
        assert (await expect_error(ws, "not_joined"))["req"] == 7
        await ws.send_bytes(b"\x01" * 40)
        await expect_error(ws, "not_joined")
        await ws.send_json({"type": "chat", "text": "x" * 600, "req": 8})
        assert (await expect_error(ws, "bad_message"))["req"] == 8
    counts = await metrics(client)
    assert counts['bb_gateway_drops_total{reason="not_joined"}'] == 2
    assert counts['bb_gateway_drops_total{reason="bad_message"}'] == 2


async def test_no_hello_in_time_closes(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as ws:
        await expect_error(ws, "hello_timeout", fatal=True)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"version": 9}, "version"),
        ({"room": "no spaces"}, "bad_room"),
        ({"name": ""}, "bad_name"),
        ({"role": "boss"}, "bad_role"),
        ({"codec": "flac"}, "bad_codec"),
        ({"resume": {"singer": "s-000000000000", "token": "forged"}}, "bad_resume"),
    ],
)
async def test_bad_hellos_are_fatal(
    client: TestClient[Any, Any], change: dict[str, object], code: str
) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({**hello_message("choir", "Ann"), **change, "req": 1})
        assert (await expect_error(ws, code, fatal=True))["req"] == 1


async def test_a_password_protects_the_room(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/api/rooms", json={"room": "choir", "password": "s3cret"})).ok
    for password in (None, "wrong"):
        async with client.ws_connect("/ws") as ws:
            await ws.send_json(hello_message("choir", "Ann", password=password))
            await expect_error(ws, "bad_password", fatal=True)


async def test_without_a_mixer_a_join_is_unavailable(
    client: TestClient[Any, Any], redis_url: str
) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_json(hello_message("newroom", "Ann", password="pw"))
        await expect_error(ws, "unavailable", fatal=True)
    # The first hello created the room, with its password, and asked the mixer to join.
    client_redis = redis.Redis.from_url(redis_url)
    assert client_redis.sismember(keys.ROOMS, "newroom")
    assert client_redis.hget(keys.room_meta("newroom"), "password_hash")
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client_redis.xrange(keys.room_ctl("newroom"))  # type: ignore[assignment]
    commands = [decode_envelope(fields[b"d"]) for _, fields in entries]
    assert [type(c.cmd) for c in commands] == [Join, Disconnect]
    assert isinstance(commands[0].cmd, Join) and commands[0].cmd.name == "Ann"
    assert commands[0].gw == "gw-test"
    token_hash = client_redis.hget(keys.room_tokens("newroom"), commands[0].singer)
    assert isinstance(token_hash, bytes) and len(token_hash) == 64


async def test_too_large_closes_with_1009(aiohttp_client: ClientFactory, redis_url: str) -> None:
    client = await aiohttp_client(make_app(redis_url, max_message_bytes=1000))
    async with client.ws_connect("/ws") as ws:
        await ws.send_bytes(b"\x00" * 1500)
        await expect_error(ws, "too_large", fatal=True)
        assert ws.close_code == 1009
    async with client.ws_connect("/ws") as ws:
        await ws.send_bytes(b"\x00" * 5000)  # beyond what aiohttp even reads
        closed = await ws.receive(timeout=5)
        assert closed.type is WSMsgType.CLOSE and closed.data == 1009
    counts = await metrics(client)
    assert counts['bb_gateway_drops_total{reason="too_large"}'] == 2


async def test_message_rate_is_limited(aiohttp_client: ClientFactory, redis_url: str) -> None:
    client = await aiohttp_client(make_app(redis_url, max_messages_per_s=5))
    async with client.ws_connect("/ws") as ws:
        for _ in range(30):
            await ws.send_str("{}")
        seen = set()
        while "rate_limited" not in seen:
            seen.add((await next_json(ws))["code"])
    counts = await metrics(client)
    assert counts['bb_gateway_drops_total{reason="rate_limited"}'] >= 1


# --- Redis outages -----------------------------------------------------------------


async def test_a_redis_outage_is_survived(
    aiohttp_client: ClientFactory, private_redis: RedisServer
) -> None:
    client = await aiohttp_client(make_app(private_redis.url))
    assert (await client.get("/healthz")).status == 200
    private_redis.stop()
    assert (await client.get("/healthz")).status == 503
    assert (await client.get("/api/rooms")).status == 503
    async with client.ws_connect("/ws") as ws:
        await ws.send_json(hello_message("choir", "Ann"))
        await expect_error(ws, "unavailable", fatal=True)
    private_redis.start()

    async def healthy() -> bool:
        return (await client.get("/healthz")).status == 200

    await async_wait_until(healthy, 10, "the gateway to find Redis again")
    assert (await client.post("/api/rooms", json={"room": "after"})).status == 201
