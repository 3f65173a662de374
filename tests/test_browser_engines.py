"""The page in Firefox ESR and WebKitGTK (Safari's engine), the real Debian
packages, against the real stack, with a Chromium page as the rest of the choir.

Per engine: the page joins with a typed latency, leads, starts the song and
sings; a Chromium singer in a later bucket must hear it at the positions where
it sang (its voice heard). Then the engine's page moves behind the Chromium
singer and must hear that singer where they sang (it hears the room). Both from
the pages' own recordings (``bbDebug``): lag within 1 ms, correlation > 0.99.
Also: the blocked-microphone help names the engine's own steps, without
WebCodecs the page sings in pcm16 and says so, and Firefox after a reload
offers to turn the sound on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from common.constants import OCC_FRAME_SAMPLES, SAMPLE_RATE
from tests.browser_support import (
    Samples,
    best_lag,
    decode_dump,
    gated_tone,
    launch,
    poll,
    tone_envelope,
    write_wav,
)
from tests.engines.firefox import (
    AUTOPLAY_BLOCKED,
    BLOCKED_MIC_PREFS,
    FirefoxAudioDeadlock,
    firefox,
)
from tests.engines.page import DENY_MIC, HIDE_WEBCODECS, EnginePage, gated_mic_script, wait_js
from tests.engines.pulse import pulseaudio
from tests.engines.webkit import webkit, xvfb
from tests.support import Stack, wait_until

pytestmark = pytest.mark.stack(chromium=True)

RATE = SAMPLE_RATE
BLOCK = OCC_FRAME_SAMPLES
LOOP_S = 4.0
# Uneven notes, so that each voice's envelope has one best alignment.
ENGINE_NOTES = [(0.0, 0.3), (0.5, 0.6), (1.0, 1.6), (2.0, 2.2), (2.5, 3.4)]
CHROMIUM_NOTES = [(0.0, 0.7), (1.0, 1.2), (1.6, 2.5), (3.0, 3.3)]
ENGINE_HZ, CHROMIUM_HZ = 440.0, 660.0
WINDOW_S = 2.0  # the stretch compared: half a loop of notes, several note edges in any
HEARD_S = 5.0  # how much of a voice to wait for


@contextmanager
def engine_page(
    engine: str, output_dir: Path, *, blocked_mic: bool = False
) -> Iterator[EnginePage]:
    """A fresh page of ``engine`` with its own PulseAudio (and Xvfb for WebKit)."""
    with pulseaudio(output_dir) as pulse:
        if engine == "firefox":
            with firefox(output_dir, pulse, BLOCKED_MIC_PREFS if blocked_mic else None) as page:
                yield page
        else:
            with xvfb(output_dir) as display, webkit(output_dir, display, pulse) as page:
                if blocked_mic:
                    page.add_init_script(DENY_MIC)
                yield page


# --- measuring ---------------------------------------------------------------------


def band(audio: Samples, freq: float, width: float = 40.0) -> Samples:
    spectrum = np.fft.rfft(audio)
    hz = np.fft.rfftfreq(len(audio), 1 / RATE)
    spectrum[np.abs(hz - freq) > width] = 0
    return np.fft.irfft(spectrum, len(audio)).astype(np.float32)


def _aligned(a: Samples, b: Samples, freq: float) -> tuple[int, float]:
    """(lag in samples, correlation) of ``b`` against ``a`` (same positions, band-passed).
    The envelope finds the lag to a block (unambiguous); the waveform refines it
    within half a period."""
    coarse, _ = best_lag(
        tone_envelope(a, freq, RATE, BLOCK), tone_envelope(b, freq, RATE, BLOCK), 100
    )
    half_period = int(RATE / freq / 2)
    n = a.shape[0]
    best, best_corr = 0, -2.0
    for lag in range(coarse * BLOCK - half_period, coarse * BLOCK + half_period + 1):
        x = a[max(0, -lag) : n - max(0, lag)]
        y = b[max(0, lag) : n + min(0, lag)]
        corr = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
        if corr > best_corr:
            best, best_corr = lag, corr
    return best, best_corr


def alignment(
    sent_dump: dict[str, Any], heard_dump: dict[str, Any], freq: float, window_s: float = WINDOW_S
) -> tuple[float, float, float]:
    """Where ``freq`` in what one page heard sits against what another sang, at the
    same room positions: (lag ms, correlation, seconds compared), in the best
    ``window_s`` stretch of their overlap. A loaded machine makes a page's audio
    stall now and then (its stream jumps and restarts, as it should); a stretch
    without a stall must still match sample for sample."""
    sent_start, sent, _ = decode_dump(sent_dump)
    heard_start, heard, _ = decode_dump(heard_dump)
    lo = max(sent_start, heard_start)
    lo += -lo % BLOCK
    hi = min(sent_start + sent.shape[0], heard_start + heard.shape[0])
    if hi - lo < window_s * RATE:
        return float("nan"), 0.0, (hi - lo) / RATE
    a = band(sent[lo - sent_start : hi - sent_start], freq)
    b = band(heard[lo - heard_start : hi - heard_start], freq)
    size, step = round(window_s * RATE), RATE // 4
    best = (0, -2.0)
    for at in range(0, a.shape[0] - size + 1, step):
        found = _aligned(a[at : at + size], b[at : at + size], freq)
        if found[1] > best[1]:
            best = found
    return best[0] * 1000 / RATE, best[1], (hi - lo) / RATE


def overlap_s(page_sent: dict[str, Any], page_heard: dict[str, Any]) -> float:
    sent, heard = page_sent, page_heard
    if sent["start"] is None or heard["start"] is None:
        return 0.0
    return float((min(sent["end"], heard["end"]) - max(sent["start"], heard["start"])) / RATE)


# --- the choir ----------------------------------------------------------------------


def chromium_join(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    page.fill("#name", "Cid")
    page.fill("#latency-ms", "0")
    page.click("#manual-latency button[type=submit]")
    page.evaluate("bbDebug.record(25)")
    page.click("#join")
    page.wait_for_selector("#stage:not([hidden])", timeout=15_000)
    poll(page, "bbDebug.me !== null", "Cid is in")
    return page


def engine_join(page: EnginePage, url: str) -> None:
    page.goto(url)
    wait_js(page, "document.body.dataset.ready === '1'", "the page is ready")
    page.fill("#name", "Eve")
    page.fill("#latency-ms", "0")
    page.click("#manual-latency button[type=submit]")
    wait_js(page, "bbDebug.latencyMs === 0", "the typed latency is taken")
    page.js("bbDebug.record(25)")
    page.click("#join")
    wait_js(
        page, "!document.querySelector('#stage').hidden && bbDebug.me !== null", "Eve joined", 30
    )


# Firefox's own audio deadlock (FirefoxAudioDeadlock: the page's main thread waits inside
# Firefox, diagnosed from /proc and stacks) gets one more run on a fresh Firefox; a page that
# spins, or any other failure, fails at once.
@pytest.mark.flaky(reruns=1, only_rerun=[FirefoxAudioDeadlock])
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("engine", "webcodecs"),
    [("firefox", True), ("webkit", True), ("firefox", False)],
    ids=["firefox", "webkit", "firefox-without-webcodecs"],
)
def test_engine_leads_is_heard_and_hears_the_room(
    stack: Stack, output_dir: Path, engine: str, webcodecs: bool
) -> None:
    cid_mic = write_wav(
        output_dir / "cid-660.wav", gated_tone(CHROMIUM_HZ, CHROMIUM_NOTES, LOOP_S, RATE), RATE
    )
    url = f"{stack.base}/?room=choir&debug=1"
    with engine_page(engine, output_dir) as eve, sync_playwright() as pw:
        eve.add_init_script(gated_mic_script(ENGINE_HZ, ENGINE_NOTES, LOOP_S))
        if not webcodecs:
            eve.add_init_script(HIDE_WEBCODECS)
        browser = launch(pw, cid_mic)
        try:
            engine_join(eve, url)
            cid = chromium_join(browser, url)
            expected = "opus" if webcodecs else "pcm16"
            assert eve.js("bbDebug.codec") == expected
            assert cid.evaluate("bbDebug.codec") == "opus"

            # Eve leads (the first bucket), Cid is put in a later one; Eve starts.
            eve.click("#lead")
            wait_js(eve, "bbDebug.state.leader === bbDebug.me.singer_id", "Eve leads")
            poll(cid, "bbDebug.me.delay > bbDebug.state.buckets.delays[0]", "Cid behind Eve")
            poll(cid, "!!bbDebug.state.leader", "Cid sees the leader")
            eve.click("#start")
            wait_js(eve, "bbDebug.state.song && bbDebug.state.song.running", "the song runs")

            # Its voice heard: 3 s of Eve's singing in what Cid received.
            wait_until(
                lambda: (
                    overlap_s(
                        eve.js("bbDebug.sent.span()"), cid.evaluate("bbDebug.received.span()")
                    )
                    >= HEARD_S
                ),
                40,
                f"{HEARD_S} s of Eve's singing to reach Cid",
                interval_s=0.3,
            )
            dumps = {
                "eve_sent": eve.js("bbDebug.sent.dump()"),
                "cid_received": cid.evaluate("bbDebug.received.dump()"),
            }
            heard = alignment(dumps["eve_sent"], dumps["cid_received"], ENGINE_HZ)

            # It hears the room: Eve moves behind Cid and hears him where he sang.
            cid_bucket = int(cid.evaluate("bbDebug.me.bucket"))
            target = cid_bucket + 1
            eve.click(f"#buckets li[data-bucket='{target}'] button")
            wait_js(
                eve, f"bbDebug.me.delay === bbDebug.state.buckets.delays[{target}]", "Eve moved"
            )
            eve.js("bbDebug.record(25)")
            wait_until(
                lambda: (
                    overlap_s(
                        cid.evaluate("bbDebug.sent.span()"), eve.js("bbDebug.received.span()")
                    )
                    >= HEARD_S
                ),
                40,
                f"{HEARD_S} s of Cid's singing to reach Eve",
                interval_s=0.3,
            )
            dumps |= {
                "cid_sent": cid.evaluate("bbDebug.sent.dump()"),
                "eve_received": eve.js("bbDebug.received.dump()"),
            }
            hears = alignment(dumps["cid_sent"], dumps["eve_received"], CHROMIUM_HZ)
            eve.js("(document.querySelector('#details').open = true)")
            details = str(
                wait_js(
                    eve,
                    "document.querySelector('#details-list').innerText.includes('Audio codec')"
                    " && document.querySelector('#details-list').innerText",
                    "the Details panel",
                )
            )
            timing = eve.js("bbDebug.timing")
            # It plays position p when the room clock reads p + its delay (within an
            # output buffer; one reading may catch a loaded machine mid-stall).
            with contextlib.suppress(AssertionError):
                wait_js(eve, "Math.abs(bbDebug.playbackOffsetMs) < 100", "playback on time", 10)
            playback_ms = eve.js("bbDebug.playbackOffsetMs")
            totals = eve.js("bbDebug.playback.totals")
            eve.screenshot(output_dir / f"{engine}-eve.png")
            errors = eve.errors()
        finally:
            browser.close()

    result = {
        "engine": engine,
        "codec": expected,
        "voice_heard": {"lag_ms": heard[0], "corr": heard[1], "seconds": heard[2]},
        "hears_room": {"lag_ms": hears[0], "corr": hears[1], "seconds": hears[2]},
        "timing": timing,
        "playback_offset_ms": playback_ms,
        "playback_totals": totals,
    }
    print(json.dumps(result))
    (output_dir / "alignment.json").write_text(json.dumps(result, indent=2))
    (output_dir / "dumps.json").write_text(json.dumps(dumps))
    for what, (lag_ms, corr, seconds) in (("its voice heard", heard), ("it hears the room", hears)):
        assert seconds >= WINDOW_S, f"{engine}, {what}: only {seconds:.2f} s to compare"
        assert corr > 0.99, f"{engine}, {what}: correlation {corr:.4f}"
        assert abs(lag_ms) <= 1, f"{engine}, {what}: {lag_ms:.2f} ms away from where it was sung"
    assert playback_ms is not None and abs(playback_ms) < 100, (
        f"{engine} plays {playback_ms} ms off"
    )
    assert not errors, f"errors in {engine}'s page: {errors}"
    assert "Timing source" in details and ("Opus" if webcodecs else "PCM16") in details, details


@pytest.mark.flaky(reruns=1, only_rerun=[FirefoxAudioDeadlock])
@pytest.mark.timeout(180)
@pytest.mark.parametrize("engine", ["firefox", "webkit"])
def test_a_blocked_microphone_shows_the_engines_own_steps(
    stack: Stack, output_dir: Path, engine: str
) -> None:
    steps = {"firefox": "Firefox", "webkit": "Safari"}[engine]
    with engine_page(engine, output_dir, blocked_mic=True) as page:
        page.goto(f"{stack.base}/?room=choir")
        wait_js(page, "document.body.dataset.ready === '1'", "the page is ready")
        page.fill("#name", "Eve")
        page.fill("#latency-ms", "0")
        page.click("#manual-latency button[type=submit]")
        page.click("#join")
        wait_js(page, "!document.querySelector('#mic-help').hidden", "the microphone help")
        title = page.js("document.querySelector('#mic-help-title').innerText")
        help_text = str(page.js("document.querySelector('#mic-help').innerText"))
        page.screenshot(output_dir / f"{engine}-mic-help.png")
        page.click("#mic-listen")
        wait_js(
            page, "bbDebug.me !== null && bbDebug.me.role === 'spectator'", "joined as a listener"
        )
        errors = page.errors()
    assert title == "Your microphone is blocked"
    assert f"To allow it in {steps}" in help_text, help_text
    assert not errors, errors


@pytest.mark.flaky(reruns=1, only_rerun=[FirefoxAudioDeadlock])
@pytest.mark.timeout(240)
def test_firefox_after_a_reload_offers_to_turn_the_sound_on(stack: Stack, output_dir: Path) -> None:
    """Firefox as installed: sound only after a click. A reload rejoins by itself, with
    no click; the page must offer one ("Turn on sound"), and that click starts the sound."""
    with pulseaudio(output_dir) as pulse, firefox(output_dir, pulse, AUTOPLAY_BLOCKED) as page:
        page.goto(f"{stack.base}/r/choir")
        wait_js(page, "document.body.dataset.ready === '1'", "the page is ready")
        page.fill("#name", "Lis")
        page.click("input[name=role][value=spectator]")
        page.click("#join")
        wait_js(page, "bbDebug.me !== null", "Lis joined")
        page.goto(f"{stack.base}/r/choir")
        wait_js(page, "document.body.dataset.ready === '1'", "the page is ready again")
        wait_js(page, "bbDebug.me !== null && bbDebug.audioState !== null", "Lis rejoined")
        assert page.js("bbDebug.audioState") == "suspended", "Firefox played without a click"
        wait_js(page, "!document.querySelector('#sound-off').hidden", "Turn on sound offered")
        page.screenshot(output_dir / "firefox-sound-off.png")
        page.click("#sound-on")
        wait_js(page, "bbDebug.audioState === 'running'", "the sound runs")
        wait_js(page, "document.querySelector('#sound-off').hidden", "the offer gone")
        errors = page.errors()
    assert not errors, errors
