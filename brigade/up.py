"""``brigade up``: the whole system on one machine (what ``make run`` calls).

Starts a private redis-server on a free port unless ``REDIS_URL`` (or
``--redis-url``) names one, then the mixers, a recorder (every song to FLAC and
Ogg Opus in ``--recordings-dir``) and the gateways as child processes
with the same commands an operator would use.  With ``--redis-dir`` the rooms
survive a restart: a second, small redis-server keeps an append-only file
there and ``brigade keeper`` copies the rooms' durable keys into it (the audio
Redis keeps no file; docs/operations.md, "What is persisted").  A child that dies is
restarted with a growing, jittered pause while the others keep running, so
killing a mixer fails over as in production (brigade/supervisor.py).  Ctrl-C
(or SIGTERM) stops everything in order: gateways, the recorder, mixers, the keeper,
Redis last.

With ``--https`` the gateways serve HTTPS on the LAN (all addresses, port 8443
unless told otherwise) with a certificate from a local CA kept in ``--tls-dir``
(brigade/tls.py), and plain HTTP on ``--http-port`` redirects there: phones get
a secure context, so the microphone.  The LAN address and the certificate's
SHA-256 fingerprint are printed (docs/user-guide.md, "Phones on the same Wi-Fi").
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from brigade import redirect, tls
from brigade.redisserver import LocalRedis, free_port
from brigade.supervisor import Launch, Supervisor, say
from common import redisclient

if TYPE_CHECKING:
    from http.server import HTTPServer

HTTPS_PORT = 8443
HTTP_PORT = 8080
LOCAL_HOSTS = {"127.0.0.1", "0.0.0.0", "::"}
MARKER = "bb:keeper"
"""What the keeper writes into Redis once the kept rooms are back (keeper/durable.py:
``brigade`` is a tool and imports no service)."""


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


def _started(supervisor: Supervisor, name: str, launch: Launch) -> bool:
    try:
        supervisor.start(name, launch, time.monotonic())
    except RuntimeError as exc:
        say(str(exc))
        return False
    return True


def _restored(url: str, supervisor: Supervisor, timeout_s: float = 60) -> bool:
    """Wait until the keeper has restored the kept rooms (its marker in Redis), so no
    gateway re-creates a kept room by name first."""
    client = redisclient.sync_client(url, socket_timeout=2, socket_connect_timeout=2)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(*redisclient.SYNC_ERRORS):
                if client.exists(MARKER):
                    return True
            if supervisor.poll(time.monotonic()) is not None:
                break
            time.sleep(0.05)
    finally:
        client.close()
    say("the keeper did not restore the rooms; stopping")
    return False


def _launcher(args: list[str], env: dict[str, str]) -> Launch:
    def launch() -> subprocess.Popen[bytes]:
        # A process group of its own: a terminal's Ctrl-C reaches only the launcher,
        # which then stops the children in order.
        return subprocess.Popen(
            [sys.executable, "-m", "brigade", *args], env={**os.environ, **env}, process_group=0
        )

    return launch


def _parser() -> argparse.ArgumentParser:
    """The command line of ``brigade up``."""
    parser = argparse.ArgumentParser(prog="brigade up", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--host",
        default=os.environ.get("BB_HOST"),
        help="gateway listen address (env BB_HOST; default 127.0.0.1, with --https 0.0.0.0)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ["BB_PORT"]) if os.environ.get("BB_PORT") else None,
        help="first gateway's port; more gateways use the next ports "
        f"(env BB_PORT; default {HTTP_PORT}, with --https {HTTPS_PORT})",
    )
    parser.add_argument(
        "--https",
        action="store_true",
        help="serve HTTPS for phones and other machines on the LAN, with a certificate "
        "made here (browsers give the microphone only to https:// pages or localhost)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=HTTP_PORT,
        help=f"with --https: plain HTTP here redirects to HTTPS (default {HTTP_PORT}; 0: none)",
    )
    parser.add_argument(
        "--tls-dir",
        default=os.environ.get("BB_TLS_DIR") or None,
        help="with --https: where the local CA and the certificate are kept "
        "(env BB_TLS_DIR; default $XDG_DATA_HOME/bucket-brigade/tls)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="use this Redis instead of starting a private one (env REDIS_URL)",
    )
    parser.add_argument(
        "--redis-dir",
        default=os.environ.get("BB_REDIS_DIR") or None,
        help="keep the rooms (not the audio) in this directory: a second private Redis "
        "with an append-only file, filled by a keeper (env BB_REDIS_DIR; default: "
        "nothing on disk)",
    )
    parser.add_argument(
        "--state-redis-url",
        default=os.environ.get("BB_STATE_REDIS_URL") or None,
        help="run a keeper that keeps the rooms in this Redis (with its own persistence) "
        "instead of a private one in --redis-dir (env BB_STATE_REDIS_URL)",
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
    return parser


def main(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_args(list(argv))
    if args.mixers < 1 or args.gateways < 0 or args.recorders < 0:
        parser.error("need at least one mixer and zero or more gateways and recorders")
    if args.host is None:
        args.host = "0.0.0.0" if args.https else "127.0.0.1"
    if args.port is None:
        args.port = HTTPS_PORT if args.https else HTTP_PORT
    for i in range(args.gateways):
        if _port_in_use(args.host, args.port + i):
            print(
                f"brigade up: port {args.port + i} is in use; pick another with --port "
                "(or BB_PORT=...)",
                file=sys.stderr,
            )
            return 1

    tls_env: dict[str, str] = {}
    lan = _reachable_lan_addresses(args.host) if args.https else []
    if args.https:
        directory = Path(args.tls_dir) if args.tls_dir else tls.default_dir()
        try:
            certs, tls_env = _certificate(directory, lan)
        except (OSError, ValueError) as exc:
            print(f"brigade up: cannot make the certificate in {directory}: {exc}", file=sys.stderr)
            return 1

    supervisor = Supervisor()
    redirector: HTTPServer | None = None
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not _start_processes(supervisor, args, tls_env):
            return 1
        shown = "localhost" if args.host in LOCAL_HOSTS else args.host
        scheme = "https" if args.https else "http"
        if args.gateways:
            say(f"Bucket Brigade is running at {scheme}://{shown}:{args.port}/ (Ctrl-C to stop)")
        if args.https and args.gateways:
            redirector = _https_report(args, lan, certs)
        elif args.gateways:
            say(
                "phones and other machines get a microphone only over HTTPS: "
                "make run HTTPS=1 (brigade up --https) serves it on the LAN"
            )
        while not stopping:
            failed = supervisor.poll(time.monotonic())
            if failed is not None:
                say("stopping the rest")
                return 1
            time.sleep(0.2)
        say("stopping")
        return 0
    finally:
        if redirector is not None:
            redirector.shutdown()
            redirector.server_close()
        supervisor.stop()


def _start_processes(
    supervisor: Supervisor, args: argparse.Namespace, tls_env: dict[str, str]
) -> bool:
    """Start Redis (and the state Redis and keeper), the mixers, recorders and gateways;
    False when one could not start."""
    url = args.redis_url
    state_url = args.state_redis_url
    if args.redis_dir and not state_url:
        if url:
            say("--redis-dir is ignored: REDIS_URL names a Redis of its own")
        else:
            launch, state_url = _redis_launcher(args.redis_dir)
            if not _started(supervisor, "redis-state", launch):
                return False
            say(
                f"started the state redis-server at {state_url}, append-only file in "
                f"{args.redis_dir}"
            )
    if not url:
        launch, url = _redis_launcher(None)
        if not _started(supervisor, "redis", launch):
            return False
        say(f"started a private redis-server at {url}")
    if state_url:
        metrics_port = free_port()
        env = {
            "REDIS_URL": url,
            "BB_STATE_REDIS_URL": state_url,
            "BB_KEEPER_ID": "keeper-local",
            "BB_METRICS_PORT": str(metrics_port),
        }
        supervisor.start("keeper", _launcher(["keeper"], env), time.monotonic())
        if not _restored(url, supervisor):
            return False
        say("the keeper keeps the rooms' state (no audio) in the state Redis")
        say(f"keeper metrics at http://127.0.0.1:{metrics_port}/metrics")
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
        metrics_port = free_port()
        env = {
            "REDIS_URL": url,
            "BB_RECORDER_ID": f"recorder-local-{i + 1}",
            "BB_RECORDINGS_DIR": args.recordings_dir,
            "BB_METRICS_PORT": str(metrics_port),
        }
        supervisor.start(f"recorder-{i + 1}", _launcher(["recorder"], env), time.monotonic())
        say(f"recorder-{i + 1} metrics at http://127.0.0.1:{metrics_port}/metrics")
    if args.recorders:
        say(f"songs are recorded into {os.path.abspath(args.recordings_dir)}")
    for i in range(args.gateways):
        env = {
            "REDIS_URL": url,
            "BB_GATEWAY_ID": f"gateway-local-{i + 1}",
            "BB_RECORDINGS_DIR": args.recordings_dir,
            "BB_HOST": args.host,
            "BB_PORT": str(args.port + i),
            **tls_env,
        }
        supervisor.start(f"gateway-{i + 1}", _launcher(["gateway"], env), time.monotonic())
    return True


def _certificate(directory: Path, lan: list[str]) -> tuple[tls.Certificates, dict[str, str]]:
    """The certificate for this machine's names and ``lan``, and the gateways' environment."""
    names = tls.host_names()
    ips = ["127.0.0.1", "::1", *(a for a in lan if a not in {"127.0.0.1", "::1"})]
    certs = tls.ensure(directory, names, ips, dt.datetime.now(dt.UTC))
    # The host name is always served; NAME.local (mDNS) must be named to the gateways.
    public = ",".join(h for h in (os.environ.get("BB_PUBLIC_HOST", ""), *names[1:]) if h)
    env = {"BB_TLS_CERT": str(certs.cert), "BB_TLS_KEY": str(certs.key), "BB_PUBLIC_HOST": public}
    return certs, env


def _reachable_lan_addresses(host: str) -> list[str]:
    """The LAN addresses the gateways can be reached at when listening on ``host``."""
    if host == "0.0.0.0":  # every IPv4 address
        return [a for a in tls.lan_addresses() if ":" not in a]
    if host in {"::", ""}:
        return tls.lan_addresses()
    if host in {"127.0.0.1", "::1", "localhost"}:
        return []
    return [host]


def _https_report(
    args: argparse.Namespace, lan: list[str], certs: tls.Certificates
) -> HTTPServer | None:
    """Print where phones go and what they will be shown; start the HTTP redirect."""
    for address in lan:
        host = f"[{address}]" if ":" in address else address
        say(f"on this network: https://{host}:{args.port}/")
    if not lan:
        say(f"listening on {args.host} only: other machines cannot reach it (--host 0.0.0.0)")
    say(f"certificate SHA-256 fingerprint: {certs.fingerprint_sha256}")
    say(
        "browsers warn once about this certificate (docs/user-guide.md, "
        f'"Phones on the same Wi-Fi"), or install the local CA, {certs.ca_cert}'
    )
    if not args.http_port:
        return None
    try:
        server = redirect.start(args.host, args.http_port, args.port, certs.ca_cert)
    except OSError as exc:
        say(f"no HTTP redirect on port {args.http_port}: {exc}")
        return None
    say(
        f"http://...:{args.http_port}/ redirects there; the CA for phones: "
        f"http://{lan[0] if lan else 'localhost'}:{args.http_port}{redirect.CA_PATH}"
    )
    return server
