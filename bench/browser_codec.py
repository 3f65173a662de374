"""What the page's codec costs a singer: CPU of the whole browser (every
process of it, from ``/proc``) per second of singing, and the bytes on its
WebSocket, with WebCodecs Opus against the pcm16 fallback, in Chromium and
Firefox ESR, against the real stack. One singer who leads, starts a song and
sings a tone; the same run measures both codecs one after the other.

    .venv/bin/python -m bench.browser_codec [--seconds 20]

Prints a grid and writes ``bench-results/browser_codec.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from bench.procstat import cpu_s
from bench.results import print_grid, write_results
from brigade.redisserver import LocalRedis
from common.constants import SAMPLE_RATE
from tests.browser_support import browser_stack, launch, tone, write_wav
from tests.engines.firefox import firefox
from tests.engines.page import EnginePage, wait_js
from tests.engines.pulse import pulseaudio

# Counts the bytes the page's WebSockets send and receive.
COUNT_BYTES = """
  window.__bytes = { sent: 0, received: 0 };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => {
        window.__bytes.received += typeof e.data === "string" ? e.data.length : e.data.byteLength;
      });
    }
    send(data) {
      window.__bytes.sent += typeof data === "string" ? data.length : data.byteLength;
      super.send(data);
    }
  };
"""

BROWSER_NAMES = ("chrom", "firefox", "Web Content", "Isolated", "RDD", "Socket", "Utility")


def browser_cpu_s() -> float:
    """CPU seconds of every browser process on the machine started by this benchmark
    (children of this process, at any depth, whose name is a browser's)."""
    me = str(Path("/proc/self").resolve().name)
    parents: dict[str, str] = {}
    names: dict[str, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            names[entry.name] = stat[stat.index("(") + 1 : stat.rindex(")")]
            parents[entry.name] = stat.rsplit(")", 1)[1].split()[1]
    total = 0.0
    for pid, name in names.items():
        ancestor, depth = parents.get(pid), 0
        while ancestor and ancestor not in {me, "0"} and depth < 20:
            ancestor, depth = parents.get(ancestor), depth + 1
        if ancestor == me and any(part in name for part in BROWSER_NAMES):
            total += cpu_s(int(pid))
    return total


class ChromiumPage:
    """Just enough of the engine page interface over a Playwright page."""

    engine = "chromium"

    def __init__(self, page: Any) -> None:
        self.page = page

    def add_init_script(self, script: str) -> None:
        self.page.add_init_script(script)

    def goto(self, url: str) -> None:
        self.page.goto(url)

    def js(self, expression: str) -> Any:
        return self.page.evaluate(f"async () => await ({expression})")

    def click(self, selector: str) -> None:
        self.page.click(selector)

    def fill(self, selector: str, text: str) -> None:
        self.page.fill(selector, text)

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))

    def errors(self) -> list[str]:
        return []


@contextlib.contextmanager
def chromium(mic: Path) -> Iterator[EnginePage]:
    with sync_playwright() as pw:
        browser = launch(pw, mic)
        try:
            yield ChromiumPage(browser.new_page())
        finally:
            browser.close()


def sing(page: EnginePage, base: str, room: str, codec: str, seconds: float) -> dict[str, float]:
    """Join ``room`` as a singer with ``codec``, lead, start, sing; CPU and bytes per second."""
    page.add_init_script(COUNT_BYTES)
    page.goto(f"{base}/?room={room}&codec={codec}")
    wait_js(page, "document.body.dataset.ready === '1'", "the page")
    page.fill("#name", "Bench")
    page.fill("#latency-ms", "0")
    page.click("#manual-latency button[type=submit]")
    page.click("#join")
    wait_js(page, "bbDebug.me !== null", "joined", 30)
    assert page.js("bbDebug.codec") == codec, page.js("bbDebug.codec")
    page.click("#lead")
    wait_js(page, "bbDebug.state.leader === bbDebug.me.singer_id", "leading")
    page.click("#start")
    wait_js(page, "bbDebug.state.song && bbDebug.state.song.running", "the song")
    time.sleep(3)  # warm-up: encoders configured, the tap flowing
    cpu0, bytes0, t0 = browser_cpu_s(), page.js("window.__bytes"), time.monotonic()
    time.sleep(seconds)
    cpu1, bytes1, t1 = browser_cpu_s(), page.js("window.__bytes"), time.monotonic()
    span = t1 - t0
    return {
        "cpu_ms_per_s": (cpu1 - cpu0) * 1000 / span,
        "sent_kbit_s": (bytes1["sent"] - bytes0["sent"]) * 8 / 1000 / span,
        "received_kbit_s": (bytes1["received"] - bytes0["received"]) * 8 / 1000 / span,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bb-bench-codec-"))
    mic = write_wav(out / "mic.wav", tone(440, 4.0, SAMPLE_RATE), SAMPLE_RATE)
    redis = LocalRedis()
    redis.start()
    results: dict[str, dict[str, float]] = {}
    try:
        with browser_stack(redis.url, out) as base, pulseaudio(out) as pulse:
            engines: dict[str, Callable[[], contextlib.AbstractContextManager[EnginePage]]] = {
                "chromium": lambda: chromium(mic),
                "firefox": lambda: firefox(out, pulse),
            }
            for engine, open_page in engines.items():
                for codec in ("opus", "pcm16"):
                    with open_page() as page:
                        room = f"bench-{engine}-{codec}"
                        results[f"{engine}/{codec}"] = sing(page, base, room, codec, args.seconds)
    finally:
        redis.stop()
    rows = []
    for key, r in results.items():
        rows.append(
            [
                key,
                f"{r['cpu_ms_per_s']:.1f}",
                f"{r['sent_kbit_s']:.0f}",
                f"{r['received_kbit_s']:.0f}",
            ]
        )
    for engine in ("chromium", "firefox"):
        opus, pcm = results[f"{engine}/opus"], results[f"{engine}/pcm16"]
        rows.append(
            [
                f"{engine} pcm16 / opus",
                f"{pcm['cpu_ms_per_s'] / opus['cpu_ms_per_s']:.2f}x",
                f"{pcm['sent_kbit_s'] / opus['sent_kbit_s']:.1f}x",
                f"{pcm['received_kbit_s'] / opus['received_kbit_s']:.1f}x",
            ]
        )
    print_grid(
        f"The page's codec, one singer, {args.seconds:.0f} s of singing (whole browser)",
        ["engine/codec", "CPU ms per singer-s", "sent kbit/s", "received kbit/s"],
        rows,
    )
    print(f"results: {write_results('browser_codec', {'seconds': args.seconds, 'runs': results})}")


if __name__ == "__main__":
    main()
