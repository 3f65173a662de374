"""``brigade up``: the whole system on one machine (what ``make run`` calls).

Starts a private redis-server on a free port unless ``REDIS_URL`` (or
``--redis-url``) names one, then the mixers, a recorder (every song to FLAC and
Ogg Opus in ``--recordings-dir``) and the gateways as child processes
with the same commands an operator would use.  A child that dies is
restarted with a growing, jittered pause while the others keep running, so
killing a mixer fails over as in production (brigade/supervisor.py).  Ctrl-C
(or SIGTERM) stops everything in order: gateways, the recorder, mixers, Redis last.
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
from types import FrameType

from brigade.redisserver import LocalRedis, free_port
from brigade.supervisor import Launch, Supervisor, say


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def _redis_launcher(persist_dir: str | None) -> tuple[Launch, str]:
    """A launch function for the private redis-server (same port on every restart)."""
    try:
        server = LocalRedis(quiet=False, persist_dir=persist_dir)
    except RuntimeError as exc:
        raise SystemExit(f"brigade up: {exc}") from None

    def launch() -> subprocess.Popen[bytes]:
        server.proc = None
        server.start()
        assert server.proc is not None
        return server.proc

    return launch, server.url


def _launcher(args: list[str], env: dict[str, str]) -> Launch:
    def launch() -> subprocess.Popen[bytes]:
        # A process group of its own: a terminal's Ctrl-C reaches only the launcher,
        # which then stops the children in order.
        return subprocess.Popen(
            [sys.executable, "-m", "brigade", *args], env={**os.environ, **env}, process_group=0
        )

    return launch


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
    parser.add_argument(
        "--redis-dir",
        default=os.environ.get("BB_REDIS_DIR") or None,
        help="keep the private Redis's data in an append-only file in this directory "
        "(env BB_REDIS_DIR; default: nothing on disk)",
    )
    parser.add_argument("--mixers", type=int, default=1, help="mixer processes (default 1)")
    parser.add_argument("--gateways", type=int, default=1, help="gateway processes (default 1)")
    parser.add_argument(
        "--recorders", type=int, default=1, help="recorder processes (default 1; 0: no recordings)"
    )
    parser.add_argument(
        "--recordings-dir",
        default=os.environ.get("BB_RECORDINGS_DIR", "./recordings"),
        help="where the recorder writes the songs (env BB_RECORDINGS_DIR)",
    )
    args = parser.parse_args(list(argv))
    if args.mixers < 1 or args.gateways < 0 or args.recorders < 0:
        parser.error("need at least one mixer and zero or more gateways and recorders")
    for i in range(args.gateways):
        if _port_in_use(args.host, args.port + i):
            print(
                f"brigade up: port {args.port + i} is in use; pick another with --port "
                "(or BB_PORT=...)",
                file=sys.stderr,
            )
            return 1

    supervisor = Supervisor()
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        url = args.redis_url
        if not url:
            launch, url = _redis_launcher(args.redis_dir)
            try:
                supervisor.start("redis", launch, time.monotonic())
            except RuntimeError as exc:
                say(str(exc))
                return 1
            kept = f", append-only file in {args.redis_dir}" if args.redis_dir else ""
            say(f"started a private redis-server at {url}{kept}")
        elif args.redis_dir:
            say("--redis-dir is ignored: REDIS_URL names a Redis of its own")
        for i in range(args.mixers):
            # Each mixer's Prometheus metrics on a port of its own, next to the gateways'.
            metrics_port = free_port()
            env = {
                "REDIS_URL": url,
                "BB_MIXER_ID": f"mixer-local-{i + 1}",
                "BB_METRICS_PORT": str(metrics_port),
            }
            supervisor.start(f"mixer-{i + 1}", _launcher(["mixer"], env), time.monotonic())
            say(f"mixer-{i + 1} metrics at http://127.0.0.1:{metrics_port}/metrics")
        for i in range(args.recorders):
            env = {
                "REDIS_URL": url,
                "BB_RECORDER_ID": f"recorder-local-{i + 1}",
                "BB_RECORDINGS_DIR": args.recordings_dir,
            }
            supervisor.start(f"recorder-{i + 1}", _launcher(["recorder"], env), time.monotonic())
        if args.recorders:
            say(f"songs are recorded into {os.path.abspath(args.recordings_dir)}")
        for i in range(args.gateways):
            env = {
                "REDIS_URL": url,
                "BB_GATEWAY_ID": f"gateway-local-{i + 1}",
                "BB_RECORDINGS_DIR": args.recordings_dir,
                "BB_HOST": args.host,
                "BB_PORT": str(args.port + i),
            }
            supervisor.start(f"gateway-{i + 1}", _launcher(["gateway"], env), time.monotonic())
        shown = "localhost" if args.host in {"127.0.0.1", "0.0.0.0", "::"} else args.host
        if args.gateways:
            say(f"Bucket Brigade is running at http://{shown}:{args.port}/ (Ctrl-C to stop)")
        while not stopping:
            failed = supervisor.poll(time.monotonic())
            if failed is not None:
                say("stopping the rest")
                return 1
            time.sleep(0.2)
        say("stopping")
        return 0
    finally:
        supervisor.stop()
