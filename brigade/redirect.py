"""Plain HTTP next to ``brigade up --https``: every request is sent to the https:// address.

A singer who types ``http://192.168.1.20:8080`` (the address ``make run`` used
to print) lands on the HTTPS page instead of a page without a microphone.  The
local CA's certificate is offered at :data:`CA_PATH` too, for phones that
install it (docs/user-guide.md) instead of accepting a warning.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

CA_PATH: Final = "/bucket-brigade-ca.crt"


def redirect_location(host_header: str | None, target: str, https_port: int) -> str | None:
    """``https://HOST:https_port/target`` for the ``Host`` a browser sent, None if unusable."""
    if not host_header:
        return None
    try:
        name = urlsplit("//" + host_header.strip()).hostname
    except ValueError:
        return None
    if not name or any(c in name for c in "/\\@ "):
        return None
    host = f"[{name}]" if ":" in name else name
    path = target if target.startswith("/") else "/"
    return f"https://{host}:{https_port}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    https_port = 443
    ca_cert: Path | None = None

    def do_GET(self) -> None:
        if self.path == CA_PATH and self.ca_cert is not None:
            body = self.ca_cert.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-x509-ca-cert")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        location = redirect_location(self.headers.get("Host"), self.path, self.https_port)
        if location is None:
            self.send_error(400, "no usable Host header")
            return
        self.send_response(308)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def start(host: str, port: int, https_port: int, ca_cert: Path) -> http.server.HTTPServer:
    """Serve the redirect on ``host:port`` in a daemon thread; ``shutdown()`` stops it.

    Raises ``OSError`` when the port cannot be bound.
    """
    handler = type("Redirect", (_Handler,), {"https_port": https_port, "ca_cert": ca_cert})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="https-redirect", daemon=True).start()
    return server
