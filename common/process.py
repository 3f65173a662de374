"""What every long-running ``brigade`` process (mixer, recorder) does at its edges:
parse settings from the environment and the command line, answer ``--check``
from its heartbeat key, configure logging and run its service on the chosen
event loop. Written once so the process kinds do not drift apart."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import msgspec

from common import aio, logs, records, redisclient
from common.errors import ValidationError
from common.settings import Settings

_S = TypeVar("_S", bound=Settings)
_R = TypeVar("_R", bound=msgspec.Struct)


def check_heartbeat(
    redis_url: str, key: str, status: type[_R], who: str, describe: Callable[[_R], str]
) -> int:
    """``--check``: exit 0 when ``key`` holds a live, readable heartbeat, else 1."""
    try:
        client = redisclient.sync_client(redis_url, socket_timeout=2, socket_connect_timeout=2)
        raw = client.get(key)
    except redisclient.SYNC_ERRORS as exc:
        print(f"unhealthy: Redis unreachable: {exc}")
        return 1
    if raw is None:
        print(f"unhealthy: no heartbeat from {who}")
        return 1
    try:
        decoded = records.decode(raw, status)
    except ValidationError as exc:
        print(f"unhealthy: unreadable heartbeat: {exc}")
        return 1
    print(f"healthy: {who} {describe(decoded)}")
    return 0


def main(
    argv: Sequence[str],
    *,
    prog: str,
    description: str | None,
    settings_class: type[_S],
    check: Callable[[_S], int],
    serve: Callable[[_S], Coroutine[Any, Any, int]],
    log: logging.Logger,
) -> int:
    """Parse, then ``--check`` or serve; exit 2 on invalid settings, 1 on a fatal error."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--check", action="store_true", help="exit 0 if this process has a live heartbeat, else 1"
    )
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
    try:
        return aio.run(serve(settings), settings.event_loop)
    except SystemExit as exc:
        log.error("%s", exc)
        return 1
