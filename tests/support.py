"""Real processes for integration tests: redis-server on a free port, and
``brigade`` subcommands started exactly as an operator would start them."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
import redis

from brigade.redisserver import LocalRedis, free_port
from common import keys, redisclient

__all__ = [
    "REPO",
    "Process",
    "RedisServer",
    "Stack",
    "async_wait_until",
    "free_port",
    "healthy",
    "in_ci",
    "missing",
    "processes",
    "running_stack",
    "wait_for",
    "wait_until",
]

REPO = Path(__file__).resolve().parent.parent


T = TypeVar("T")


class StopWaiting(AssertionError):
    """Raised by a predicate: what it waits for will never happen (fails at once)."""


def wait_until(
    predicate: Callable[..., T],
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
    *,
    retry_errors: bool = True,
) -> T:
    """Poll ``predicate()`` until it is true, and return what it returned; else fail the
    test saying ``what`` did not happen.

    An exception from ``predicate`` counts as "not yet" (a server still starting);
    the last one is named in the failure. :class:`StopWaiting`, or any exception with
    ``retry_errors=False``, fails at once.
    """
    for attempt in _Attempts(timeout_s, what, interval_s, retry_errors):
        with attempt:
            if result := predicate():
                return result
        time.sleep(attempt.interval_s)
    raise AssertionError(what)  # not reached: the attempts end by failing the wait


async def async_wait_until(
    predicate: Callable[..., object],
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
    *,
    retry_errors: bool = True,
) -> None:
    """:func:`wait_until` for async tests: the event loop keeps running between checks
    (a peer's reader, a voice's sender), and ``predicate`` may be a coroutine function."""
    for attempt in _Attempts(timeout_s, what, interval_s, retry_errors):
        with attempt:
            result = predicate()
            if (await result) if inspect.isawaitable(result) else result:
                return
        await asyncio.sleep(attempt.interval_s)


class _Attempts:
    """The checks of one wait: iterating gives the next attempt until the deadline passes
    (then the wait fails); an attempt is a context that records or raises what the check
    raised."""

    def __init__(self, timeout_s: float, what: str, interval_s: float, retry_errors: bool) -> None:
        self.timeout_s, self.what, self.interval_s = timeout_s, what, interval_s
        self.retry_errors = retry_errors
        self.deadline = time.monotonic() + timeout_s
        self.last: BaseException | None = None
        self.first = True

    def __iter__(self) -> Iterator[_Attempts]:
        while self.first or time.monotonic() < self.deadline:
            self.first = False
            yield self
        message = f"timed out after {self.timeout_s} s waiting for {self.what}"
        if self.last is not None:
            message += f" (last check raised {self.last!r})"
        raise AssertionError(message)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        if isinstance(exc, StopWaiting) or not self.retry_errors:
            return False
        self.last = exc
        return True


wait_for = wait_until
"""The old name, for branches written before :func:`wait_until`; use ``wait_until``."""


RedisServer = LocalRedis
"""The tests' private redis-server (the same one ``brigade up`` starts)."""


class Process:
    """A ``python -m brigade ...`` child process with its output kept in a file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_dir: Path, name: str) -> None:
        self.name = name
        self.ended_by_test = False
        """Whether the test stopped or killed it (else it must be alive at the end)."""
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
        self.ended_by_test = True
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout_s: float = 10) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.ended_by_test = True
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
class Stack:
    """Brigade processes on one Redis, started together by :func:`running_stack`."""

    redis_url: str
    redis: redis.Redis
    """A client of the stack's Redis (cluster-aware), closed with the stack."""
    env: dict[str, str]
    """What every process's environment adds (``REDIS_URL`` and the caller's)."""
    log_dir: Path
    started: list[Process]
    mixers: dict[str, Process] = field(default_factory=dict)
    """By mixer id: ``m1``, ``m2``..."""
    recorders: dict[str, Process] = field(default_factory=dict)
    """By recorder id: ``r1``, ``r2``..."""
    keepers: dict[str, Process] = field(default_factory=dict)
    """By keeper id: ``k1``..., copying to ``state_redis``."""
    state_redis: LocalRedis | None = None
    """The keepers' state Redis, the stack's own (with ``keepers``)."""
    gateway_procs: list[Process] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    """The gateways' base URLs, ``http://127.0.0.1:PORT`` (ids ``gw1``, ``gw2``...)."""
    metrics: dict[str, str] = field(default_factory=dict)
    """By process id: ``127.0.0.1:PORT`` of its ``/metrics`` (with ``metrics=True``)."""
    want_metrics: bool = False

    @property
    def recordings(self) -> Path:
        """The recorders' folder, which the gateways serve (emptied when the stack starts)."""
        return Path(self.env["BB_RECORDINGS_DIR"])

    @property
    def backend(self) -> str:
        """``one-redis`` or ``cluster``."""
        return "cluster" if redisclient.is_cluster(self.redis) else "one-redis"

    @property
    def base(self) -> str:
        """The first gateway's base URL."""
        return self.gateways[0]

    def ws(self, index: int = 0) -> str:
        """The WebSocket URL of gateway ``index``."""
        return self.gateways[index].replace("http://", "ws://") + "/ws"

    def owner(self, room: str) -> str | None:
        """The id of the mixer holding ``room``'s lease."""
        raw: Any = self.redis.get(keys.room_lease(room))
        return bytes(raw).decode() if raw else None

    def start(self, kind: str, name: str, env: Mapping[str, str]) -> Process:
        """Start ``brigade <kind>`` (log ``name``.log); stopped and checked with the stack."""
        proc = Process([kind], {**self.env, **env}, self.log_dir, name)
        self.started.append(proc)
        return proc

    def add_mixer(self, mixer_id: str, wait: bool = True) -> Process:
        """Another mixer (or a replacement of one killed: the same id again)."""
        env = {"BB_MIXER_ID": mixer_id, **self._metrics_env(mixer_id)}
        name = mixer_id if mixer_id not in self.mixers else f"{mixer_id}-again"
        proc = self.mixers[mixer_id] = self.start("mixer", name, env)
        if wait:
            self._wait_heartbeat(keys.mixer_heartbeat(mixer_id), proc)
        return proc

    def add_recorder(self, recorder_id: str, wait: bool = True) -> Process:
        env = {"BB_RECORDER_ID": recorder_id, **self._metrics_env(recorder_id)}
        proc = self.recorders[recorder_id] = self.start("recorder", recorder_id, env)
        if wait:
            self._wait_heartbeat(keys.recorder_heartbeat(recorder_id), proc)
        return proc

    def add_keeper(self, keeper_id: str, wait: bool = True) -> Process:
        """A keeper copying the rooms' durable keys to the stack's state Redis."""
        if self.state_redis is None:
            self.state_redis = LocalRedis()
            self.state_redis.start()
        env = {
            "BB_KEEPER_ID": keeper_id,
            "BB_STATE_REDIS_URL": self.state_redis.url,
            **self._metrics_env(keeper_id),
        }
        proc = self.keepers[keeper_id] = self.start("keeper", keeper_id, env)
        if wait:
            self._wait_heartbeat(keys.keeper_heartbeat(keeper_id), proc)
        return proc

    def add_gateway(self, wait: bool = True) -> Process:
        gateway_id = f"gw{len(self.gateways) + 1}"
        port = free_port()
        env = {"BB_GATEWAY_ID": gateway_id, "BB_PORT": str(port), "BB_HOST": "127.0.0.1"}
        proc = self.start("gateway", gateway_id, {**env, **self._metrics_env(gateway_id, port)})
        self.gateway_procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        self.gateways.append(url)
        if wait:
            self._wait_healthy(url, proc)
        return proc

    def _metrics_env(self, pid: str, gateway_port: int = 0) -> dict[str, str]:
        if not self.want_metrics:
            return {}
        if gateway_port:  # the gateway serves /metrics on its own port
            self.metrics[pid] = f"127.0.0.1:{gateway_port}"
            return {}
        port = free_port()
        self.metrics[pid] = f"127.0.0.1:{port}"
        return {"BB_METRICS_PORT": str(port)}

    def _wait_healthy(self, url: str, proc: Process) -> None:
        wait_until(lambda: _alive_and(proc, lambda: healthy(url)), 20, f"{proc.name} at {url}")

    def _wait_heartbeat(self, key: str, proc: Process) -> None:
        wait_until(
            lambda: _alive_and(proc, lambda: self.redis.exists(key)), 30, f"{proc.name}'s heartbeat"
        )


def _alive_and(proc: Process, check: Callable[[], object]) -> bool:
    if not proc.alive():
        raise StopWaiting(f"{proc.name} exited early:\n{proc.log()[-3000:]}")
    return bool(check())


@contextlib.contextmanager
def running_stack(
    redis_url: str,
    log_dir: Path,
    *,
    mixers: int = 1,
    gateways: int = 1,
    recorders: int = 0,
    keepers: int = 0,
    env: Mapping[str, str] | None = None,
    metrics: bool = False,
    library: bool = False,
) -> Iterator[Stack]:
    """``mixers`` mixers, ``recorders`` recorders, ``keepers`` keepers (with a state Redis of
    the stack's own) and ``gateways`` gateways on ``redis_url``, started as an operator
    starts them (``env`` added to their environment), each ready: heartbeating, or for
    gateways answering ``/healthz``. Logs, and the
    recordings (``BB_RECORDINGS_DIR`` unless ``env`` says), go to ``log_dir``; with
    ``library`` the gateways offer the tracks of an empty folder there (``BB_TRACKS_DIR``).

    At the end no process may have died unless the test stopped or killed it; every one
    still running is stopped and must exit 0; no process may have logged a traceback.
    """
    recordings = log_dir / "recordings"
    shutil.rmtree(recordings, ignore_errors=True)  # an earlier run's
    env = {"REDIS_URL": redis_url, "BB_RECORDINGS_DIR": str(recordings), **(env or {})}
    if library:
        (log_dir / "library").mkdir()
        env["BB_TRACKS_DIR"] = str(log_dir / "library")
    client = redisclient.sync_client(redis_url)
    stack = Stack(redis_url, client, env, log_dir, [])
    stack.want_metrics = metrics
    try:
        for i in range(1, mixers + 1):
            stack.add_mixer(f"m{i}", wait=False)
        for i in range(1, recorders + 1):
            stack.add_recorder(f"r{i}", wait=False)
        for i in range(1, keepers + 1):
            stack.add_keeper(f"k{i}", wait=False)
        for _ in range(gateways):
            stack.add_gateway(wait=False)
        for mixer_id, proc in stack.mixers.items():
            stack._wait_heartbeat(keys.mixer_heartbeat(mixer_id), proc)
        for recorder_id, proc in stack.recorders.items():
            stack._wait_heartbeat(keys.recorder_heartbeat(recorder_id), proc)
        for keeper_id, proc in stack.keepers.items():
            stack._wait_heartbeat(keys.keeper_heartbeat(keeper_id), proc)
        for url, proc in zip(stack.gateways, stack.gateway_procs, strict=True):
            stack._wait_healthy(url, proc)
        yield stack
    finally:
        try:
            _stop_all(stack.started)
        finally:
            client.close()
            if stack.state_redis is not None:
                stack.state_redis.stop()


def _stop_all(started: list[Process]) -> None:
    """Stop in reverse order; then fail on the first process that did not end cleanly."""
    problems: list[tuple[Process, str]] = []
    for proc in reversed(started):
        if proc.ended_by_test:
            pass
        elif not proc.alive():
            problems.append((proc, f"died (code {proc.proc.returncode})"))
            proc.stop()
        elif (code := proc.stop()) != 0:
            problems.append((proc, f"exited with {code}"))
        if "Traceback" in proc.log():
            problems.append((proc, "logged a traceback"))
    if problems:
        said = "; ".join(f"{proc.name} {what}" for proc, what in problems)
        raise AssertionError(
            f"{said}\n{problems[0][0].name}'s log:\n{problems[0][0].log()[-3000:]}"
        )


def in_ci() -> bool:
    """Whether this is CI (``CI=true``): there a missing tool fails the test."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> NoReturn:
    """A tool the test needs is not installed: skip it, or fail it in CI."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def healthy(url: str) -> bool:
    """Whether the gateway at ``url`` answers ``/healthz`` with 200."""
    with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
        return bool(response.status == 200)
