"""``brigade up``: the whole system on one machine (what ``make run`` calls).

Starts a private redis-server on a free port unless ``REDIS_URL`` (or
``--redis-url``) names one, then the mixers and gateways as child processes
with the same commands an operator would use.  Ctrl-C (or SIGTERM) stops
everything in order; if any child dies, the rest are stopped and the exit
code says so.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from brigade.redisserver import LocalRedis


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _start_redis() -> tuple[Child, str]:
    try:
        server = LocalRedis(quiet=False)
        server.start()
    except RuntimeError as exc:
        raise SystemExit(f"brigade up: {exc}") from None
    assert server.proc is not None
    return Child("redis", server.proc), server.url


def _spawn(name: str, args: list[str], env: dict[str, str]) -> Child:
    # A process group of its own: a terminal's Ctrl-C reaches only the launcher,
    # which then stops the children in order.
    proc = subprocess.Popen(
        [sys.executable, "-m", "brigade", *args], env={**os.environ, **env}, process_group=0
    )
    return Child(name, proc)


def _stop(children: list[Child]) -> None:
    """Stop in reverse start order, each before the next: gateways say goodbye to
    their singers, mixers hand their rooms back, and Redis goes last."""
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(10)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="brigade up", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--host",
        default=os.environ.get("BB_HOST", "127.0.0.1"),
        help="gateway listen address (env BB_HOST)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("BB_PORT", "8080")),
        help="first gateway's port; more gateways use the next ports (env BB_PORT)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="use this Redis instead of starting a private one (env REDIS_URL)",
    )
    parser.add_argument("--mixers", type=int, default=1, help="mixer processes (default 1)")
    parser.add_argument("--gateways", type=int, default=1, help="gateway processes (default 1)")
    args = parser.parse_args(list(argv))
    if args.mixers < 1 or args.gateways < 0:
        parser.error("need at least one mixer and zero or more gateways")
    for i in range(args.gateways):
        if _port_in_use(args.host, args.port + i):
            print(
                f"brigade up: port {args.port + i} is in use; pick another with --port "
                "(or BB_PORT=...)",
                file=sys.stderr,
            )
            return 1

    children: list[Child] = []
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        url = args.redis_url
        if not url:
            child, url = _start_redis()
            children.append(child)
            print(f"brigade up: started a private redis-server at {url}", flush=True)
        for i in range(args.mixers):
            children.append(
                _spawn(
                    f"mixer-{i + 1}",
                    ["mixer"],
                    {"REDIS_URL": url, "BB_MIXER_ID": f"mixer-local-{i + 1}"},
                )
            )
        for i in range(args.gateways):
            children.append(
                _spawn(
                    f"gateway-{i + 1}",
                    ["gateway"],
                    {
                        "REDIS_URL": url,
                        "BB_GATEWAY_ID": f"gateway-local-{i + 1}",
                        "BB_HOST": args.host,
                        "BB_PORT": str(args.port + i),
                    },
                )
            )
        shown = "localhost" if args.host in {"127.0.0.1", "0.0.0.0", "::"} else args.host
        if args.gateways:
            print(
                f"brigade up: Bucket Brigade is running at http://{shown}:{args.port}/ "
                "(Ctrl-C to stop)",
                flush=True,
            )
        while not stopping:
            for child in children:
                code = child.proc.poll()
                if code is not None:
                    print(
                        f"brigade up: {child.name} exited with code {code}; stopping the rest",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
            time.sleep(0.2)
        print("brigade up: stopping", flush=True)
        return 0
    finally:
        _stop(children)
