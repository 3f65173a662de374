"""A private redis-server: loopback only, on a port of its own.

By default nothing is kept on disk.  Given a directory (``persist_dir``,
``brigade up --redis-dir``), it keeps an append-only file there (AOF, fsync
every second), so a restarted server comes back with its rooms.
``brigade up`` starts one when no ``REDIS_URL`` is given; the tests and
benchmarks start theirs the same way.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port nobody listens on right now (never Redis's default 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


class LocalRedis:
    """One redis-server process; ``stop``/``start`` keep the port (and the data in
    ``persist_dir``, when given)."""

    def __init__(
        self, port: int | None = None, *, quiet: bool = True, persist_dir: str | None = None
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: 'make run' and 'make test' install it, "
                "or set REDIS_URL to a running server"
            )
        self.binary = binary
        self.port = port or free_port()
        self.persistent = persist_dir is not None
        if persist_dir is not None:
            Path(persist_dir).mkdir(parents=True, exist_ok=True)
            self.dir = str(Path(persist_dir).resolve())
        else:
            self.dir = tempfile.mkdtemp(prefix="brigade-redis-")
        self.quiet = quiet
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10) -> None:
        """Start the server and wait until it answers PING."""
        out = subprocess.DEVNULL if self.quiet else None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
            ],
            stdout=out,
            stderr=out,
            # Its own process group: a terminal's Ctrl-C meant for ``brigade up`` must
            # not stop Redis before the gateways and mixers have said goodbye.
            process_group=0,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not start on port {self.port}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
