"""Firefox ESR (Debian ``firefox-esr``), headless, driven over its built-in
WebDriver BiDi (a WebSocket to ``ws://127.0.0.1:PORT/session``; no geckodriver).

Firefox's AudioContext never starts without a sound server: give it
``PULSE_SERVER`` from ``tests.engines.pulse``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.engines import hang
from tests.engines.page import require_program
from tests.engines.pulse import stop_group
from tests.support import StopWaiting, free_port, wait_until

PREFS: dict[str, object] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    # On a loaded test machine the audio worklet's thread can wait seconds for a
    # core, and Firefox's slow-script watchdog then kills the worklet's script
    # (seen under a load average of 15 on 2 cores). No watchdog in the tests.
    "dom.max_script_run_time": 0,
}
"""A fake microphone, no permission prompt, sound without a click, no script watchdog."""

AUTOPLAY_BLOCKED: dict[str, object] = {"media.autoplay.default": 1}
"""Firefox's own default: no sound until the person clicks in the page."""

BLOCKED_MIC_PREFS: dict[str, object] = {
    "media.navigator.permission.disabled": False,
    "permissions.default.microphone": 2,
}
"""The microphone blocked for every site, as a person's "Block" leaves it."""


EVALUATE_TRIES = 4
EVALUATE_TIMEOUT_S = 30


class PageHung(AssertionError):
    """The page's content process answered no script: a hang, not a slow machine."""


class FirefoxAudioDeadlock(PageHung):
    """The hang is Firefox's own: the page's main thread waited (no CPU) at every try,
    held by Firefox's audio server and PulseAudio's thread locking each other (seen
    under load with the tests' null sink; stacks in ``firefox-hang.txt``). Not the
    page's doing: the engine tests run once more on a fresh Firefox when they meet it."""


class FirefoxPage:
    """The one tab of a Firefox session, over WebDriver BiDi."""

    engine = "firefox"

    def __init__(self, ws: ClientConnection, browser_pid: int, log_dir: Path) -> None:
        self.ws = ws
        self.browser_pid = browser_pid
        self.hang_log = log_dir / "firefox-hang.txt"
        self.tries = EVALUATE_TRIES
        self.try_timeout_s: float = EVALUATE_TIMEOUT_S
        self.next_id = 0
        self.console_errors: list[str] = []
        self.command("session.new", capabilities={"alwaysMatch": {"acceptInsecureCerts": True}})
        self.command("session.subscribe", events=["log.entryAdded"])
        tree = self.command("browsingContext.getTree")
        self.context = str(tree["contexts"][0]["context"])

    def command(self, method: str, *, timeout_s: float = 120, **params: Any) -> Any:
        """Send one BiDi command and return its result (events meanwhile are kept)."""
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            # A reply to an earlier, abandoned command has another id and is skipped.
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if message.get("type") == "error":
                    raise RuntimeError(
                        f"{method}: {message.get('error')}: {message.get('message')}"
                    )
                return message["result"]
            if message.get("method") == "log.entryAdded":
                entry = message["params"]
                if entry.get("level") == "error":
                    self.console_errors.append(str(entry.get("text")))

    def read(self, method: str, **params: Any) -> Any:
        """A command that only reads, asked again if Firefox loses it (its remote agent
        then logs "ping for command script.evaluateExpression ... timed out"). When
        no try is answered the page's content process is held: fail saying whether
        its main thread spins (the page's script) or waits (Firefox itself)."""
        seen: list[str] = []
        for attempt in range(self.tries):
            try:
                return self.command(method, timeout_s=self.try_timeout_s, **params)
            except TimeoutError:
                # Native stacks once (gdb takes a while); the verdict every time.
                stacks = self.hang_log if attempt == 0 else None
                seen.append(hang.report(self.browser_pid, stacks))
                if stacks is not None:  # the parent's too: its audio server, PulseAudio's thread
                    with stacks.open("a") as out:
                        out.write(
                            f"=== the parent process\n{hang.native_stacks(self.browser_pid)}\n"
                        )
        try:
            self.command("browsingContext.getTree", timeout_s=10)
            parent = "Firefox's parent process still answers"
        except TimeoutError:
            parent = "Firefox's parent process does not answer either"
        blocked = bool(seen) and all(
            "main thread blocked" in one and "spinning" not in one for one in seen
        )
        raise (FirefoxAudioDeadlock if blocked else PageHung)(
            f"Firefox's page answered no {method} in {self.tries} tries of"
            f" {self.try_timeout_s:g} s: its content process's main thread is held"
            f" ({parent}; its audio threads: {hang.audio_threads(self.browser_pid)})."
            " 'spinning': the page's script runs on (a loop);"
            f" 'blocked': it waits inside Firefox. Per try: {' | '.join(seen)}."
            f" Native stacks: {self.hang_log}"
        )

    def add_init_script(self, script: str) -> None:
        """Run ``script`` in every document before the page's own scripts."""
        self.command("script.addPreloadScript", functionDeclaration=f"() => {{ {script} }}")

    def goto(self, url: str) -> None:
        self.command("browsingContext.navigate", context=self.context, url=url, wait="complete")

    def _evaluate(self, expression: str, ownership: str = "none") -> Any:
        result = self.read(
            "script.evaluate",
            expression=expression,
            target={"context": self.context},
            awaitPromise=True,
            resultOwnership=ownership,
        )
        if result.get("type") == "exception":
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"]

    def js(self, expression: str) -> Any:
        value = self._evaluate(f"(async () => JSON.stringify(await ({expression})))()")
        return None if value.get("type") != "string" else json.loads(value["value"])

    def click(self, selector: str) -> None:
        """A real pointer click in the middle of the element (a user gesture)."""
        node = self._evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); return e; })()",
            ownership="root",
        )
        origin = {"type": "element", "element": {"sharedId": node["sharedId"]}}
        self.command(
            "input.performActions",
            context=self.context,
            actions=[
                {
                    "type": "pointer",
                    "id": "mouse",
                    "parameters": {"pointerType": "mouse"},
                    "actions": [
                        {"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
                        {"type": "pointerDown", "button": 0},
                        {"type": "pointerUp", "button": 0},
                    ],
                }
            ],
        )

    def fill(self, selector: str, text: str) -> None:
        self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus();"
            f" e.value = {json.dumps(text)};"
            " e.dispatchEvent(new Event('input', {bubbles: true}));"
            " e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
        )

    def screenshot(self, path: Path) -> None:
        shot = self.command(
            "browsingContext.captureScreenshot", context=self.context, origin="document"
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def errors(self) -> list[str]:
        return list(self.console_errors)


@contextlib.contextmanager
def firefox(
    log_dir: Path, pulse_server: str, prefs: Mapping[str, object] | None = None
) -> Iterator[FirefoxPage]:
    """A headless Firefox ESR with a fresh profile (``PREFS`` and ``prefs``); yields its tab."""
    binary = require_program("firefox-esr", "firefox-esr")
    profile = Path(tempfile.mkdtemp(prefix="bb-firefox-"))
    lines = [
        f"user_pref({json.dumps(k)}, {json.dumps(v)});"
        for k, v in {**PREFS, **(prefs or {})}.items()
    ]
    (profile / "user.js").write_text("\n".join(lines) + "\n")
    port = free_port()
    log = (log_dir / "firefox.log").open("wb")
    env = {**os.environ, "PULSE_SERVER": pulse_server, "MOZ_HEADLESS": "1"}
    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-remote",
            "--profile",
            str(profile),
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ws: ClientConnection | None = None

    def connected() -> ClientConnection | None:
        if proc.poll() is not None:
            raise StopWaiting(f"firefox exited: {(log_dir / 'firefox.log').read_text()[-2000:]}")
        try:
            return connect(f"ws://127.0.0.1:{port}/session", max_size=None, open_timeout=5)
        except OSError:
            return None  # not listening yet

    try:
        ws = wait_until(connected, 30, "Firefox's WebDriver BiDi", 0.2, retry_errors=False)
        assert ws is not None  # what wait_until returns is true
        yield FirefoxPage(ws, proc.pid, log_dir)
    finally:
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()
        stop_group(proc)
        log.close()
