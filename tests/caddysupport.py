"""Caddy as compose runs it (docker/Caddyfile, the caddy service's environment), as
a local process in front of local gateways: Debian's ``/usr/bin/caddy`` on free
ports, its admin endpoint off, its data (the local CA) in the test's directory."""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO, free_port, in_ci, missing, wait_until

CADDY = Path(os.environ.get("BB_CADDY", "/usr/bin/caddy"))


def have_caddy() -> bool:
    """Whether Caddy can run here; in CI it must (``require_caddy`` then fails loudly)."""
    return in_ci() or (CADDY.is_file() and os.access(CADDY, os.X_OK))


def require_caddy() -> Path:
    """Debian's caddy (``scripts/setup.sh --browser`` installs it); skip, or fail in CI."""
    if CADDY.is_file() and os.access(CADDY, os.X_OK):
        return CADDY
    reason = f"caddy not found at {CADDY}: run 'make test' (scripts/setup.sh installs it)"
    missing(reason)


def compose_env(service: str) -> dict[str, str]:
    """A compose service's environment with ``${VAR:-default}`` taken at its default."""
    spec = yaml.safe_load((REPO / "compose.yaml").read_text())["services"][service]
    env = {k: str(v) for k, v in (spec.get("environment") or {}).items()}
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}


@dataclass
class Front:
    """Caddy in front of the gateways: its ports and its local CA's root."""

    https: str
    """``https://localhost:PORT``"""
    http_port: int
    https_port: int
    root_ca: Path
    gateways: list[str]
    """The gateways' own ``http://127.0.0.1:PORT`` (behind Caddy)."""

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root_ca))


@contextlib.contextmanager
def caddy_front(gateways: list[str], tmp_path: Path, output_dir: Path) -> Iterator[Front]:
    """``caddy run`` on docker/Caddyfile with compose's environment for the caddy
    service; only the ports, the upstream and the data directory differ."""
    binary = require_caddy()
    home = tmp_path / "caddy-home"
    log_path = output_dir / "caddy.log"
    # Other processes on the machine may take a free port before Caddy binds it
    # (Caddy binds every interface, and UDP too for HTTP/3): then try other ports.
    for _attempt in range(3):
        http_port, https_port = free_port(), free_port()
        env = {
            **os.environ,
            **compose_env("caddy"),
            "BB_GATEWAYS": " ".join(url.removeprefix("http://") for url in gateways),
            "BB_HTTP_PORT": str(http_port),
            "BB_HTTPS_PORT": str(https_port),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
        }
        assert env["BB_PUBLIC_HOST"] == "localhost"  # compose's default: no public name
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(binary), "run", "--config", str(REPO / "docker" / "Caddyfile")],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        front = Front(
            https=f"https://localhost:{https_port}",
            http_port=http_port,
            https_port=https_port,
            root_ca=home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt",
            gateways=gateways,
        )
        try:
            wait_until(
                lambda front=front, proc=proc: (
                    proc.poll() is not None
                    or fetch(f"{front.https}/healthz", front.context())[0] == 200
                ),
                30,
                "the gateway's /healthz through Caddy",
            )
            if proc.poll() is not None and "address already in use" in log_path.read_text():
                continue
            assert proc.poll() is None, log_path.read_text()[-3000:]
            yield front
            assert proc.poll() is None, log_path.read_text()[-3000:]
            return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    raise AssertionError(f"Caddy found no free ports:\n{log_path.read_text()[-3000:]}")


def fetch(
    url: str,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed: (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect(), urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with opener.open(request, timeout=5) as response:
            return int(response.status), dict(response.headers), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
