"""One runtime for every long-running ``brigade`` process (gateway, mixer, recorder, keeper).

What they all do at their edges, written once so the kinds do not drift apart:
parse settings from the environment and the command line, configure logging,
answer ``--check``, connect to Redis (:func:`connect`, the one place a client
is made), claim the process id (:mod:`common.idclaim`: wait with back-off for
an old heartbeat to expire, exit 1 when a live process holds it), turn
SIGTERM and SIGINT into a graceful stop, serve ``/metrics`` and log one
counter summary when the service stops. The heartbeat the id claim and
``--check`` read is written by each service with :mod:`common.heartbeat`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final, Protocol, TypeVar

import msgspec
import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry

from common import aio, logs, metricsserver, records, redisclient
from common.backoff import Backoff
from common.errors import ValidationError
from common.heartbeat import Heartbeat
from common.idclaim import Free, IdClaim, InUse
from common.settings import Settings

log = logging.getLogger(__name__)

_S = TypeVar("_S", bound=Settings)
_R = TypeVar("_R", bound=msgspec.Struct)
_V = TypeVar("_V", bound="Service")

REDIS_FAILURES: Final = (*redisclient.REDIS_ERRORS, RuntimeError, OSError)
"""What a Redis call raises when Redis is gone. With uvloop, redis-py has been seen
raising a bare RuntimeError for a server that accepts a connection and closes it
(client limit, protected mode): that is Redis being unavailable too."""

ID_BACKOFF: Final = Backoff(0.05, 1.0)
"""Pauses between looks at a held id (or an unreachable Redis) at start-up."""


def connect(settings: Settings, *, pool_size: int | None = None) -> Redis:
    """The process's Redis client: RESP2 pinned, so reply shapes never change under us;
    a Redis Cluster node's URL gives redis-py's cluster client (common/redisclient.py).

    With ``pool_size`` (the gateway) the pool is bounded and blocking: a burst
    of commands (a hundred sockets closing at once) waits for a free
    connection instead of failing, and one retry after a reconnect hides a
    Redis restart from single commands.  Background loops add their own
    back-off on top.
    """
    if pool_size is None:
        return redisclient.async_client(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=2
        )
    return redisclient.async_client(
        settings.redis_url,
        max_connections=pool_size,
        socket_connect_timeout=1.0,
        socket_timeout=5.0,
        retry=Retry(Backoff(0.05, 0.5), 1),
        health_check_interval=10,
    )


async def claim_id(client: Redis, who: Heartbeat, stop: asyncio.Event) -> int | None:
    """None when the id is free; else the exit code (1: in use, 0: stopped while waiting)."""
    claim = IdClaim(who.kind, who.ident, who.ttl_ms / 1000, ID_BACKOFF.compute)
    reason = ""
    while not stop.is_set():
        held: bool | None
        try:
            held = bool(await client.exists(who.key))
        except REDIS_FAILURES as exc:
            log.debug("id check: %r", exc)
            held = None
        verdict = claim.observe(time.monotonic(), held)
        if isinstance(verdict, Free):
            if reason:
                log.info("%s id %r is free", who.kind, who.ident)
            return None
        if isinstance(verdict, InUse):
            log.error("%s", verdict.message)
            return 1
        if verdict.reason != reason:
            log.warning("%s", verdict.reason)
            reason = verdict.reason
        await _wait(stop, verdict.pause_s)
    return 0


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class RedisHealth:
    """A service's loops' view of Redis: the first failure and the recovery are logged
    once each, and every retry waits on the shared jittered back-off."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.healthy = True

    async def down(self, exc: Exception, failures: int) -> None:
        """Redis failed ``failures`` times in a row: log it (once), then back off."""
        if self.healthy:
            log.warning("Redis unavailable (%s); retrying with back-off", exc)
            self.healthy = False
        await asyncio.sleep(self.backoff.compute(failures))

    def up(self) -> None:
        """Redis answered."""
        if not self.healthy:
            log.warning("Redis reachable again")
            self.healthy = True


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT (the graceful stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class Service(Protocol):
    """What :func:`serve` runs: until ``stop`` is set (None, or an exit code when it
    could not run), then a summary of its counters."""

    async def run(self, stop: asyncio.Event) -> int | None: ...

    def summary(self) -> str: ...


async def serve(
    settings: _S,
    who: Heartbeat,
    make: Callable[[_S, Redis], _V],
    render: Callable[[_V], bytes] | None,
    *,
    metrics_host: str = "",
    metrics_port: int = 0,
    describe: str,
    pool_size: int | None = None,
) -> int:
    """Connect, claim the id, run the service (with ``/metrics``) until a signal.

    The client (:func:`connect`, bounded by ``pool_size``) is the service's for its
    lifetime. Without ``render`` no ``/metrics`` is served here (the gateway serves
    it on its own port).
    """
    client = connect(settings, pool_size=pool_size)
    stop = stop_on_signals()
    try:
        refused = await claim_id(client, who, stop)
        if refused is not None:
            return refused
        service = make(settings, client)
        log.info("%s %s starting (redis %s, %s)", who.kind, who.ident, settings.redis_url, describe)
        port = metrics_port if render is not None else 0
        try:
            async with metricsserver.serve(
                lambda: render(service) if render is not None else b"", metrics_host, port
            ):
                if port:
                    log.info("metrics on http://%s:%d/metrics", metrics_host, port)
                code = await service.run(stop)
        finally:
            log.info("%s %s stopping: %s", who.kind, who.ident, service.summary())
    finally:
        await client.aclose()
    return code or 0


CheckMore = Callable[[redis.Redis], tuple[bool, str]]
"""A kind's own part of ``--check`` beside its heartbeat: (healthy, what it saw)."""


def check_heartbeat(
    redis_url: str,
    beat: Heartbeat,
    status: type[_R],
    describe: Callable[[_R], str],
    *,
    also: CheckMore | None = None,
) -> int:
    """``--check``: exit 0 when ``beat`` holds a live, readable heartbeat (and ``also``
    says healthy), else 1; one line says the heartbeat's state, then ``also``'s."""
    who = f"{beat.kind} {beat.ident}"
    try:
        client = redisclient.sync_client(redis_url, socket_timeout=2, socket_connect_timeout=2)
        raw = client.get(beat.key)
        more = None if also is None else also(client)
    except redisclient.SYNC_ERRORS as exc:
        print(f"unhealthy: Redis unreachable: {exc}")
        return 1
    healthy = False
    if raw is None:
        said = f"no heartbeat from {who}"
    else:
        try:
            said = f"{who} {describe(records.decode(raw, status))}"
            healthy = True
        except ValidationError as exc:
            said = f"unreadable heartbeat: {exc}"
    if more is not None:
        healthy = healthy and more[0]
        said = f"{said}; {more[1]}"
    print(f"{'healthy' if healthy else 'unhealthy'}: {said}")
    return 0 if healthy else 1


def main(
    argv: Sequence[str],
    *,
    prog: str,
    description: str | None,
    settings_class: type[_S],
    check: Callable[[_S], int],
    serve: Callable[[_S], Coroutine[Any, Any, int]],
    check_help: str = "exit 0 if this process has a live heartbeat, else 1",
) -> int:
    """Parse, then ``--check`` or serve; exit 2 on invalid settings, else the serve's code."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--check", action="store_true", help=check_help)
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (env BB_LOG_LEVEL)")
    settings_class.add_arguments(parser)
    args = parser.parse_args(list(argv))
    try:
        settings = settings_class.from_namespace(args)
    except ValidationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(settings)
    logs.configure(args.log_level)
    return aio.run(serve(settings), settings.event_loop)
