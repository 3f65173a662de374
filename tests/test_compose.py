"""compose.yaml, parsed by a compose implementation and run as local processes
(no container engine here).

podman-compose (a dev dependency) parses the file and, with a stand-in for
the podman binary and ``--dry-run``, shows the containers it would create:
that is where podman-compose's own reading of ``deploy`` shows. Each service
is started with exactly the command, environment and health
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

import msgspec
import pytest
import redis
import yaml

from common import keys
from tests.caddysupport import caddy_front, fetch, have_caddy
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


def service_env(
    service: dict[str, Any], redis_port: int, state_port: int = 0, **extra: str
) -> dict[str, str]:
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
    env["REDIS_URL"] = env["REDIS_URL"].replace("redis:6379", f"127.0.0.1:{redis_port}")
    if "BB_STATE_REDIS_URL" in env:
        env["BB_STATE_REDIS_URL"] = env["BB_STATE_REDIS_URL"].replace(
            "redis-state:6379", f"127.0.0.1:{state_port}"
        )
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


FAKE_PODMAN = """#!/bin/sh
# Stand-in for podman: knows no containers, images, volumes or networks.
echo "[]"
"""


def podman_compose(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run podman-compose on compose.yaml, dry, with a stand-in podman (project "bb")."""
    fake = tmp_path / "podman"
    fake.write_text(FAKE_PODMAN)
    fake.chmod(0o755)
    argv = [str(BIN / "podman-compose"), "--podman-path", str(fake), "--dry-run", "--verbose"]
    argv += ["-p", "bb", "-f", str(REPO / "compose.yaml"), *args]
    result = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_compose_file_shape() -> None:
    spec = load_compose()
    services = spec["services"]
    default = {name for name, service in services.items() if "profiles" not in service}
    assert default == {"redis", "redis-state", "keeper", "mixer", "gateway", "recorder", "caddy"}
    assert services["lb"]["profiles"] == ["plain-http"]
    monitoring = {n for n, svc in services.items() if "monitoring" in svc.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    for name in monitoring:  # what they mount is in the repository
        for volume in services[name]["volumes"]:
            if volume.startswith("./"):
                assert (REPO / volume.split(":")[0]).exists(), volume
    for name in ("mixer", "gateway"):
        assert services[name]["deploy"] == {"mode": "replicated", "replicas": 2}
    assert services["mixer"]["depends_on"]["redis"]["condition"] == "service_healthy"
    # The rooms are restored before a mixer or a gateway starts.
    for name in ("mixer", "gateway", "recorder"):
        assert services[name]["depends_on"]["keeper"]["condition"] == "service_healthy"
    assert set(services["keeper"]["depends_on"]) == {"redis", "redis-state"}
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    dockerfile = (REPO / services["mixer"]["build"]["dockerfile"]).read_text()
    assert "libopus0" in dockerfile
    # The audio Redis keeps no file; the state Redis keeps an append-only file on a
    # named volume, and the keeper fills it.
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "no"
    assert "volumes" not in services["redis"]
    command = services["redis-state"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert services["redis-state"]["volumes"] == ["state-data:/data"]
    assert "state-data" in spec["volumes"] and "redis-data" not in spec["volumes"]
    assert services["keeper"]["command"] == ["brigade", "keeper"]
    assert services["keeper"]["environment"]["BB_STATE_REDIS_URL"] == "redis://redis-state:6379/0"
    assert "COPY keeper ./keeper" in dockerfile
    # One recorder writes the recordings to a named volume the gateways read.
    recorder = services["recorder"]
    assert "deploy" not in recorder and recorder["volumes"] == ["recordings:/recordings"]
    assert recorder["environment"]["BB_RECORDINGS_DIR"] == "/recordings"
    assert services["gateway"]["volumes"] == ["recordings:/recordings:ro"]
    assert services["gateway"]["environment"]["BB_RECORDINGS_DIR"] == "/recordings"
    assert "recordings" in spec["volumes"]
    assert "COPY recorder ./recorder" in dockerfile and "chown brigade /recordings" in dockerfile
    # nginx: the main file includes what the image renders from the template, with
    # the container's own resolver (Docker's 127.0.0.11 does not exist under podman).
    nginx = (REPO / "docker" / "nginx.conf").read_text()
    template = (REPO / "docker" / "gateways.conf.template").read_text()
    assert "include /etc/nginx/conf.d/gateways.conf;" in nginx
    port = services["gateway"]["environment"]["BB_PORT"]
    assert f"server gateway:{port} resolve;" in template
    assert "resolver ${NGINX_LOCAL_RESOLVERS} " in template
    assert "127.0.0.11" not in nginx + template.replace("Docker: 127.0.0.11", "")
    assert "proxy_set_header Upgrade $http_upgrade" in template
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for" in template
    assert "location = /metrics {\n        return 403;" in template
    lb = services["lb"]
    assert lb["environment"]["NGINX_ENTRYPOINT_LOCAL_RESOLVERS"] == "1"
    assert lb["volumes"] == [
        "./docker/nginx.conf:/etc/nginx/nginx.conf:ro",
        "./docker/gateways.conf.template:/etc/nginx/templates/gateways.conf.template:ro",
    ]
    # nginx only on request (an operator's own TLS proxy in front); Caddy by default.
    assert lb["profiles"] == ["plain-http"]
    # Gateways are reached only through caddy or lb, so they may trust X-Forwarded-For.
    assert services["gateway"]["environment"]["BB_TRUST_FORWARDED_FOR"] == "true"
    assert "ports" not in services["gateway"]
    # Caddy: HTTPS on 443 (and HTTP/3), HTTP on 80 redirected, its certificates and
    # local CA on a named volume, the gateways as its upstream (tests/test_https.py
    # runs Debian's caddy on this same Caddyfile).
    caddy = services["caddy"]
    assert caddy["image"].startswith("caddy:2")
    assert caddy["ports"] == ["80:80", "443:443", "443:443/udp"]
    assert caddy["volumes"][0] == "./docker/Caddyfile:/etc/caddy/Caddyfile:ro"
    assert "caddy-data:/data" in caddy["volumes"] and "caddy-data" in spec["volumes"]
    assert caddy["environment"]["BB_GATEWAYS"] == f"gateway:{port}"
    assert caddy["environment"]["BB_PUBLIC_HOST"] == "${BB_PUBLIC_HOST:-localhost}"
    assert caddy["depends_on"]["gateway"]["condition"] == "service_healthy"
    caddyfile = (REPO / "docker" / "Caddyfile").read_text()
    assert "https_port {$BB_HTTPS_PORT:443}" in caddyfile
    assert "reverse_proxy {$BB_GATEWAYS:gateway:8080}" in caddyfile


def test_podman_compose_parses_the_file(tmp_path: Path) -> None:
    config = yaml.safe_load(podman_compose(tmp_path, "config").stdout)
    services = config["services"]
    # nginx (lb) belongs to the plain-http profile: not part of the default set.
    assert set(services) == {
        "redis",
        "redis-state",
        "keeper",
        "mixer",
        "gateway",
        "recorder",
        "caddy",
    }
    assert services["gateway"]["environment"]["BB_ALLOWED_ORIGINS"] == ""
    assert services["caddy"]["environment"]["BB_PUBLIC_HOST"] == "localhost"
    assert services["redis-state"]["volumes"] == ["state-data:/data"]
    assert "state-data" in config["volumes"]
    # The keeper, built from the app's image, waits for both Redis only.
    assert set(services["keeper"]["depends_on"]) == {"redis", "redis-state"}


def test_podman_compose_would_start_every_replica_and_the_state_volume(tmp_path: Path) -> None:
    log = podman_compose(tmp_path, "up", "-d", "--no-build").stderr
    created = re.findall(r"/podman create --name=(\S+)", log)
    assert sorted(created) == [
        "bb_caddy_1",
        "bb_gateway_1",
        "bb_gateway_2",
        "bb_keeper_1",
        "bb_mixer_1",
        "bb_mixer_2",
        "bb_recorder_1",
        "bb_redis-state_1",
        "bb_redis_1",
    ]
    (redis_line,) = [line for line in log.splitlines() if "create --name=bb_redis_1" in line]
    assert "destination=/data" not in redis_line
    assert redis_line.rstrip().endswith("--appendonly no")
    (state_line,) = [line for line in log.splitlines() if "create --name=bb_redis-state_1" in line]
    assert "type=volume,source=bb_state-data,destination=/data" in state_line
    assert state_line.rstrip().endswith("--appendonly yes --appendfsync everysec")
    (caddy_line,) = [line for line in log.splitlines() if "create --name=bb_caddy_1" in line]
    assert "-p 443:443" in caddy_line and "-p 80:80" in caddy_line
    assert "type=volume,source=bb_caddy-data,destination=/data" in caddy_line


def test_podman_compose_starts_nginx_only_with_its_profile(tmp_path: Path) -> None:
    log = podman_compose(tmp_path, "--profile", "plain-http", "up", "-d", "--no-build").stderr
    created = re.findall(r"/podman create --name=(\S+)", log)
    assert "bb_lb_1" in created and "bb_caddy_1" in created


def test_the_monitoring_profile_adds_prometheus_and_grafana(tmp_path: Path) -> None:
    log = podman_compose(tmp_path, "--profile", "monitoring", "up", "-d", "--no-build").stderr
    created = set(re.findall(r"/podman create --name=(\S+)", log))
    assert {"bb_prometheus_1", "bb_grafana_1", "bb_mixer_1", "bb_recorder_1"} <= created
    (grafana,) = [line for line in log.splitlines() if "create --name=bb_grafana_1" in line]
    assert "docker/grafana/dashboards:/etc/grafana/dashboards:ro" in grafana
    assert "-p 127.0.0.1:3000:3000" in grafana  # loopback only
    (prometheus,) = [line for line in log.splitlines() if "create --name=bb_prometheus_1" in line]
    assert "docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus


def test_compose_topology_runs_as_local_processes(output_dir: Path, tmp_path: Path) -> None:
    spec = load_compose()["services"]
    redis_cmd = spec["redis"]["command"]
    assert redis_cmd[0] == "redis-server" and "--appendonly" in redis_cmd
    # Persistence as in compose: no file for the audio Redis, an append-only file in a
    # directory of its own for the state Redis, each on a port of its own.
    server = RedisServer()
    server.start()
    state = RedisServer(persist_dir=str(tmp_path / "state-data"))
    state.start()
    procs: list[subprocess.Popen[bytes]] = []
    client = redis.Redis(port=server.port)
    try:
        # As a local process the keeper's metrics port must differ from the others'.
        keeper_env = service_env(
            spec["keeper"], server.port, state.port, BB_METRICS_PORT=str(free_port())
        )
        log = (output_dir / "keeper.log").open("wb")
        procs.append(
            subprocess.Popen(
                resolve(spec["keeper"]["command"]),
                env=keeper_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        # The others start once the keeper is healthy (depends_on).
        wait_for(lambda: healthy(spec["keeper"], keeper_env), 15, "the keeper healthy")
        mixer_ids = []
        for i in range(spec["mixer"]["deploy"]["replicas"]):
            mixer_id = f"mixer-replica-{i + 1}"
            # Each container has a network of its own; as local processes the replicas'
            # metrics ports must differ.
            env = service_env(
                spec["mixer"], server.port, BB_MIXER_ID=mixer_id, BB_METRICS_PORT=str(free_port())
            )
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

        rec_env = service_env(
            spec["recorder"],
            server.port,
            BB_RECORDER_ID="recorder-replica-1",
            BB_RECORDINGS_DIR=str(tmp_path / "recordings"),
            BB_METRICS_PORT=str(free_port()),
        )
        log = (output_dir / "recorder.log").open("wb")
        procs.append(
            subprocess.Popen(
                resolve(spec["recorder"]["command"]),
                env=rec_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_for(lambda: healthy(spec["recorder"], rec_env), 15, "the recorder healthy")
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
        # Caddy, compose's front door, in front of both: the rooms over HTTPS, and
        # still served with one gateway gone (Caddy tries the other).
        if have_caddy():
            upstreams = [f"http://127.0.0.1:{port}" for _gw, port, _env in gateways]
            with caddy_front(upstreams, tmp_path, output_dir) as front:
                status, _, body = fetch(f"{front.https}/api/rooms", front.context())
                assert status == 200
                assert set(rooms) <= {room["room"] for room in json.loads(body)["rooms"]}
                gone = procs[1 + len(mixer_ids)]
                gone.terminate()
                assert gone.wait(10) == 0
                statuses = [fetch(f"{front.https}/healthz", front.context())[0] for _ in range(6)]
                assert statuses == [200] * 6
        # The keeper copied the rooms (their meta: who created them, and how).
        kept = redis.Redis(port=state.port)
        wait_for(lambda: all(kept.exists(keys.room_meta(r)) for r in rooms), 5, "rooms kept")
        assert not kept.exists(*(keys.room_in(r) for r in rooms))
        kept.close()
        # A mixer stopped with SIGTERM hands its rooms over at once.
        first_mixer = procs[1]
        first_mixer.terminate()
        assert first_mixer.wait(10) == 0
        wait_for(
            lambda: {sim.owner(r) for r in rooms} == {mixer_ids[1][0]},
            5,
            "rooms handed over",
        )

        def heartbeat_rooms() -> int:
            raw = client.get(keys.mixer_heartbeat(mixer_ids[1][0]))
            status = msgspec.msgpack.decode(bytes(raw))  # type: ignore[arg-type]
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
        state.stop()


pytestmark = pytest.mark.timeout(120)


def test_the_cluster_file_makes_six_redis_nodes_and_creates_the_cluster_once(
    tmp_path: Path,
) -> None:
    files = ("-f", str(REPO / "compose.cluster.yaml"))
    config = yaml.safe_load(podman_compose(tmp_path, *files, "config").stdout)
    services = config["services"]
    nodes = ["redis", *(f"redis-{i}" for i in range(2, 7))]
    for name in nodes:
        command = " ".join(services[name]["command"])
        assert "--cluster-enabled yes" in command and "--cluster-node-timeout 2000" in command
        # No node keeps a file (the keeper restores an emptied master's slots); each
        # keeps its nodes.conf on a volume.
        assert "--appendonly no" in command
        assert any(v.endswith(":/data") for v in services[name]["volumes"])
    init = " ".join(services["redis-cluster"]["command"])
    assert "--cluster create" in init and "--cluster-replicas 1" in init
    # The processes keep pointing at one node (the cluster's first): nothing else to set.
    for name in ("mixer", "gateway", "recorder", "keeper"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert "cluster_state:ok" in " ".join(services["redis"]["healthcheck"]["test"])
    log = podman_compose(tmp_path, *files, "up", "-d", "--no-build").stderr
    created = set(re.findall(r"/podman create --name=(\S+)", log))
    assert {f"bb_{n}_1" for n in [*nodes, "redis-cluster"]} <= created
    assert {"bb_mixer_1", "bb_gateway_1", "bb_recorder_1", "bb_keeper_1"} <= created
