"""Real processes for integration tests: redis-server on a free port, and
``brigade`` subcommands started exactly as an operator would start them."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from brigade.redisserver import LocalRedis, free_port

__all__ = [
    "REPO",
    "Cluster",
    "Process",
    "RedisServer",
    "async_wait_until",
    "cluster",
    "free_port",
    "healthy",
    "processes",
    "wait_for",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[..., object], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll ``predicate()`` until it is true; else fail the test saying ``what`` did not happen.

    An exception from ``predicate`` counts as "not yet" (a server still starting);
    the last one is named in the failure.
    """
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            if predicate():
                return
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout_s, what, last))
        time.sleep(interval_s)


async def async_wait_until(
    predicate: Callable[..., object],
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> None:
    """:func:`wait_until` for async tests: the event loop keeps running between checks
    (a peer's reader, a voice's sender), and ``predicate`` may be a coroutine function."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout_s, what, last))
        await asyncio.sleep(interval_s)


def _timed_out(timeout_s: float, what: str, last: Exception | None) -> str:
    message = f"timed out after {timeout_s} s waiting for {what}"
    return message if last is None else f"{message} (last check raised {last!r})"


wait_for = wait_until
"""The old name, for branches written before :func:`wait_until`; use ``wait_until``."""


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


@dataclass
class Cluster:
    """Mixers and gateways started together (see :func:`cluster`)."""

    mixers: dict[str, Process]
    gateways: list[Process]
    urls: list[str]
    """The gateways' base URLs, ``http://127.0.0.1:PORT``."""


@contextlib.contextmanager
def cluster(env: Mapping[str, str], log_dir: Path, prefix: str, n: int = 2) -> Iterator[Cluster]:
    """``n`` mixers and ``n`` gateways on one Redis (``env`` names it), ready to serve.

    At the end every process still alive is stopped and must exit 0, and no
    process may have logged a traceback (a test that kills one replaces it).
    """
    mixers = {
        f"{prefix}mx{i}": Process(
            ["mixer"], {**env, "BB_MIXER_ID": f"{prefix}mx{i}"}, log_dir, f"{prefix}mx{i}"
        )
        for i in range(1, n + 1)
    }
    gateways, urls = [], []
    for i in range(1, n + 1):
        port = free_port()
        gateway_env = {**env, "BB_GATEWAY_ID": f"{prefix}gw{i}", "BB_PORT": str(port)}
        gateways.append(Process(["gateway"], gateway_env, log_dir, f"{prefix}gateway{i}"))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, proc in zip(urls, gateways, strict=True):
            wait_until(lambda url=url: healthy(url), 20, f"{proc.name} at {url}")
        yield Cluster(mixers, gateways, urls)
    finally:
        for proc in [*reversed(gateways), *mixers.values()]:
            if proc.alive():
                code = proc.stop()
                assert code == 0, f"{proc.name} exited with {code}:\n{proc.log()[-3000:]}"
            assert "Traceback" not in proc.log(), proc.log()


def healthy(url: str) -> bool:
    """Whether the gateway at ``url`` answers ``/healthz`` with 200."""
    with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
        return bool(response.status == 200)
