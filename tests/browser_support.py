"""Helpers for the browser tests: Chromium launch, fake-microphone WAV files,
a static server for the page's modules, and tone detection by FFT.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright for Python;
Playwright's own browser downloads are never used. Firefox ESR and WebKitGTK
(with their PulseAudio and Xvfb) live in ``tests/engines/``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import threading
import wave
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from playwright.sync_api import sync_playwright

from common.constants import SAMPLE_RATE, constants_json
from tests.support import missing, running_stack, wait_until

REPO = Path(__file__).resolve().parent.parent
STATIC = REPO / "gateway" / "static"
CHROMIUM = Path(os.environ.get("BB_CHROMIUM", "/usr/bin/chromium"))

Samples = npt.NDArray[np.float32]

BASE_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
)


def require_chromium() -> Path:
    """The Chromium binary; skip (outside CI) or fail (CI=true) when it is missing."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"Chromium not found at {CHROMIUM}: run 'make test' (it installs Debian's chromium)"
    missing(reason)


def require_axe() -> Path:
    """axe-core's script (``scripts/setup.sh --browser`` installs it); skip, or fail in CI."""
    venv = Path(os.environ.get("VENV", REPO / ".venv"))
    path = venv / "axe" / "node_modules" / "axe-core" / "axe.min.js"
    if path.is_file():
        return path
    reason = f"axe-core not found at {path}: run 'make test' (scripts/setup.sh installs it)"
    missing(reason)


def chromium_args(fake_mic: Path | None = None, autoplay: bool = True) -> list[str]:
    """Launch flags: headless as root, and a fake microphone playing ``fake_mic`` (a WAV).

    ``autoplay=False`` applies a desktop browser's policy: sound starts only after a click.
    """
    args = list(BASE_ARGS)
    if not autoplay:
        args = [a for a in args if not a.startswith("--autoplay-policy")]
        args.append("--autoplay-policy=document-user-activation-required")
    if fake_mic is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic}",
        ]
    return args


def launch(playwright: Any, fake_mic: Path | None = None, autoplay: bool = True) -> Any:
    """A fresh Chromium (new user data dir) with the test flags."""
    binary = require_chromium()
    return playwright.chromium.launch(
        executable_path=str(binary), headless=True, args=chromium_args(fake_mic, autoplay)
    )


# --- fake microphone -----------------------------------------------------------


def tone(freq_hz: float, seconds: float, sample_rate: int, amplitude: float = 0.3) -> Samples:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def gated_tone(
    freq_hz: float,
    pattern: Sequence[tuple[float, float]],
    seconds: float,
    sample_rate: int,
    amplitude: float = 0.3,
) -> Samples:
    """A tone on during each ``(start_s, end_s)`` of ``pattern`` (5 ms ramps), else silence."""
    out = np.zeros(round(seconds * sample_rate), np.float32)
    full = tone(freq_hz, seconds, sample_rate, amplitude)
    ramp = round(0.005 * sample_rate)
    for start_s, end_s in pattern:
        a, b = round(start_s * sample_rate), round(end_s * sample_rate)
        env = np.ones(b - a, np.float32)
        env[:ramp] = np.linspace(0, 1, ramp, dtype=np.float32)
        env[-ramp:] = np.linspace(1, 0, ramp, dtype=np.float32)
        out[a:b] = full[a:b] * env
    return out


def write_wav(path: Path, samples: Samples, sample_rate: int) -> Path:
    """16-bit mono WAV (Chromium's fake capture device reads it and loops it)."""
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return path


# --- reading what the page recorded ----------------------------------------------


def decode_dump(dump: dict[str, Any]) -> tuple[int, Samples, int]:
    """``window.bbDebug.{sent,received}.dump()`` as (start position, samples, samples covered)."""
    if dump["start"] is None:
        return 0, np.zeros(0, np.float32), 0
    data = np.frombuffer(base64.b64decode(dump["data"]), dtype="<f4").astype(np.float32)
    if data.shape[0] != dump["length"]:
        raise ValueError(f"dump says {dump['length']} samples, data holds {data.shape[0]}")
    return int(dump["start"]), data, int(dump["covered"])


def tone_level(
    samples: Samples, freq_hz: float, sample_rate: int, bandwidth_hz: float = 20
) -> float:
    """Amplitude of the component near ``freq_hz`` (Hann-windowed FFT, peak in the band)."""
    if samples.shape[0] == 0:
        return 0.0
    window = np.hanning(samples.shape[0])
    spectrum = np.abs(np.fft.rfft(samples * window)) * 2 / window.sum()
    freqs = np.fft.rfftfreq(samples.shape[0], 1 / sample_rate)
    band = np.abs(freqs - freq_hz) <= max(bandwidth_hz, sample_rate / samples.shape[0])
    return float(spectrum[band].max())


def tone_envelope(samples: Samples, freq_hz: float, sample_rate: int, block: int) -> Samples:
    """Per ``block`` samples: the amplitude of ``freq_hz`` in that block (quadrature sum)."""
    n = samples.shape[0] // block * block
    t = np.arange(n) / sample_rate
    base = samples[:n] * np.exp(-2j * np.pi * freq_hz * t)
    envelope: Samples = (np.abs(base.reshape(-1, block).mean(axis=1)) * 2).astype(np.float32)
    return envelope


def best_lag(reference: Samples, signal: Samples, max_lag: int) -> tuple[int, float]:
    """Lag (in elements) at which ``signal`` best matches ``reference``, and the correlation there.

    ``signal[i + lag] ~ reference[i]``; both are mean-removed and normalised.
    """
    a = reference - reference.mean()
    b = signal - signal.mean()
    best, best_corr = 0, -2.0
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            x, y = a[: a.shape[0] - lag], b[lag:]
        else:
            x, y = a[-lag:], b[: b.shape[0] + lag]
        n = min(x.shape[0], y.shape[0])
        x, y = x[:n], y[:n]
        denom = float(np.linalg.norm(x) * np.linalg.norm(y))
        corr = float(np.dot(x, y)) / denom if denom > 0 else 0.0
        if corr > best_corr:
            best, best_corr = lag, corr
    return best, best_corr


def b64_floats(samples: Samples) -> str:
    return base64.b64encode(samples.astype("<f4").tobytes()).decode()


# --- a static server for the page's modules (unit tests, no gateway) --------------


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Serves gateway/static at /static/ and the constants at /api/constants, like the gateway."""

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0]
        if clean.startswith("/static/"):
            return str(STATIC / clean.removeprefix("/static/"))
        return str(STATIC / "__missing__")

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/api/constants":
            body = json.dumps(constants_json()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.split("?", 1)[0] == "/blank":
            body = b"<!doctype html><title>blank</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving the page's modules (a secure context: WebCodecs works)."""
    handler = functools.partial(_StaticHandler, directory=str(STATIC))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium_page(**options: Any) -> Iterator[Any]:
    """A fresh Chromium (no microphone) with one page, ``new_page(**options)``; closed after."""
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            yield browser.new_page(**options)
        finally:
            browser.close()


@contextmanager
def static_page(script: str, **options: Any) -> Iterator[Any]:
    """One Chromium page (``new_page(**options)``) on :func:`static_server`'s blank page,
    after ``script`` (JavaScript: an expression or a function, awaited) has run in it."""
    with static_server() as base, chromium_page(**options) as page:
        page.goto(f"{base}/blank")
        page.evaluate(script)
        yield page


# --- the real stack for end-to-end tests ----------------------------------------------


@contextmanager
def browser_stack(
    redis_url: str,
    output_dir: Path,
    env: Mapping[str, str] | None = None,
    recorder: bool = False,
) -> Iterator[str]:
    """A mixer and a gateway (and a recorder when asked) for a browser, checked as
    :func:`tests.support.running_stack` checks them; yields the gateway's base URL.
    Tests take the ``stack`` fixture (``@pytest.mark.stack(chromium=True)``) instead."""
    require_chromium()  # before starting anything
    with running_stack(redis_url, output_dir, env=env, recorders=int(recorder)) as stack:
        yield stack.base


def fill_join(
    page: Any, name: str, *, room: str | None = None, role: str = "singer", password: str = ""
) -> None:
    """Fill the form as a person would (a singer enters a known latency) and press Join."""
    page.fill("#name", name)
    if room is not None:
        page.fill("#room", room)
    if role == "singer":
        page.fill("#latency-ms", "0")
        page.click("#manual-latency button[type=submit]")
    else:
        page.check("input[name=role][value=spectator]")
    if password:
        page.fill("#password", password)
    page.click("#join")


def console_errors(*pages: Any) -> list[str]:
    """A list that fills with every console error and uncaught exception of ``pages``."""
    errors: list[str] = []
    for page in pages:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def lead(page: Any) -> None:
    """Press Lead; wait until the page's member leads."""
    page.click("#lead")
    poll(page, "bbDebug.state && bbDebug.state.leader === bbDebug.me.singer_id", "leading")


def move_behind_the_leader(page: Any) -> int:
    """Move by hand to a later bucket than the leader's: the third, or the fourth if
    the leader's arrival already put this member in the third. Returns its index."""
    poll(page, "bbDebug.state && bbDebug.state.leader !== null", "a leader")
    target = 3 if page.evaluate("bbDebug.me.bucket") == 2 else 2
    page.click(f"#buckets li[data-bucket='{target}'] button")
    poll(
        page,
        f"bbDebug.me && bbDebug.me.delay === bbDebug.state.buckets.delays[{target}]",
        f"in bucket {target + 1}",
    )
    return target


def start_song(page: Any) -> None:
    """Press Start (the leader's page); wait until the song runs."""
    page.click("#start")
    poll(page, "bbDebug.state.song && bbDebug.state.song.running", "the song runs")


def wait_heard(singer: Any, listener: Any, seconds: float, timeout_s: float) -> None:
    """Wait until ``listener``'s page has received ``seconds`` of what ``singer``'s sent."""

    def reached() -> bool:
        sung = singer.evaluate("bbDebug.sent.span()")
        heard = listener.evaluate("bbDebug.received.span()")
        return bool(
            sung["start"] is not None
            and heard["end"] is not None
            and heard["end"] >= sung["start"] + seconds * SAMPLE_RATE
        )

    wait_until(reached, timeout_s, f"{seconds} s of singing to reach the listener", 0.2)


def upload_track(page: Any, path: Path) -> None:
    """The leader chooses a backing track file; wait until it is the room's."""
    page.set_input_files("#track-file", str(path))
    poll(page, "bbDebug.state.song.track !== null", "the track is the room's", 30)


def set_metronome(page: Any, bpm: int, beats: int, count_in: bool = False) -> None:
    """The leader turns the metronome on with ``bpm`` and ``beats`` (and a count-in bar)."""
    page.check("#metronome input[name=on]")
    page.fill("#metronome input[name=bpm]", str(bpm))
    page.fill("#metronome input[name=beats]", str(beats))
    if count_in:
        page.check("#metronome input[name=count_in]")
    page.click("#metronome button[type=submit]")


def poll(page: Any, expression: str, what: str, timeout_s: float = 20) -> Any:
    """Wait until ``expression`` (JavaScript) is truthy in ``page``; return its value."""
    handle = page.wait_for_function(expression, timeout=timeout_s * 1000)
    value = handle.json_value()
    assert value, what
    return value
