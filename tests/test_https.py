"""HTTPS for real: Debian's Caddy on docker/Caddyfile in front of a real gateway
(compose's front door, run as local processes), and ``brigade up --https`` with
the certificate it makes (brigade/tls.py).

Chromium trusts exactly the certificate under test (``--ignore-certificate-errors-spki-list``
with the served leaf's key hash; no blanket ``ignore_https_errors``) and sings
through it over ``wss://``: Ann leads with a gated 440 Hz tone, Ben in a later
bucket must hear it where she sang it (lag and correlation of the tone's
envelope, as tests/test_browser_e2e.py measures).  Caddy listens on free ports
(``BB_HTTP_PORT``/``BB_HTTPS_PORT``), its admin endpoint off, its data (the
local CA) under the test's own directory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from brigade import redirect, tls
from common.constants import OCC_FRAME_SAMPLES, SAMPLE_RATE
from common.errors import ValidationError
from common.protocol import hello_message
from common.settings import GatewaySettings
from tests.browser_support import (
    best_lag,
    browser_stack,
    chromium_args,
    decode_dump,
    fill_join,
    gated_tone,
    lead,
    move_behind_the_leader,
    require_chromium,
    start_song,
    tone,
    tone_envelope,
    tone_level,
    wait_heard,
    write_wav,
)
from tests.caddysupport import Front, caddy_front, compose_env, fetch, require_caddy
from tests.support import REPO, free_port, wait_until

RATE = SAMPLE_RATE
BLOCK = OCC_FRAME_SAMPLES
ANN_NOTES = [(0.0, 0.3), (0.5, 0.6), (1.0, 1.6), (2.0, 2.2), (2.5, 3.4)]
LOOP_S = 4.0


def leaf_certificate(host: str, port: int, context: ssl.SSLContext) -> x509.Certificate:
    """The certificate the server on loopback ``port`` presents for the name ``host``
    (SNI; verified by ``context``)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def launch_trusting(pw: Any, spki: str, fake_mic: Path | None = None) -> Any:
    """Chromium that trusts the one certificate whose key hashes to ``spki``, no other."""
    return pw.chromium.launch(
        executable_path=str(require_chromium()),
        headless=True,
        args=[*chromium_args(fake_mic), f"--ignore-certificate-errors-spki-list={spki}"],
    )


# --- singing through it ------------------------------------------------------------------


def sing(pw: Any, base: str, spki: str, output_dir: Path, label: str) -> tuple[float, float]:
    """Ann leads, Ben sings in a later bucket; returns (lag ms, correlation) of Ann's
    440 Hz envelope in what Ben received against what she sent."""
    ann_mic = write_wav(output_dir / "ann-440.wav", gated_tone(440, ANN_NOTES, LOOP_S, RATE), RATE)
    ben_mic = write_wav(output_dir / "ben-660.wav", tone(660, LOOP_S, RATE), RATE)
    browser_a = launch_trusting(pw, spki, ann_mic)
    browser_b = launch_trusting(pw, spki, ben_mic)
    sockets: list[str] = []
    errors: list[str] = []
    try:
        ann, ben = browser_a.new_page(), browser_b.new_page()
        for page in (ann, ben):
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{base}/?room=choir")
            page.wait_for_selector("body[data-ready]")
            assert page.evaluate("window.isSecureContext && location.protocol") == "https:"
            assert page.query_selector("#secure-context-help") is None
        for page, name in ((ann, "Ann"), (ben, "Ben")):
            page.evaluate("bbDebug.record(40)")
            fill_join(page, name)
            page.wait_for_selector("#stage:not([hidden])", timeout=15_000)
        lead(ann)
        move_behind_the_leader(ben)
        start_song(ann)
        wait_heard(ann, ben, 3, 40)
        sent_start, sent, _ = decode_dump(ann.evaluate("bbDebug.sent.dump()"))
        recv_start, recv, _ = decode_dump(ben.evaluate("bbDebug.received.dump()"))
        ben.screenshot(path=str(output_dir / f"ben-{label}.png"), full_page=True)
    finally:
        browser_a.close()
        browser_b.close()
    assert not errors, f"errors in the pages: {errors}"
    # Every socket went over TLS to the address the page came from.
    host = base.removeprefix("https://")
    assert sockets and all(url == f"wss://{host}/ws" for url in sockets), sockets
    lo = max(sent_start, recv_start)
    lo += -lo % BLOCK
    hi = min(sent_start + sent.shape[0], recv_start + recv.shape[0])
    assert hi - lo >= 2 * RATE, f"only {(hi - lo) / RATE:.2f} s of overlap"
    sent_part, recv_part = (
        sent[lo - sent_start : hi - sent_start],
        recv[lo - recv_start : hi - recv_start],
    )
    assert tone_level(recv_part, 440, RATE) > 0.05
    lag, corr = best_lag(
        tone_envelope(sent_part, 440, RATE, BLOCK),
        tone_envelope(recv_part, 440, RATE, BLOCK),
        max_lag=round(0.5 * RATE / BLOCK),
    )
    lag_ms = lag * BLOCK * 1000 / RATE
    print(
        f"{label} ({base}): Ben hears Ann's 440 Hz at lag {lag_ms:.1f} ms, correlation {corr:.3f}"
    )
    return lag_ms, corr


# --- Caddy in front of the gateway -----------------------------------------------------


@pytest.fixture
def front(redis_url: str, output_dir: Path, tmp_path: Path) -> Iterator[Front]:
    """A mixer and a gateway as compose's gateway service runs (trusting X-Forwarded-For),
    with Caddy in front."""
    require_caddy()
    env = {k: v for k, v in compose_env("gateway").items() if k.startswith("BB_TRUST")}
    assert env == {"BB_TRUST_FORWARDED_FOR": "true"}
    with (
        browser_stack(redis_url, output_dir, {**env, "BB_ROOMS_PER_MIN": "2"}) as gateway,
        caddy_front([gateway], tmp_path, output_dir) as proxy,
    ):
        yield proxy


async def _ws_hello(url: str, origin: str, context: ssl.SSLContext) -> str:
    """Open the WebSocket with ``Origin``, say hello; the reply's type or the HTTP status."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, origin=origin, ssl=context) as ws,
        ):
            await ws.send_json(hello_message("hall", "Probe", role="spectator", codec="pcm16"))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    reply = json.loads(msg.data)
                    if reply["type"] in {"welcome", "error"}:
                        return str(reply["type"])
            return "closed"
    except aiohttp.WSServerHandshakeError as exc:
        return str(exc.status)


def test_caddy_serves_https_redirects_http_and_the_gateway_checks_still_hold(
    front: Front,
) -> None:
    ctx = front.context()
    # The page over HTTPS, with a certificate from Caddy's local CA.
    status, _, page = fetch(f"{front.https}/", ctx)
    assert status == 200 and b"Bucket Brigade" in page
    leaf = leaf_certificate("localhost", front.https_port, ctx)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    # Plain HTTP is redirected to https://, path and query kept (Caddy names no port:
    # it assumes the public port is 443, as in compose).
    status, headers, _ = fetch(f"http://localhost:{front.http_port}/r/choir?name=Ann")
    assert status == 308 and headers["Location"] == "https://localhost/r/choir?name=Ann"
    # Operators' figures are not served through the public port.
    assert fetch(f"{front.https}/metrics", ctx)[0] == 403
    # Host check: a name Caddy holds no certificate for fails the handshake (what a
    # DNS-rebinding page would send); a foreign Host inside our TLS session gets 421.
    with pytest.raises(ssl.SSLError):
        leaf_certificate("evil.example", front.https_port, ssl._create_unverified_context())
    conn = http.client.HTTPSConnection("localhost", front.https_port, context=ctx, timeout=5)
    conn.request("GET", "/api/rooms", headers={"Host": "evil.example"})
    assert conn.getresponse().status == 421
    conn.close()
    # Origin check behind the proxy: our own page's Origin is welcome, another is not.
    ws_url = f"wss://localhost:{front.https_port}/ws"
    assert asyncio.run(_ws_hello(ws_url, front.https, ctx)) == "welcome"
    assert asyncio.run(_ws_hello(ws_url, "https://evil.example", ctx)) == "403"


def test_the_gateways_trust_only_the_address_caddy_writes(front: Front) -> None:
    """BB_ROOMS_PER_MIN=2 per client address. Through Caddy, a made-up X-Forwarded-For
    is replaced by the real peer, so every creation counts against 127.0.0.1."""

    def create(base: str, room: str, claimed: str, ctx: ssl.SSLContext | None) -> int:
        body = json.dumps({"room": room}).encode()
        headers = {"Content-Type": "application/json", "X-Forwarded-For": claimed}
        return fetch(f"{base}/api/rooms", ctx, headers, "POST", body)[0]

    through = [create(front.https, f"c{i}", f"203.0.113.{i}", front.context()) for i in range(3)]
    assert through == [201, 201, 429]
    # The same requests straight to the gateway (which trusts the header, as it must
    # behind a proxy) would each count against their made-up address: the check above
    # can fail.
    direct = [create(front.gateways[0], f"d{i}", f"198.51.100.{i}", None) for i in range(3)]
    assert direct == [201, 201, 201]


def test_chromium_sings_through_caddy_over_wss(front: Front, output_dir: Path) -> None:
    leaf = leaf_certificate("localhost", front.https_port, front.context())
    spki = tls.spki_sha256_b64(leaf)
    with sync_playwright() as pw:
        # Without the certificate trusted, Chromium refuses the page: the trust is real.
        browser = pw.chromium.launch(
            executable_path=str(require_chromium()), headless=True, args=chromium_args()
        )
        try:
            with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                browser.new_page().goto(front.https + "/")
        finally:
            browser.close()
        lag_ms, corr = sing(pw, front.https, spki, output_dir, "caddy")
    assert corr > 0.8
    assert abs(lag_ms) <= 6, f"Ben hears Ann {lag_ms:.1f} ms away from where she sang"


def _adapt(tmp_path: Path, **env: str) -> dict[str, Any]:
    """docker/Caddyfile as Caddy reads it (``caddy adapt``) with ``env``."""
    result = subprocess.run(
        [str(require_caddy()), "adapt", "--config", str(REPO / "docker" / "Caddyfile")],
        cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_the_caddyfile_takes_a_public_name_to_acme_and_a_lan_name_to_its_own_ca(
    tmp_path: Path,
) -> None:
    # A public name: no issuer named, so Caddy's default ACME issuers (Let's Encrypt,
    # ZeroSSL) obtain and renew its certificate. Admin endpoint off, local CA not
    # installed into this machine's trust store.
    public = _adapt(tmp_path, BB_PUBLIC_HOST="sing.example.org")
    assert "tls" not in public["apps"]
    assert public["admin"] == {"disabled": True}
    assert public["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False
    (site, catch_all) = public["apps"]["http"]["servers"]["srv0"]["routes"]
    assert site["match"] == [{"host": ["sing.example.org"]}]
    assert catch_all["handle"][0]["routes"][0]["handle"][0]["status_code"] == 421
    assert public["apps"]["http"]["https_port"] == 443
    # BB_TLS=internal: a LAN name from Caddy's local CA.
    lan = _adapt(tmp_path, BB_PUBLIC_HOST="choir.lan, 192.168.1.20", BB_TLS="internal")
    (policy, *_) = lan["apps"]["tls"]["automation"]["policies"]
    assert sorted(policy["subjects"]) == ["192.168.1.20", "choir.lan"]
    assert policy["issuers"] == [{"module": "internal"}]


# --- brigade up --https ------------------------------------------------------------------


def test_brigade_up_https_serves_phones_with_its_own_certificate(
    output_dir: Path, tmp_path: Path
) -> None:
    require_chromium()
    port, http_port = free_port(), free_port()
    tls_dir = tmp_path / "tls"
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "BB_HOST", "BB_PORT"}}
    log_path = output_dir / "up.log"
    argv = ["up", "--https", "--port", str(port), "--http-port", str(http_port)]
    argv += ["--tls-dir", str(tls_dir), "--recorders", "0"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "brigade", *argv],
            cwd=REPO,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"https://localhost:{port}"
    try:
        wait_until((tls_dir / "server.crt").is_file, 30, "brigade up to make its certificate")
        ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        wait_until(lambda: fetch(f"{base}/healthz", ctx)[0] == 200, 40, "the gateway over HTTPS")
        text = log_path.read_text()
        assert f"Bucket Brigade is running at {base}/" in text
        # The fingerprint printed is the served certificate's.
        printed = re.findall(r"certificate SHA-256 fingerprint: ([0-9A-F:]{95})", text)
        leaf = leaf_certificate("localhost", port, ctx)
        assert printed == [tls.fingerprint(leaf)]
        # Every LAN address printed is served under that certificate (verified).
        lan = re.findall(r"on this network: https://\[?([0-9a-fA-F.:]+?)\]?:\d+/", text)
        for address in lan:
            ip = ipaddress.ip_address(address)
            host = f"[{ip}]" if ip.version == 6 else str(ip)
            assert fetch(f"https://{host}:{port}/healthz", ctx)[0] == 200, address
        # Plain HTTP is sent to the HTTPS address; the CA is offered for phones.
        status, headers, _ = fetch(f"http://127.0.0.1:{http_port}/r/choir")
        assert status == 308 and headers["Location"] == f"https://127.0.0.1:{port}/r/choir"
        status, _, body = fetch(f"http://127.0.0.1:{http_port}{redirect.CA_PATH}")
        assert status == 200 and body == (tls_dir / "ca.crt").read_bytes()

        # The health check a container would run speaks HTTPS to a TLS gateway.
        check_env = {**env, "BB_PORT": str(port), "BB_TLS_CERT": str(tls_dir / "server.crt")}
        check_env["BB_TLS_KEY"] = str(tls_dir / "server.key")
        check = subprocess.run(
            [sys.executable, "-m", "brigade", "gateway", "--check"],
            cwd=REPO,
            env=check_env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert check.returncode == 0 and f"healthy: https://127.0.0.1:{port}/" in check.stdout

        # The singers come in as a phone would, at the LAN address (if this machine has one).
        ipv4 = [a for a in lan if ":" not in a]
        reached = f"https://{ipv4[0]}:{port}" if ipv4 else base
        with sync_playwright() as pw:
            lag_ms, corr = sing(pw, reached, tls.spki_sha256_b64(leaf), output_dir, "brigade-up")
        assert corr > 0.8
        assert abs(lag_ms) <= 6, f"Ben hears Ann {lag_ms:.1f} ms away from where she sang"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0, log_path.read_text()[-3000:]
    assert "Traceback" not in log_path.read_text()


def test_a_plain_http_page_from_another_machine_says_why_there_is_no_microphone(
    redis_url: str, output_dir: Path
) -> None:
    """``singer.test`` maps to loopback in Chromium, so the page is plain http:// under
    a name that is not localhost: no secure context, as on a phone on the LAN."""
    with browser_stack(redis_url, output_dir, {"BB_PUBLIC_HOST": "singer.test"}) as base:
        port = base.rsplit(":", 1)[1]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(require_chromium()),
                headless=True,
                args=[*chromium_args(), "--host-resolver-rules=MAP singer.test 127.0.0.1"],
            )
            try:
                page = browser.new_page()
                page.goto(f"http://singer.test:{port}/r/choir")
                page.wait_for_selector("#secure-context-help")
                assert page.evaluate("window.isSecureContext") is False
                text = page.inner_text("#secure-context-help")
                assert "only over https://" in text and f"http://singer.test:{port}" in text
                link = page.get_attribute("#secure-context-link", "href")
                assert link == f"https://singer.test:{port}/r/choir"
                page.screenshot(path=str(output_dir / "insecure.png"), full_page=True)
                # brigade up's ports: plain 8080 means --https on 8443; a proxy's 80 means 443.
                module = "await import('/static/securecontext.js')"
                for href, expected in [
                    ("http://10.0.0.5:8080/r/a?x=1", "https://10.0.0.5:8443/r/a?x=1"),
                    ("http://choir.lan/", "https://choir.lan/"),
                    ("http://10.0.0.5:9000/", "https://10.0.0.5:9000/"),
                ]:
                    got = page.evaluate(f"async () => ({module}).httpsAddress({href!r})")
                    assert got == expected
                # The same page on http://localhost is a secure context: no message.
                page.goto(f"http://localhost:{port}/r/choir")
                page.wait_for_selector("body[data-ready]")
                assert page.query_selector("#secure-context-help") is None
            finally:
                browser.close()


# --- the certificate's life ----------------------------------------------------------------


def test_the_local_ca_stays_and_the_leaf_follows_the_addresses(tmp_path: Path) -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    names = ["localhost", "choirbox", "choirbox.local"]
    first = tls.ensure(tmp_path, names, ["127.0.0.1", "192.168.1.20"], now)
    assert (first.key.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "ca.key").stat().st_mode & 0o777) == 0o600
    ca_pem = first.ca_cert.read_bytes()
    # Started again: the same certificate, so a phone that accepted it is not asked again.
    again = tls.ensure(tmp_path, names, ["192.168.1.20"], now + dt.timedelta(days=1))
    assert again.fingerprint_sha256 == first.fingerprint_sha256
    # On another network: a new leaf from the same CA, covering the old address too.
    moved = tls.ensure(tmp_path, names, ["10.0.0.7"], now + dt.timedelta(days=2))
    assert moved.fingerprint_sha256 != first.fingerprint_sha256
    assert moved.ca_cert.read_bytes() == ca_pem
    leaf = x509.load_pem_x509_certificate(moved.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "192.168.1.20",
        "10.0.0.7",
    }
    assert san.get_values_for_type(x509.DNSName) == names
    # Renewed before it runs out, not after.
    end = leaf.not_valid_after_utc
    kept = [ipaddress.ip_address("10.0.0.7")]
    assert not tls.needs_new_leaf(leaf, ca, names, kept, end - dt.timedelta(days=31))
    assert tls.needs_new_leaf(leaf, ca, names, kept, end - dt.timedelta(days=29))
    assert tls.needs_new_leaf(leaf, ca, [*names, "other"], kept, now)
    assert tls.needs_new_leaf(None, ca, names, kept, now)


def test_a_gateway_needs_both_halves_of_its_certificate() -> None:
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        GatewaySettings.load([], {"BB_TLS_CERT": "/some/server.crt"})
    assert GatewaySettings.load([], {}).tls_cert == ""


def test_redirect_locations() -> None:
    assert redirect.redirect_location("10.0.0.5:8080", "/r/a?b=1", 8443) == (
        "https://10.0.0.5:8443/r/a?b=1"
    )
    assert redirect.redirect_location("[fd00::2]:8080", "/", 8443) == "https://[fd00::2]:8443/"
    assert redirect.redirect_location("Choir.Local", "x", 9) == "https://choir.local:9/"
    assert redirect.redirect_location(None, "/", 8443) is None
    assert redirect.redirect_location("a b", "/", 8443) is None
    assert redirect.redirect_location("[::1", "/", 8443) is None


pytestmark = pytest.mark.timeout(180)
