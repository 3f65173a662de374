"""A room's durable state comes back into an empty Redis, and its singers rejoin.

The machine goes down: the mixer is killed (its memory, which would write the
room back, is gone) and the audio Redis, which keeps no file, is killed and
restarted empty. The keeper puts the room back from the state Redis (an
append-only file): its password, members, resume tokens, song and console.
Real redis-servers, a real keeper, mixer and gateway; the clients speak
docs/protocol.md (tests/test_gateway_e2e.py's ``Peer``).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from brigade.redisserver import LocalRedis
from common import keys
from common import protocol as p
from keeper import durable
from tests.support import Process, free_port, healthy, processes, wait_for
from tests.test_gateway_e2e import Peer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def members_by_name(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in state["members"]}


async def test_a_room_comes_back_into_an_empty_redis_and_its_singers_rejoin(
    http: aiohttp.ClientSession, output_dir: Path, tmp_path: Path
) -> None:
    audio = LocalRedis()
    audio.start()
    kept = LocalRedis(persist_dir=str(tmp_path / "state"))
    kept.start()
    client = redis.Redis(port=audio.port)
    store = redis.Redis(port=kept.port)
    port = free_port()
    ws = f"ws://127.0.0.1:{port}/ws"
    password = "open sesame"
    try:
        with processes(output_dir) as started:
            env = {"REDIS_URL": audio.url, "BB_LOG_LEVEL": "INFO"}
            metrics_port = free_port()
            keeper_env = {
                **env,
                "BB_STATE_REDIS_URL": kept.url,
                "BB_METRICS_PORT": str(metrics_port),
            }
            started.append(Process(["keeper"], keeper_env, output_dir, "keeper"))
            wait_for(lambda: client.exists(durable.MARKER), 20, "the keeper")
            mixer = Process(["mixer"], {**env, "BB_MIXER_ID": "kx"}, output_dir, "mixer")
            started.append(mixer)
            gw_env = {**env, "BB_PORT": str(port), "BB_GATEWAY_ID": "kgw"}
            started.append(Process(["gateway"], gw_env, output_dir, "gateway"))
            wait_for(functools.partial(healthy, f"http://127.0.0.1:{port}"), 20, "the gateway")

            ann, bob = Peer(http, ws), Peer(http, ws)
            await ann.join("vault", "Ann", password=password)
            await bob.join("vault", "Bob", password=password)
            await ann.ok("lead")
            await ann.ok("set_gain", target=bob.singer, gain_db=-9)
            await ann.ok("solo", target=bob.singer, on=True)
            await ann.ok("set_rounds", bpm=120, beats=4, repeats=2)
            await ann.ok("start")
            await ann.wait(lambda m: m["type"] == "state" and m["state"]["song"]["running"])
            await ann.ok("stop")
            before = (
                await ann.wait(
                    lambda m: m["type"] == "state" and m["state"]["song"]["stopped_by"] is not None
                )
            )["state"]
            version = client.hget(keys.room_song("vault"), "version")
            wait_for(
                lambda: store.hget(keys.room_song("vault"), "version") == version,
                10,
                "the keeper to copy the room's last state",
            )
            await ann.close()
            await bob.close()

            # The machine goes down: the mixer and the audio Redis with it.
            mixer.kill()
            assert audio.proc is not None
            audio.proc.kill()
            audio.proc.wait()
            audio.start()  # empty: it keeps no file
            started.append(
                Process(["mixer"], {**env, "BB_MIXER_ID": "kx"}, output_dir, "mixer-again")
            )
            wait_for(lambda: client.exists(durable.MARKER), 20, "the keeper to restore")
            wait_for(functools.partial(healthy, f"http://127.0.0.1:{port}"), 20, "the gateway")

            # The room is still closed to strangers.
            eve = Peer(http, ws)
            refused = await eve.hello("vault", "Eve")
            assert (refused["type"], refused["code"]) == ("error", "bad_password")
            # Its singers rejoin in their places, with the console and the song as they were.
            ann2, bob2 = Peer(http, ws), Peer(http, ws)
            welcome = await ann2.join(
                "vault", "Ann", password=password, resume=p.Resume(ann.singer, ann.token)
            )
            assert welcome["singer"] == ann.singer
            welcome = await bob2.join(
                "vault", "Bob", password=password, resume=p.Resume(bob.singer, bob.token)
            )
            assert welcome["singer"] == bob.singer
            after = (await ann2.wait_member(bob.singer, connected=True))["state"]
            members = members_by_name(after)
            assert members["Bob"]["gain_db"] == -9.0 and members["Bob"]["soloed"]
            assert members["Ann"]["singer_id"] == ann.singer
            song, old = after["song"], before["song"]
            assert after["leader"] == ann.singer and after["solo"] == [bob.singer]
            assert song["rounds"] == {"bpm": 120.0, "beats": 4, "repeats": 2}
            assert song["number"] == old["number"] and song["stopped_by"] == old["stopped_by"]
            assert after["version"] > before["version"]  # versions keep rising
            # The leader still leads: a new song starts.
            await ann2.ok("start")
            await ann2.wait(lambda m: m["type"] == "state" and m["state"]["song"]["running"])
            for peer in (eve, ann2, bob2):
                await peer.close()
            # The keeper counts what it did.
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                text = await response.text()
            assert "bb_keeper_restores_total 2.0" in text  # the new Redis, then the empty one
            assert "bb_keeper_keys_copied_total" in text
        # Only the rooms' state was ever in the state Redis: no audio.
        names = [k.decode() for k in store.scan_iter(count=1000)]
        assert names and all(durable.room_of(name) == "vault" for name in names), names
    finally:
        client.close()
        store.close()
        audio.stop()
        kept.stop()
