"""What the engine tests need of a page, whatever drives it, and the scripts
they put into pages: a gated-tone microphone, WebCodecs hidden, errors kept."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

from tests.support import missing, wait_until


class EnginePage(Protocol):
    """One tab of one engine. ``js`` evaluates an expression (a promise is awaited)
    and returns its value through JSON; clicks and typing are the engine's own."""

    engine: str

    def add_init_script(self, script: str) -> None: ...
    def goto(self, url: str) -> None: ...
    def js(self, expression: str) -> Any: ...
    def click(self, selector: str) -> None: ...
    def fill(self, selector: str, text: str) -> None: ...
    def screenshot(self, path: Path) -> None: ...
    def errors(self) -> list[str]: ...


def require_program(name: str, package: str) -> str:
    """The program's path; skip (outside CI) or fail (CI=true) when it is missing."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} not found: run 'make test' (scripts/setup.sh installs Debian's {package})"
    missing(reason)


def wait_js(page: EnginePage, expression: str, what: str, timeout_s: float = 20) -> Any:
    """Poll ``expression`` in ``page`` until truthy; return its value. A page that stops
    answering fails at once (its error is not a "not yet")."""
    return wait_until(
        lambda: page.js(expression), timeout_s, f"{what} ({expression})", 0.1, retry_errors=False
    )


def gated_mic_script(freq_hz: float, notes: list[tuple[float, float]], loop_s: float) -> str:
    """Replaces the microphone's sound with a gated tone (the engines' own fake
    devices play a steady tone or beeps that cannot be aligned). The browser's own
    getUserMedia still runs first, so its permission path is the real one."""
    return f"""(() => {{
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) return;
  const real = md.getUserMedia.bind(md);
  md.getUserMedia = async (constraints) => {{
    const device = await real(constraints);
    const ctx = new AudioContext({{ sampleRate: 48000 }});
    const n = Math.round({loop_s} * 48000);
    const buffer = ctx.createBuffer(1, n, 48000);
    const data = buffer.getChannelData(0);
    const ramp = 240;
    for (const [a, b] of {[list(n) for n in notes]}) {{
      const i0 = Math.round(a * 48000), i1 = Math.round(b * 48000);
      for (let i = i0; i < i1; i++) {{
        const env = Math.min(1, (i - i0) / ramp, (i1 - 1 - i) / ramp);
        data[i] = 0.3 * env * Math.sin(2 * Math.PI * {freq_hz} * i / 48000);
      }}
    }}
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.loop = true;
    const out = ctx.createMediaStreamDestination();
    source.connect(out);
    source.start();
    ctx.resume();
    window.__fakeMic = {{ ctx, device }};
    return out.stream;
  }};
}})();"""


# WebCodecs hidden, as on a browser without it (Safari before 26, older Firefox).
HIDE_WEBCODECS = """(() => {
  for (const name of ["AudioEncoder", "AudioDecoder", "EncodedAudioChunk", "AudioData"]) {
    try { delete window[name]; } catch (e) {}
    const hide = { value: undefined, configurable: true };
    try { Object.defineProperty(window, name, hide); } catch (e) {}
  }
})();"""

# getUserMedia refused the way a browser refuses it when the person blocks the microphone.
DENY_MIC = """(() => {
  navigator.mediaDevices.getUserMedia = () =>
    Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
})();"""

# Keeps uncaught errors and console.error calls, for engines whose driver does not report them.
KEEP_ERRORS = """(() => {
  if (window.__errors) return;
  window.__errors = [];
  const keep = (text) => window.__errors.push(String(text));
  window.addEventListener("error", (e) => keep(e.message));
  window.addEventListener("unhandledrejection", (e) => keep(e.reason));
  const original = console.error.bind(console);
  console.error = (...args) => { keep(args.join(" ")); original(...args); };
})();"""
