"""A private Redis Cluster on loopback: three masters and three replicas.

Each node is a ``redis-server --cluster-enabled yes`` on a port below 55 000
whose cluster-bus port (port + 10 000) is free too; ``redis-cli --cluster
create ... --cluster-replicas 1`` joins them.  Nothing is kept on disk.  The
tests and ``bench/cluster.py`` start theirs with this; an operator points
``REDIS_URL`` at any node of a real cluster instead (docs/redis.md).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

NODE_TIMEOUT_MS = 2000
"""cluster-node-timeout: a master silent this long is failed over to its replica."""


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """``n`` ports below 55 000, each with its bus port (+10 000) free, never 6379."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port >= 55_000 or port in ports or port in (6379, 16379):
            continue
        if _free(port + 10_000):
            ports.append(port)
    return ports


class LocalRedisCluster:
    """Six redis-server processes forming one cluster (3 masters, 3 replicas)."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed for a local cluster")
        self.server, self.cli = server, cli
        self.masters, self.replicas = masters, replicas
        self.ports = cluster_ports(masters * (1 + replicas))
        self.dir = tempfile.mkdtemp(prefix="brigade-cluster-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Any node's URL is the cluster's: the clients find the others themselves
        (the first node still running)."""
        live = self.live_ports() or self.ports
        return f"redis://127.0.0.1:{live[0]}/0"

    def _start_node(self, port: int) -> None:
        node_dir = Path(self.dir) / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                self.server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # A replica takes over however long it was cut off from its master:
                # better the last data it has than a room with no node at all.
                "--cluster-replica-validity-factor",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(node_dir),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )

    def start(self, timeout_s: float = 30) -> None:
        """Start every node, create the cluster and wait for ``cluster_state:ok``."""
        for port in self.ports:
            self._start_node(port)
        deadline = time.monotonic() + timeout_s
        for port in self.ports:
            self._wait(lambda port=port: bool(self.node(port).ping()), deadline, f"node {port}")
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
        )
        self.wait_ok(deadline)

    def wait_ok(self, deadline: float) -> None:
        """Until every live node says ``cluster_state:ok``, there are as many masters as
        asked for and every replica is in sync with its master."""

        def ok() -> bool:
            masters = 0
            for port in self.live_ports():
                client = self.node(port)
                try:
                    if client.cluster("info").get("cluster_state") != "ok":
                        return False
                    replication = client.info("replication")
                finally:
                    client.close()
                if replication.get("role") == "master":
                    masters += 1
                elif replication.get("master_link_status") != "up":
                    return False  # a replica that has not synced cannot take over
            return masters == self.masters

        self._wait(ok, deadline, "cluster_state:ok")

    @staticmethod
    def _wait(predicate: object, deadline: float, what: str) -> None:
        assert callable(predicate)
        while True:
            try:
                if predicate():
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"local Redis Cluster: timed out waiting for {what}")
            time.sleep(0.05)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port, socket_connect_timeout=0.5, socket_timeout=2, decode_responses=True
        )

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_of(self, key: str) -> int:
        """The port of the master holding ``key``'s slot right now."""
        for port in self.live_ports():
            client = self.node(port)
            try:
                if client.info("replication").get("role") != "master":
                    continue
                slot = int(client.cluster("keyslot", key))
                for start, end, *nodes in client.cluster("slots"):
                    if int(start) <= slot <= int(end):
                        return int(nodes[0][1])
            finally:
                client.close()
        raise RuntimeError(f"no live master answers for {key!r}")

    def masters_now(self) -> list[int]:
        """The ports of the live masters."""
        found = []
        for port in self.live_ports():
            client = self.node(port)
            try:
                if client.info("replication").get("role") == "master":
                    found.append(port)
            finally:
                client.close()
        return sorted(found)

    def kill(self, port: int) -> None:
        """SIGKILL one node (a failover test's crash)."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def restart(self, port: int, timeout_s: float = 30) -> None:
        """Bring a killed node back (it rejoins from its nodes.conf, as a replica)."""
        self._start_node(port)
        self.wait_ok(time.monotonic() + timeout_s)

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for port in self.masters_now():
            client = self.node(port)
            try:
                client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
