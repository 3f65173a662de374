"""`brigade up` (what `make run` runs): the whole system, then a clean Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import redis

from brigade import up
from brigade.redisserver import LocalRedis
from brigade.supervisor import Supervisor
from common import keys
from common.backoff import Backoff
from common.constants import SAMPLE_RATE
from common.protocol import hello_message
from keeper import durable
from tests.support import REPO, free_port, wait_for


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def create_room(base: str, room: str) -> None:
    """Create ``room`` through the API and join it once, so a mixer takes it (rooms
    nobody joins cost the mixers nothing and are never claimed)."""
    request = urllib.request.Request(
        f"{base}/api/rooms",
        data=json.dumps({"room": room}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=2) as response:
        assert response.status == 201
    asyncio.run(_visit(base, room))


async def _visit(base: str, room: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(base + "/ws") as ws:
        await ws.send_json(hello_message(room, "Visitor", role="spectator", codec="pcm16"))
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                reply = json.loads(msg.data)
                if reply["type"] in {"welcome", "error"}:
                    assert reply["type"] == "welcome", reply
                    return


def start_up(output_dir: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "BB_REDIS_DIR"}}
    path = output_dir / "up.log"
    with path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "brigade", "up", *args],
            cwd=REPO,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, path


def pids(log: Path, name: str) -> list[int]:
    """Every pid ``brigade up`` reported for child ``name``, in start order."""
    return [int(p) for p in re.findall(rf"started {name}, pid (\d+)", log.read_text())]


def test_up_serves_the_page_and_stops_cleanly(output_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["BB_RECORDINGS_DIR"] = str(tmp_path / "recordings")
    log = (output_dir / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "brigade", "up", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, 30, "the gateway's /healthz")
        status, page = get(f"{base}/")
        assert status == 200 and b"Bucket Brigade" in page
        constants = json.loads(get(f"{base}/api/constants")[1])
        assert constants["sample_rate"] == 48000
        # A room joined through the API is owned by the launcher's mixer.
        request = urllib.request.Request(
            f"{base}/api/rooms",
            data=json.dumps({"room": "choir"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            assert response.status == 201
        asyncio.run(_visit(base, "choir"))
        wait_for(
            lambda: get(f"{base}/api/rooms/choir/occupancy")[0] == 200,
            10,
            "the mixer to own the room and publish occupancy",
        )
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
        log.close()
    assert code == 0, (output_dir / "up.log").read_text()
    text = (output_dir / "up.log").read_text()
    assert "Bucket Brigade is running at http://localhost:" in text
    assert pids(output_dir / "up.log", "recorder-1"), "no recorder started"
    assert (tmp_path / "recordings" / ".takes").is_dir()
    assert "Traceback" not in text


def test_a_killed_mixer_is_restarted_while_its_room_fails_over(
    output_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    proc, log = start_up(
        output_dir, "--port", str(port), "--mixers", "2", "--redis-dir", str(tmp_path / "redis")
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, 30, "the gateway's /healthz")
        url = re.findall(r"private redis-server at (redis://\S+?)[,\s]", log.read_text())[0]
        client = redis.Redis.from_url(url)
        create_room(base, "choir")
        wait_for(lambda: client.get(keys.room_lease("choir")), 10, "a mixer to own the room")
        owner = bytes(client.get(keys.room_lease("choir"))).decode()  # type: ignore[arg-type]
        number = owner.rsplit("-", 1)[1]
        name = f"mixer-{number}"
        (old_pid,) = pids(log, name)

        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.time() * SAMPLE_RATE

        def served_since_the_kill() -> bool:
            # Only a live owner publishes the room's occupancy; its clock says when.
            status, body = get(f"{base}/api/rooms/choir/occupancy")
            return status == 200 and json.loads(body)["clock"] > killed_at + SAMPLE_RATE

        # The room is served again: by the other mixer, or by the restarted one if
        # it is back first (rendezvous hashing prefers it, as in production).
        wait_for(served_since_the_kill, 30, "the room to be served again")
        holder = client.get(keys.room_lease("choir"))
        assert isinstance(holder, bytes)
        assert client.exists(keys.mixer_heartbeat(holder.decode()))
        # The killed mixer is started again (a new pid) and rejoins.
        wait_for(lambda: len(pids(log, name)) == 2, 20, f"{name} to be restarted")
        new_pid = pids(log, name)[1]
        assert new_pid != old_pid
        wait_for(lambda: client.exists(keys.mixer_heartbeat(owner)), 20, f"{owner} to rejoin")
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/api/rooms/choir")[0] == 200
        assert proc.poll() is None
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    text = log.read_text()
    assert code == 0, text
    assert f"{name} (pid {old_pid}) was killed by SIGKILL; restarting in" in text
    assert "Traceback" not in text
    # Redis kept an append-only file in the directory given.
    assert any((tmp_path / "redis").rglob("*.aof")), list((tmp_path / "redis").rglob("*"))


def test_a_persistent_local_redis_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    server = LocalRedis(persist_dir=str(tmp_path / "data"))
    server.start()
    try:
        client = server.client()
        client.sadd(keys.ROOMS, "choir")
        client.close()
        server.stop()
        server.start()
        client = server.client()
        assert client.smembers(keys.ROOMS) == {b"choir"}
        client.close()
    finally:
        server.stop()


def _exits(code: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    proc.wait(10)
    return proc


def test_the_supervisor_restarts_with_growing_pauses_and_gives_up_on_bad_settings() -> None:
    launches: list[int] = []

    def crashing() -> subprocess.Popen[bytes]:
        launches.append(1)
        return _exits(1)

    supervisor = Supervisor(Backoff(1.0, 8.0), stable_s=30.0, give_up_after=4)
    child = supervisor.start("crashy", crashing, now_s=0.0)
    assert supervisor.poll(0.1) is None and child.restart_at_s is not None
    assert 0.6 <= child.restart_at_s <= 1.1  # first pause: 0.5-1 s
    assert supervisor.poll(0.3) is None and len(launches) == 1  # not due yet
    assert supervisor.poll(2.0) is None and len(launches) == 2  # restarted
    assert supervisor.poll(2.1) is None and child.failures == 2
    assert 2.1 + 1.0 <= child.restart_at_s <= 2.1 + 2.0  # second pause: 1-2 s
    # A child that stayed up long enough starts over from the shortest pause.
    supervisor.poll(10.0)
    assert supervisor.poll(10.0 + 31) is None and child.failures == 1
    # Failing give_up_after times in a row is final.
    now = 100.0
    for _ in range(10):
        assert child.restart_at_s is not None
        now = child.restart_at_s
        if supervisor.poll(now) is not None or supervisor.poll(now + 0.01) is not None:
            break
    assert child.failures == 4

    settings = Supervisor()
    bad = settings.start("bad", lambda: _exits(2), now_s=0.0)
    assert settings.poll(0.1) is bad


def test_a_killed_redis_is_restarted_and_keeps_its_rooms_with_redis_dir(
    output_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    proc, log = start_up(output_dir, "--port", str(port), "--redis-dir", str(tmp_path / "r"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, 30, "the gateway's /healthz")
        text = log.read_text()
        assert pids(log, "redis-state") and pids(log, "keeper"), text
        create_room(base, "choir")
        wait_for(lambda: get(f"{base}/api/rooms/choir/occupancy")[0] == 200, 10, "occupancy")
        # A room nobody joined: no mixer holds it, only the keeper can bring it back.
        request = urllib.request.Request(
            f"{base}/api/rooms",
            data=json.dumps({"room": "quiet", "password": "sesame"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            assert response.status == 201
        (redis_pid,) = pids(log, "redis")
        url = re.findall(r"private redis-server at (redis://\S+?)[,\s]", text)[0]
        state_url = re.findall(r"state redis-server at (redis://\S+?)[,\s]", text)[0]
        client = redis.Redis.from_url(url)
        state = redis.Redis.from_url(state_url)
        # The audio Redis keeps no file; the state Redis does.
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert state.config_get("appendonly")["appendonly"] == "yes"
        client.set("written-before-the-crash", "not a room's state")
        wait_for(lambda: state.exists(keys.room_meta("quiet")), 10, "the keeper to copy the room")
        assert not state.exists(keys.room_in("choir")), "no audio in the state Redis"

        os.kill(redis_pid, signal.SIGKILL)

        wait_for(lambda: len(pids(log, "redis")) == 2, 20, "Redis to be restarted")
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, 30, "the gateway to reconnect")
        # Both rooms came back from the state Redis, the password with the unused one.
        wait_for(lambda: get(f"{base}/api/rooms/quiet")[0] == 200, 20, "the room restored")
        assert json.loads(get(f"{base}/api/rooms/quiet")[1])["password"] is True
        status, body = get(f"{base}/api/rooms/choir")
        assert status == 200, body
        assert client.get("written-before-the-crash") is None
        assert client.sismember(keys.ROOMS, "quiet")
        client.close()
        state.close()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    assert f"redis (pid {redis_pid}) was killed by SIGKILL; restarting in" in log.read_text()
    assert "Traceback" not in log.read_text()
    assert any((tmp_path / "r").rglob("*.aof")), list((tmp_path / "r").rglob("*"))


def test_brigade_up_names_the_keepers_marker() -> None:
    assert up.MARKER == durable.MARKER
