"""Safe on the internet: the gateway's limits and edges, in-process against a real
redis-server (and a real mixer process where a join must succeed)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

import gateway.rooms
from common import keys, passwords, records
from common.protocol import hello_message
from common.records import Member, Occupancy, Role, Song
from common.settings import GatewaySettings
from gateway.app import create_app
from gateway.edge import allowed_hosts, client_address, host_allowed, server_options
from gateway.hub import HUB, Options
from gateway.rooms import PASSWORD_CHECKS
from tests.support import Stack, async_wait_until
from tests.test_gateway import FAST, ClientFactory, expect_error, metrics, next_json

JSON = {"Content-Type": "application/json"}


def make_app(
    url: str, options: Options = FAST, **changes: Any
) -> tuple[web.Application, dict[str, Any]]:
    settings = GatewaySettings(redis_url=url, **{"gateway_id": "gw-test", **changes})
    app = create_app(settings, options)
    return app, server_options(settings, app)


async def start(
    aiohttp_client: ClientFactory, url: str, options: Options = FAST, **changes: Any
) -> TestClient[Any, Any]:
    """A gateway served with the options ``brigade gateway`` uses, and a client for it."""
    app, server_kwargs = make_app(url, options, **changes)
    server = TestServer(app)
    await server.start_server(**server_kwargs)
    client: TestClient[Any, Any] = await aiohttp_client(server)  # type: ignore[arg-type]
    return client


async def hello_error(client: TestClient[Any, Any], hello: dict[str, object]) -> str:
    """Send ``hello`` on a new socket; the fatal error code it is answered with."""
    async with client.ws_connect("/ws") as ws:
        await ws.send_json(hello)
        msg = await next_json(ws)
        assert msg["type"] == "error" and msg["fatal"], msg
        return str(msg["code"])


# --- password guesses ------------------------------------------------------------------


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str | None]]:
    """Every PBKDF2 password check the gateway runs, by the password it was given."""
    calls: list[str | None] = []

    def counting(password: str | None, stored: str) -> bool:
        calls.append(password)
        return passwords.check_password(password, stored)

    monkeypatch.setattr(gateway.rooms, "check_password", counting)
    yield calls


async def test_the_sixth_wrong_password_is_refused_without_hashing_on_any_gateway(
    aiohttp_client: ClientFactory, redis_url: str, hash_calls: list[str | None]
) -> None:
    one = await start(aiohttp_client, redis_url)
    other = await start(aiohttp_client, redis_url, gateway_id="gw-other")
    assert (await one.post("/api/rooms", json={"room": "choir", "password": "s3cret"})).ok
    for i in range(5):
        wrong = hello_message("choir", "Eve", password=f"guess{i}")
        assert await hello_error(one, wrong) == "bad_password"
    assert len(hash_calls) == 5
    # The sixth, on this gateway or another, is refused before PBKDF2 runs; the
    # lock holds even for the right password.
    for client in (one, other):
        for password in ("guess5", "s3cret"):
            hello = hello_message("choir", "Eve", password=password)
            async with client.ws_connect("/ws") as ws:
                await ws.send_json(hello)
                msg = await expect_error(ws, "rate_limited", fatal=True)
                assert "too many wrong passwords" in msg["message"]
    assert len(hash_calls) == 5
    assert (await metrics(one))['bb_gateway_drops_total{reason="password_limited"}'] == 2


async def test_right_passwords_do_not_count_against_the_limit(
    aiohttp_client: ClientFactory, redis_url: str, hash_calls: list[str | None]
) -> None:
    client = await start(aiohttp_client, redis_url)
    assert (await client.post("/api/rooms", json={"room": "choir", "password": "s3cret"})).ok
    for i in range(4):
        assert await hello_error(client, hello_message("choir", "A", password=f"x{i}")) == (
            "bad_password"
        )
    for _ in range(3):  # right: no mixer here, so the join itself is unavailable
        right = hello_message("choir", "A", password="s3cret")
        assert await hello_error(client, right) == "unavailable"
    assert await hello_error(client, hello_message("choir", "A", password="x4")) == "bad_password"
    assert len(hash_calls) == 8


async def test_a_burst_of_guesses_costs_at_most_the_limit_plus_the_concurrency(
    aiohttp_client: ClientFactory, redis_url: str, hash_calls: list[str | None]
) -> None:
    client = await start(aiohttp_client, redis_url)
    assert (await client.post("/api/rooms", json={"room": "choir", "password": "s3cret"})).ok
    codes = await asyncio.gather(
        *(hello_error(client, hello_message("choir", "Eve", password=f"g{i}")) for i in range(20))
    )
    assert len(hash_calls) <= 5 + PASSWORD_CHECKS - 1
    assert codes.count("bad_password") == len(hash_calls)
    assert codes.count("rate_limited") == 20 - len(hash_calls)


async def test_a_reconnect_storm_with_the_right_password_is_never_refused(
    aiohttp_client: ClientFactory, redis_url: str, hash_calls: list[str | None]
) -> None:
    client = await start(aiohttp_client, redis_url)
    assert (await client.post("/api/rooms", json={"room": "choir", "password": "s3cret"})).ok
    hellos = [hello_message("choir", f"S{i}", password="s3cret") for i in range(25)]
    codes = await asyncio.gather(*(hello_error(client, hello) for hello in hellos))
    # No mixer runs here, so each join ends unavailable, but after the password.
    assert codes == ["unavailable"] * 25
    assert len(hash_calls) == 25


async def test_a_rooms_lock_holds_back_only_the_addresses_that_guessed_for_it(
    aiohttp_client: ClientFactory, redis_url: str, hash_calls: list[str | None]
) -> None:
    client = await start(aiohttp_client, redis_url, room_password_tries_per_min=3)
    assert (await client.post("/api/rooms", json={"room": "choir", "password": "s3cret"})).ok
    # Three addresses (a proxy says who they are), one wrong guess each, are one
    # address unless the gateway trusts the proxy: three from it lock the room...
    for i in range(3):
        async with client.ws_connect("/ws", headers={"X-Forwarded-For": f"10.0.0.{i}"}) as ws:
            await ws.send_json(hello_message("choir", "Eve", password="nope"))
            await expect_error(ws, "bad_password", fatal=True)
    # ...and so that address, under its own limit of 5, is refused by the room's.
    async with client.ws_connect("/ws") as ws:
        await ws.send_json(hello_message("choir", "Eve", password="s3cret"))
        msg = await expect_error(ws, "rate_limited", fatal=True)
        assert "for this room" in msg["message"]
    assert len(hash_calls) == 3
    # Another address still gets its guesses checked while the room is locked:
    # the right password is let through, and a typo or two are allowed.
    trusting = await start(
        aiohttp_client,
        redis_url,
        gateway_id="gw-proxied",
        trust_forwarded_for=True,
        room_password_tries_per_min=3,
    )
    fresh = {"X-Forwarded-For": "10.0.0.9"}
    passwords_tried = ["typo", "s3cret", "nope", "again"]
    for password, code in zip(
        passwords_tried, ["bad_password", "unavailable"] + ["bad_password"] * 2, strict=True
    ):
        async with trusting.ws_connect("/ws", headers=fresh) as ws:
            await ws.send_json(hello_message("choir", "Ann", password=password))
            await expect_error(ws, code, fatal=True)
    assert hash_calls[3:] == passwords_tried
    # Three wrong for this room from 10.0.0.9: now the room's lock holds it back too.
    async with trusting.ws_connect("/ws", headers=fresh) as ws:
        await ws.send_json(hello_message("choir", "Ann", password="s3cret"))
        await expect_error(ws, "rate_limited", fatal=True)
    assert len(hash_calls) == 7


# --- what a password room shows -----------------------------------------------------------


async def test_a_password_room_shows_nothing_but_its_name(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    client = await start(aiohttp_client, redis_url)
    assert (await client.post("/api/rooms", json={"room": "secret", "password": "pw"})).ok
    assert (await client.post("/api/rooms", json={"room": "open"})).ok
    r = redis.Redis.from_url(redis_url)
    member = Member(
        singer_id="s-1", name="Zelda", role=Role.SINGER, delay=144000, bucket=0, joined=1
    )
    song = Song(running=True, leader="s-1", start_pos=1, number=1)
    occ = Occupancy(clock=5, ring_samples=1280, frame_samples=128, occupied=3, bitmap=b"\0\0")
    for room in ("secret", "open"):
        r.hset(keys.room_members(room), "s-1", records.encode(member))
        r.hset(keys.room_song(room), mapping={"state": records.encode(song), "version": 3})
        r.set(keys.room_occupancy(room), records.encode(occ))
    r.close()

    listing = await (await client.get("/api/rooms")).json()
    assert {"room": "secret", "password": True} in listing["rooms"]
    shown = await client.get("/api/rooms/secret")
    assert (shown.status, await shown.json()) == (200, {"room": "secret", "password": True})
    hidden = await client.get("/api/rooms/secret/occupancy")
    assert hidden.status == 403
    for body in (json.dumps(listing), await shown.text(), await hidden.text()):
        secret_part = body.split('"open"')[0] if '"open"' in body else body
        assert "Zelda" not in secret_part and "s-1" not in secret_part
    # An open room still shows everything.
    assert (await (await client.get("/api/rooms/open")).json())["members"][0]["name"] == "Zelda"
    assert (await client.get("/api/rooms/open/occupancy")).status == 200
    assert any(room.get("singers") == 1 for room in listing["rooms"] if room["room"] == "open")


# --- room creation -------------------------------------------------------------------------


async def test_room_creation_needs_a_json_body_and_an_allowed_origin(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    client = await start(aiohttp_client, redis_url)
    body = json.dumps({"room": "choir"})
    # What a cross-site form or a no-preflight fetch can send.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = await client.post(
            "/api/rooms",
            data=body,
            headers={"Content-Type": content_type, "Origin": "https://evil.example"},
        )
        assert response.status == 415, content_type
    foreign = await client.post(
        "/api/rooms", data=body, headers={**JSON, "Origin": "https://evil.example"}
    )
    assert foreign.status == 403
    own = f"http://{client.server.host}:{client.server.port}"
    assert (await client.post("/api/rooms", data=body, headers={**JSON, "Origin": own})).ok
    r = redis.Redis.from_url(redis_url)
    assert r.smembers(keys.ROOMS) == {b"choir"}
    r.close()
    counts = await metrics(client)
    assert counts['bb_gateway_drops_total{reason="bad_content_type"}'] == 3
    assert counts['bb_gateway_drops_total{reason="bad_origin"}'] == 1


async def test_room_creation_is_limited_per_address_and_capped(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    client = await start(
        aiohttp_client, redis_url, rooms_per_min=3, room_cap=5, trust_forwarded_for=True
    )

    async def create(room: str, address: str) -> aiohttp.ClientResponse:
        headers = {**JSON, "X-Forwarded-For": address}
        return await client.post("/api/rooms", json={"room": room}, headers=headers)

    for i in range(3):
        assert (await create(f"a{i}", "192.0.2.1")).status == 201
    limited = await create("a3", "192.0.2.1")
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert "new rooms a minute" in (await limited.json())["error"]
    for i in range(2):
        assert (await create(f"b{i}", "192.0.2.2")).status == 201
    capped = await create("b2", "192.0.2.2")
    assert capped.status == 403
    assert "maximum of 5 rooms" in (await capped.json())["error"]
    # A hello that would create a room meets the same cap.
    async with client.ws_connect("/ws", headers={"X-Forwarded-For": "192.0.2.3"}) as ws:
        await ws.send_json(hello_message("c0", "Ann"))
        msg = await expect_error(ws, "rate_limited", fatal=True)
        assert "maximum of 5 rooms" in msg["message"]
    counts = await metrics(client)
    assert counts['bb_gateway_drops_total{reason="rooms_limited"}'] == 1
    assert counts['bb_gateway_drops_total{reason="room_cap"}'] == 2


# --- host names ---------------------------------------------------------------------------


async def test_foreign_host_names_are_refused(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    client = await start(
        aiohttp_client,
        redis_url,
        public_host="sing.example.org",
        allowed_origins="https://choir.example:8443",
    )
    port = client.server.port
    for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example", "[bad"):
        response = await client.get("/api/rooms", headers={"Host": host})
        assert response.status == 421, host
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect("/ws", headers={"Host": host})
        assert info.value.status == 421
    for host in (
        f"localhost:{port}",
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        "192.0.2.7",
        "sing.example.org",
        "SING.example.org:443",
        "choir.example",
    ):
        assert (await client.get("/api/rooms", headers={"Host": host})).status == 200, host
    # Health checks and scrapers name gateways by container name.
    assert (await client.get("/healthz", headers={"Host": "gateway-1:8080"})).status == 200
    counts = await metrics(client)
    assert counts['bb_gateway_drops_total{reason="bad_host"}'] == 8


# --- aiohttp's server: malformed requests and slow headers -------------------------------


async def raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_malformed_requests_are_logged_in_one_line_and_counted(
    aiohttp_client: ClientFactory, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start(aiohttp_client, redis_url)
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    for request in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to a plain port
        b"GET / HTTP/1.1\r\nHost: localhost\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX: " + b"y" * 20_000 + b"\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
    ):
        answer = await raw_exchange(client.server.port or 0, request)
        assert answer.split(b" ", 2)[1] == b"400", answer[:80]
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records
    assert all(r.levelno <= logging.INFO and r.exc_info is None for r in records), [
        (r.levelname, r.getMessage()) for r in records
    ]
    counts = await metrics(client)
    assert counts['bb_gateway_drops_total{reason="bad_request"}'] == 4


async def test_a_slow_header_trickle_is_cut_off(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    client = await start(aiohttp_client, redis_url, idle_timeout_s=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
    closed = False
    try:
        for i in range(40):  # one header line every quarter second, never the end
            writer.write(f"X-Slow-{i}: 1\r\n".encode())
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1024), 0.25)
            except TimeoutError:
                continue
            if data == b"":
                closed = True
                break
    except ConnectionError:
        closed = True
    finally:
        writer.close()
    assert closed, "the server kept a request whose headers never end"


async def test_a_slow_body_trickle_is_cut_off(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    client = await start(aiohttp_client, redis_url, idle_timeout_s=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    body = json.dumps({"room": "slowly"}).encode()
    writer.write(
        b"POST /api/rooms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    answer = b""
    try:
        for byte in body[:-1]:  # never the last byte
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(1024), 0.25)
            except TimeoutError:
                continue
            break
    finally:
        writer.close()
    assert answer.split(b" ", 2)[1:2] == [b"408"], answer[:80]
    assert (await metrics(client))['bb_gateway_drops_total{reason="slow_body"}'] == 1


# --- closing ---------------------------------------------------------------------------


@pytest.mark.stack(gateways=0)  # the mixer that answers joins
async def test_nothing_is_processed_after_the_server_closes(
    aiohttp_client: ClientFactory, redis_url: str, stack: Stack
) -> None:
    client = await start(aiohttp_client, redis_url, Options(reply_timeout_s=15))
    ws = await client.ws_connect("/ws")
    await ws.send_json(hello_message("choir", "Ann", req=1))
    while (await next_json(ws))["type"] != "welcome":
        pass
    # leave, then more in the same breath: the server closes after leave and must
    # act on nothing that follows.
    batch = [{"type": "leave", "req": 2}] + [
        {"type": "chat", "text": f"after {i}", "req": 3 + i} for i in range(5)
    ]
    for message in batch:
        await ws.send_str(json.dumps(message))
    replies = []
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        replies.append(json.loads(msg.data))
    await ws.close()
    assert {"type": "ack", "req": 2} in replies
    assert not [r for r in replies if r.get("req", 0) >= 3], replies
    r = redis.Redis.from_url(redis_url)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = r.xrange(keys.room_events("choir"))  # type: ignore[assignment]
    r.close()
    chats = [e for _, f in entries if (e := msgspec.msgpack.decode(f[b"d"]))["type"] == "chat"]
    assert chats == []
    counts = await metrics(client)
    assert counts["bb_gateway_chat_total"] == 0
    assert counts['bb_gateway_drops_total{reason="after_close"}'] >= 1


async def test_a_client_that_does_not_let_the_close_finish_is_dropped(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    # Waiting for hello for long: only the close can end this connection.
    client = await start(aiohttp_client, redis_url, Options(hello_timeout_s=60))
    hub = client.app[HUB]
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(
            b"HTTP/1.1 101"
        )
        # The server wants it gone (as at shutdown, or for not reading), but this
        # client never answers the close frame and never sends anything.
        await async_wait_until(lambda: hub.sessions, 5, "the server's session")
        session = next(iter(hub.sessions))
        session.close_deadline_s = 0.5
        # A full send buffer: the outbox holds the close back (the client never reads).
        assert session.transport is not None
        session.transport.get_write_buffer_size = lambda: 10**9
        session.close(1008, "not reading")
        await async_wait_until(lambda: not hub.sessions, 10, "the session to be dropped")
        assert not hub.sessions
        counts = await metrics(client)
        assert counts['bb_gateway_drops_total{reason="close_timeout"}'] == 1
    finally:
        writer.close()


# --- the edge's pure parts ---------------------------------------------------------------


def test_hosts_and_client_addresses() -> None:
    settings = GatewaySettings(
        public_host="Sing.Example.org, other.example:8443",
        allowed_origins="https://choir.example, http://[2001:db8::1]:8080",
    )
    hosts = allowed_hosts(settings)
    assert hosts >= {"localhost", "127.0.0.1", "::1", "sing.example.org", "other.example"}
    assert {"choir.example", "2001:db8::1"} <= hosts
    assert socket.gethostname().lower() in hosts
    for ok in (None, "localhost", "SING.example.org:80", "10.0.0.1:8080", "[fe80::1]:80"):
        assert host_allowed(ok, hosts), ok
    for bad in ("", "evil.example", "localhost.evil.example", "[nope", "sing.example.org.evil"):
        assert not host_allowed(bad, hosts), bad


def test_client_addresses_count_ipv6_per_64_and_trust_only_a_trusted_proxy() -> None:
    def address(peer: str, forwarded: str | None, trust: bool) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        request = make_mocked_request("GET", "/", headers=headers)
        request._transport_peername = (peer, 1234)
        return client_address(request, trust)

    assert address("192.0.2.5", None, False) == "192.0.2.5"
    assert address("2001:db8:1:2:aaaa::1", None, False) == "2001:db8:1:2::/64"
    assert address("::ffff:192.0.2.9", None, False) == "192.0.2.9"
    assert address("10.0.0.2", "198.51.100.1, 203.0.113.7", False) == "10.0.0.2"
    assert address("10.0.0.2", "198.51.100.1, 203.0.113.7", True) == "203.0.113.7"
    assert address("10.0.0.2", "garbage", True) == "10.0.0.2"
    assert address("not an address", None, False) == "unknown"
