"""compose.yaml's topology run as local processes (no Docker engine here).

Each service is started with exactly the command, environment and health
check that compose.yaml gives it. The only rewrites are what containers get
for free: the `redis` host name becomes the local redis port, each replica
gets its own id (a container's own hostname) and each gateway its own port
(a container's own network namespace).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
import yaml

from common import keys
from tests.simgateway import SimGateway
from tests.support import REPO, RedisServer, free_port, wait_for

BIN = Path(sys.executable).parent


def load_compose() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return spec


def resolve(argv: list[str]) -> list[str]:
    """Run `brigade ...` from this virtual environment, as the image's PATH would."""
    if argv and argv[0] == "brigade":
        return [str(BIN / "brigade"), *argv[1:]]
    return argv


def service_env(service: dict[str, Any], redis_port: int, **extra: str) -> dict[str, str]:
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
    env["REDIS_URL"] = env["REDIS_URL"].replace("redis:6379", f"127.0.0.1:{redis_port}")
    return {**os.environ, **env, **extra}


def healthy(service: dict[str, Any], env: dict[str, str]) -> bool:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    return (
        subprocess.run(
            resolve(test[1:]), env=env, capture_output=True, timeout=10, check=False
        ).returncode
        == 0
    )


def test_compose_file_shape() -> None:
    spec = load_compose()
    services = spec["services"]
    assert set(services) == {"redis", "mixer", "gateway", "lb"}
    assert services["mixer"]["deploy"]["replicas"] == 2
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert services["mixer"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    dockerfile = (REPO / services["mixer"]["build"]["dockerfile"]).read_text()
    assert "libopus0" in dockerfile
    nginx = (REPO / "docker" / "nginx.conf").read_text()
    port = services["gateway"]["environment"]["BB_PORT"]
    assert f"server gateway:{port}" in nginx
    assert "proxy_set_header Upgrade $http_upgrade" in nginx
    assert services["lb"]["volumes"][0].startswith("./docker/nginx.conf:")


def test_compose_topology_runs_as_local_processes(output_dir: Path) -> None:
    spec = load_compose()["services"]
    server = RedisServer()
    redis_cmd = spec["redis"]["command"]
    assert redis_cmd[0] == "redis-server"
    # The compose command plus the port a container would have to itself.
    server.start()  # RedisServer passes the same persistence flags as compose
    procs: list[subprocess.Popen[bytes]] = []
    client = redis.Redis(port=server.port)
    try:
        mixer_ids = []
        for i in range(spec["mixer"]["deploy"]["replicas"]):
            mixer_id = f"mixer-replica-{i + 1}"
            env = service_env(spec["mixer"], server.port, BB_MIXER_ID=mixer_id)
            log = (output_dir / f"{mixer_id}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    resolve(spec["mixer"]["command"]), env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
            mixer_ids.append((mixer_id, env))
        gateways = []
        for i in range(spec["gateway"]["deploy"]["replicas"]):
            gw_id, port = f"gateway-replica-{i + 1}", free_port()
            env = service_env(
                spec["gateway"],
                server.port,
                BB_GATEWAY_ID=gw_id,
                BB_PORT=str(port),
                BB_HOST="127.0.0.1",
            )
            log = (output_dir / f"{gw_id}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    resolve(spec["gateway"]["command"]),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            gateways.append((gw_id, port, env))

        for mixer_id, env in mixer_ids:
            wait_for(lambda env=env: healthy(spec["mixer"], env), 15, f"{mixer_id} healthy")
        for gw_id, _port, env in gateways:
            wait_for(lambda env=env: healthy(spec["gateway"], env), 15, f"{gw_id} healthy")

        # The mixers split rooms between them through Redis alone.
        sim = SimGateway(client)
        rooms = [f"r{i}" for i in range(8)]
        for room in rooms:
            sim.create_room(room)
        wait_for(lambda: all(client.exists(keys.room_lease(r)) for r in rooms), 10, "rooms owned")
        owners = {sim.owner(r) for r in rooms}
        assert owners == {m for m, _ in mixer_ids}
        # Every gateway answers through its own port, and the room list is shared.
        for _gw, port, _env in gateways:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/rooms", timeout=5) as r:
                listed = {room["room"] for room in json.load(r)["rooms"]}
            assert set(rooms) <= listed
        # A mixer stopped with SIGTERM hands its rooms over at once.
        procs[0].terminate()
        assert procs[0].wait(10) == 0
        wait_for(
            lambda: {sim.owner(r) for r in rooms} == {mixer_ids[1][0]},
            5,
            "rooms handed over",
        )

        def heartbeat_rooms() -> int:
            raw = client.get(keys.mixer_heartbeat(mixer_ids[1][0]))
            status = msgpack.unpackb(bytes(raw))  # type: ignore[arg-type]
            return len(status["rooms"])

        wait_for(lambda: heartbeat_rooms() == len(rooms), 3, "the survivor's heartbeat")
        assert not healthy(spec["mixer"], mixer_ids[0][1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        client.close()
        server.stop()


pytestmark = pytest.mark.timeout(120)
