"""Rooms cost nothing when unused and keep their secrets: real redis-server, real mixers.

* A room nobody is connected to is released by its mixer, and a command
  brings it back with its state; a room unused for the idle time is deleted
  with every key.
* A password room stays closed after Redis restarts empty, and its members'
  resume tokens still work: the owning mixer writes back what Redis lost.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from common import keys, records
from common.commands import Disconnect, Join, Lead
from common.records import MixerStatus, Role
from gateway.rooms import token_digest
from tests.simgateway import SimGateway
from tests.support import Process, RedisServer, free_port, processes, wait_until


def mixer(started: list[Process], url: str, log_dir: Path, name: str, **env: str) -> Process:
    proc = Process(["mixer"], {"REDIS_URL": url, "BB_MIXER_ID": name, **env}, log_dir, name)
    started.append(proc)
    return proc


def mixer_status(client: redis.Redis, mixer_id: str) -> MixerStatus | None:
    raw: Any = client.get(keys.mixer_heartbeat(mixer_id))
    return records.decode(raw, MixerStatus) if raw else None


def owned_rooms(client: redis.Redis, mixer_id: str) -> list[str] | None:
    status = mixer_status(client, mixer_id)
    return status.rooms if status else None


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_an_unused_room_is_released_and_comes_back_on_the_next_command(
    client: redis.Redis, redis_url: str, output_dir: Path
) -> None:
    sim = SimGateway(client)
    env = {"BB_ROOM_RELEASE_S": "1", "BB_RECONNECT_GRACE_S": "0.5"}
    with processes(output_dir) as started:
        mixer(started, redis_url, output_dir, "m1", **env)
        sim.create_room("quiet")
        wait_until(lambda: sim.owner("quiet") == "m1", 10, "m1 to own the room")
        assert sim.join("quiet", "ann", "Ann", conn="c1").ok
        assert sim.command("quiet", "ann", Lead()).ok
        assert sim.command("quiet", "ann", Disconnect(), conn="c1").ok
        # Grace (0.5 s) and release time (1 s) later, the mixer lets go of it.
        wait_until(lambda: sim.owner("quiet") is None, 10, "the room to be released")
        wait_until(lambda: owned_rooms(client, "m1") == [], 5, "the mixer to own nothing")
        status = mixer_status(client, "m1")
        assert status is not None
        # Released once, and not claimed back by its own mixer in the same round.
        assert (status.counters["rooms_claimed"], status.counters["rooms_released"]) == (1, 1)
        assert not client.sismember(keys.ACTIVE_ROOMS, "quiet")
        assert client.zscore(keys.IDLE_ROOMS, "quiet") is not None
        assert client.sismember(keys.ROOMS, "quiet")  # released, not deleted
        # The next command makes it active: a mixer claims it and answers.
        assert sim.join("quiet", "bob", "Bob", conn="c2").ok
        assert sim.owner("quiet") == "m1"
        assert client.zscore(keys.IDLE_ROOMS, "quiet") is None
        state = sim.state("quiet")
        assert [m["singer_id"] for m in state["members"]] == ["bob"]


def test_a_room_unused_for_the_idle_time_is_deleted_with_all_its_keys(
    client: redis.Redis, redis_url: str, output_dir: Path
) -> None:
    sim = SimGateway(client)
    env = {"BB_ROOM_RELEASE_S": "1", "BB_RECONNECT_GRACE_S": "0.5", "BB_ROOM_IDLE_DELETE_S": "1"}
    with processes(output_dir) as started:
        mixer(started, redis_url, output_dir, "m1", **env)
        sim.create_room("gone")
        sim.create_room("kept")
        for room in ("gone", "kept"):
            assert sim.join(room, "ann", "Ann", conn="c1").ok
        assert sim.command("gone", "ann", Disconnect(), conn="c1").ok
        wait_until(
            lambda: not client.sismember(keys.ROOMS, "gone"), 30, "the idle room to be deleted"
        )
        left = [k for k in keys.room_keys("gone") if client.exists(k)]
        assert left == []
        assert client.zscore(keys.IDLE_ROOMS, "gone") is None
        # The room in use is untouched.
        assert client.sismember(keys.ROOMS, "kept") and sim.owner("kept") == "m1"
        assert client.exists(keys.room_meta("kept"))


def test_a_password_room_stays_closed_after_an_empty_redis_restart(
    private_redis: RedisServer, output_dir: Path
) -> None:
    client = redis.Redis(port=private_redis.port)
    sim = SimGateway(client)
    secret = "pbkdf2_sha256$1000$c2FsdA$SECRETHASH"
    token = "resume-token-of-ann"
    with processes(output_dir) as started:
        mixer(started, private_redis.url, output_dir, "m1")
        sim.create_room("vault", password_hash=secret)
        wait_until(lambda: sim.owner("vault") == "m1", 10, "m1 to own the room")
        ann = Join(
            name="Ann", role=Role.SINGER, token_digest=token_digest(token), password_hash=secret
        )
        assert sim.command("vault", "ann", ann, conn="c1").ok
        # A gateway that checked no password (or another one) cannot get in.
        refused = sim.command("vault", "eve", Join(name="Eve", role=Role.SINGER))
        assert (refused.ok, refused.code) == (False, "bad_password")

        private_redis.stop()
        private_redis.start()  # empty: nothing was persisted
        # The owner writes back what it holds: the password hash and the resume token.
        wait_until(
            lambda: client.hget(keys.room_meta("vault"), "password_hash") == secret.encode(),
            10,
            "the password hash to be written back",
        )
        assert client.hget(keys.room_tokens("vault"), "ann") == token_digest(token).encode()
        assert client.sismember(keys.ACTIVE_ROOMS, "vault")
        # Even if a gateway re-created the room open before that, the mixer refuses the join.
        client.hset(keys.room_meta("vault"), "password_hash", "")
        refused = sim.command("vault", "eve", Join(name="Eve", role=Role.SINGER))
        assert (refused.ok, refused.code) == (False, "bad_password")
    client.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_thousand_rooms_through_the_public_api_cost_the_mixers_nothing(
    client: redis.Redis, redis_url: str, output_dir: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mixer_env = {"BB_ROOM_RELEASE_S": "1", "BB_RECONNECT_GRACE_S": "0.5"}
    with processes(output_dir) as started:
        mixers = [mixer(started, redis_url, output_dir, f"k{i}", **mixer_env) for i in (1, 2)]
        gateway_env = {
            "REDIS_URL": redis_url,
            "BB_PORT": str(port),
            "BB_GATEWAY_ID": "kgw",
            "BB_ROOMS_PER_MIN": "5000",
        }
        started.append(Process(["gateway"], gateway_env, output_dir, "gateway"))
        wait_until(
            lambda: urllib.request.urlopen(base + "/healthz", timeout=1).status == 200, 20, "gw"
        )
        for i in range(1000):
            body = json.dumps({"room": f"idle{i}"}).encode()
            request = urllib.request.Request(
                base + "/api/rooms", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 201
        # Some are used for a moment, then left: their mixers let them go again.
        sim = SimGateway(client)
        for i in range(0, 1000, 50):
            assert sim.join(f"idle{i}", "ann", "Ann", conn="c").ok
            assert sim.command(f"idle{i}", "ann", Disconnect(), conn="c").ok
        wait_until(
            lambda: all(owned_rooms(client, f"k{i}") == [] for i in (1, 2)),
            30,
            "every room to be released",
        )
        assert client.scard(keys.ROOMS) == 1000
        assert client.scard(keys.ACTIVE_ROOMS) == 0
        total = sum(rss_mb(m.proc.pid) for m in mixers)
        assert total < 200, f"the mixers hold {total:.0f} MB for 1000 idle rooms"
