"""Real processes for integration tests: redis-server on a free port, and
``brigade`` subcommands started exactly as an operator would start them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from brigade.redisserver import LocalRedis, free_port

__all__ = ["REPO", "Process", "RedisServer", "free_port", "processes", "wait_for"]

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: object, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``predicate()`` until true, else fail the test with ``what``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


RedisServer = LocalRedis
"""The tests' private redis-server (the same one ``brigade up`` starts)."""


class Process:
    """A ``python -m brigade ...`` child process with its output kept in a file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_dir: Path, name: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "brigade", *args],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout_s: float = 10) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._log.close()
        return code


@contextlib.contextmanager
def processes(log_dir: Path) -> Iterator[list[Process]]:
    """Collects started processes and stops them all at the end of the block."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()
