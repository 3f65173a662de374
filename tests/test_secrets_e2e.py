"""Secrets survive a Redis restart, through real gateways: a password room stays closed
and resume tokens keep working, with Redis restarted empty and restarted from its AOF.

A real redis-server (restarted on its port), a real mixer and a real gateway;
the client speaks docs/protocol.md (tests/test_gateway_e2e.py's ``Peer``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import aiohttp
import pytest
import redis

from brigade.redisserver import LocalRedis
from common import keys
from common import protocol as p
from tests.support import Process, free_port, healthy, processes, wait_until
from tests.test_gateway_e2e import Peer


@pytest.mark.parametrize("persistent", [False, True], ids=["empty-restart", "aof-restart"])
async def test_a_password_room_stays_closed_and_tokens_work_after_a_redis_restart(
    persistent: bool, http: aiohttp.ClientSession, output_dir: Path, tmp_path: Path
) -> None:
    server = LocalRedis(persist_dir=str(tmp_path / "aof") if persistent else None)
    server.start()
    client = redis.Redis(port=server.port)
    port = free_port()
    ws = f"ws://127.0.0.1:{port}/ws"
    try:
        with processes(output_dir) as started:
            env = {"REDIS_URL": server.url}
            started.append(Process(["mixer"], {**env, "BB_MIXER_ID": "sx"}, output_dir, "mixer"))
            gw_env = {**env, "BB_PORT": str(port), "BB_GATEWAY_ID": "sgw"}
            started.append(Process(["gateway"], gw_env, output_dir, "gateway"))
            wait_until(functools.partial(healthy, f"http://127.0.0.1:{port}"), 20, "the gateway")

            ann = Peer(http, ws)
            await ann.join("vault", "Ann", password="open sesame")
            await ann.close()  # her place is kept for the reconnect grace (30 s)

            server.stop()
            server.start()  # empty, or from the append-only file
            wait_until(
                lambda: client.hget(keys.room_meta("vault"), "password_hash"),
                15,
                "the room's password hash in Redis again",
            )
            eve = Peer(http, ws)
            refused = await eve.hello("vault", "Eve")
            assert (refused["type"], refused["code"]) == ("error", "bad_password")
            wrong = Peer(http, ws)
            refused = await wrong.hello("vault", "Eve", password="guess")
            assert (refused["type"], refused["code"]) == ("error", "bad_password")
            back = Peer(http, ws)
            welcome = await back.join(
                "vault", "Ann", password="open sesame", resume=p.Resume(ann.singer, ann.token)
            )
            assert welcome["singer"] == ann.singer  # the same place, through the token
            for peer in (eve, wrong, back):
                await peer.close()
    finally:
        client.close()
        server.stop()
