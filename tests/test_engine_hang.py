"""A page that stops answering is told apart from a slow machine: the engine
driver says whether the content process's main thread spins (the page's own
script) or waits (the browser itself), from /proc, with native stacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_support import static_server
from tests.engines import hang
from tests.engines.firefox import PageHung, firefox
from tests.engines.page import wait_js
from tests.engines.pulse import pulseaudio, stop_group
from tests.support import wait_until

STAT = (
    "27760 (Isolated Web Co) S 27633 27503 27503 0 -1 4194624 7517 0 3 0 27 5 0 0 20 0 25 0"
    " 763421 11428790272 37255 18446744073709551615"
)


def test_a_stat_line_gives_cpu_time_and_state() -> None:
    sample = hang.parse_stat(STAT)
    assert sample.state == "S"
    assert sample.cpu_s == pytest.approx(0.32)
    odd = STAT.replace("(Isolated Web Co)", "(a) b (c)")
    assert hang.parse_stat(odd) == sample


@pytest.mark.parametrize("text", ["", "12 (x", "12 (x) S 1 2"])
def test_a_broken_stat_line_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="/proc stat"):
        hang.parse_stat(text)


def test_the_verdict_tells_a_spinning_thread_from_a_waiting_one() -> None:
    idle = hang.ThreadSample(cpu_s=0.27, state="S")
    assert hang.verdict(idle, hang.ThreadSample(0.27, "S"), 2.0) == "blocked"
    assert hang.verdict(idle, hang.ThreadSample(0.28, "S"), 2.0) == "blocked"
    assert hang.verdict(idle, hang.ThreadSample(0.60, "S"), 2.0) == "spinning"
    assert hang.verdict(idle, hang.ThreadSample(0.27, "R"), 2.0) == "spinning"


@pytest.fixture
def spinner_and_sleeper() -> Iterator[tuple[int, int]]:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    rest = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        yield spin.pid, rest.pid
    finally:
        stop_group(spin)
        stop_group(rest)


def test_real_threads_are_read_from_proc(spinner_and_sleeper: tuple[int, int]) -> None:
    spin, rest = spinner_and_sleeper

    def said(pid: int) -> str:
        first = hang.main_thread(pid)
        time.sleep(0.5)  # the sampling interval, not a wait for something to happen
        return hang.verdict(first, hang.main_thread(pid), 0.5)

    wait_until(lambda: said(spin) == "spinning", 60, "the busy loop called spinning")
    wait_until(lambda: hang.main_thread(rest).state == "S", 30, "sleep asleep")
    assert said(rest) == "blocked"


@pytest.fixture
def page_url() -> Iterator[str]:
    """A plain page (the static server's ``/blank``)."""
    with static_server() as base:
        yield f"{base}/blank"


@pytest.mark.timeout(240)
def test_a_page_stuck_in_a_loop_fails_and_says_so(page_url: str, output_dir: Path) -> None:
    """A real page hang still fails, quickly and clearly: the driver names the spinning
    main thread instead of waiting in silence."""
    with pulseaudio(output_dir) as pulse, firefox(output_dir, pulse) as page:
        page.goto(page_url)
        wait_js(page, "document.readyState === 'complete'", "the page loaded")
        page.js("(setTimeout(() => { for (;;) {} }, 0), true)")
        page.tries, page.try_timeout_s = 1, 5
        with pytest.raises(PageHung) as failed:
            page.js("document.title")
    message = str(failed.value)
    assert "answered no script.evaluate" in message, message
    assert "main thread spinning" in message, message
    stacks = (output_dir / "firefox-hang.txt").read_text()
    assert "Isolated Web" in stacks, stacks[:2000]


def test_a_process_without_audio_threads_says_none() -> None:
    assert hang.audio_threads(os.getpid()) == "none"
    assert hang.audio_threads(2**22 + 1) == "none"  # no such process
