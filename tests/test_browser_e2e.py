"""End to end in real headless Chromium against the real stack (redis-server,
a mixer and a gateway, started as an operator would): two choir members with
fake microphones. Ann leads with a 440 Hz tone, Ben joins a later bucket and
sings 660 Hz. Ben must hear Ann's tone exactly where she sang it (same room
positions, so D_Ben - D_Ann seconds after she sang it); Ann must not hear Ben.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from common.constants import OCC_FRAME_SAMPLES, SAMPLE_RATE
from tests.browser_support import (
    best_lag,
    console_errors,
    decode_dump,
    gated_tone,
    launch,
    lead,
    move_behind_the_leader,
    poll,
    start_song,
    tone,
    tone_envelope,
    tone_level,
    wait_heard,
    write_wav,
)
from tests.support import Stack, wait_until

pytestmark = pytest.mark.stack(chromium=True)

RATE = SAMPLE_RATE
# Ann's microphone: 440 Hz notes of uneven lengths in a 4 s loop, so that the
# tone's envelope has a single best alignment with what Ben receives.
ANN_NOTES = [(0.0, 0.3), (0.5, 0.6), (1.0, 1.6), (2.0, 2.2), (2.5, 3.4)]
LOOP_S = 4.0
BLOCK = OCC_FRAME_SAMPLES  # envelope resolution: 128 samples (2.7 ms)


def join(page: Any, base: str, name: str, query: str, screenshot: Path | None = None) -> None:
    """What a singer with a known latency does: open the page, fill the form, join."""
    page.goto(f"{base}/?room=choir{query}")
    page.wait_for_selector("body[data-ready]")
    page.fill("#name", name)
    page.fill("#latency-ms", "0")
    page.click("#manual-latency button[type=submit]")
    page.evaluate("bbDebug.record(40)")
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.click("#join")
    page.wait_for_selector("#stage:not([hidden])", timeout=15_000)


@pytest.mark.parametrize("codec", ["opus", "pcm16"])
def test_leader_is_heard_by_a_later_bucket_and_not_the_reverse(
    stack: Stack, output_dir: Path, codec: str
) -> None:
    ann_mic = write_wav(output_dir / "ann-440.wav", gated_tone(440, ANN_NOTES, LOOP_S, RATE), RATE)
    ben_mic = write_wav(output_dir / "ben-660.wav", tone(660, LOOP_S, RATE), RATE)
    with sync_playwright() as pw:
        browser_a = launch(pw, ann_mic)
        browser_b = launch(pw, ben_mic)
        try:
            ann = browser_a.new_page(viewport={"width": 1180, "height": 860})
            ben = browser_b.new_page(viewport={"width": 1180, "height": 860})
            errors = console_errors(ann, ben)
            # The Opus run uses WebCodecs; the other forces the pcm16 fallback.
            query = "" if codec == "opus" else "&codec=pcm16"
            join(ann, stack.base, "Ann", f"{query}&debug=1", output_dir / "ann-setup.png")
            join(ben, stack.base, "Ben", query)
            assert ann.evaluate("bbDebug.codec") == codec == ben.evaluate("bbDebug.codec")

            # Both pages list both singers.
            for page in (ann, ben):
                poll(
                    page,
                    "document.querySelectorAll('#people li').length === 2",
                    "two singers listed",
                )
                names = page.inner_text("#people")
                assert "Ann" in names and "Ben" in names

            # Ann leads (first bucket); Ben then moves to a later bucket by hand
            # (the third, or the fourth if leading already put him in the third).
            lead(ann)
            target = move_behind_the_leader(ben)
            state = ben.evaluate("bbDebug.state")
            d_ann = ann.evaluate("bbDebug.me.delay")
            d_ben = ben.evaluate("bbDebug.me.delay")
            assert d_ann == state["buckets"]["delays"][0]
            assert d_ben - d_ann == target * state["buckets"]["spacing"]

            start_song(ann)
            # Wait for 3 s of Ann's singing to reach Ben (it needs D_Ben - D_Ann - lead).
            wait_heard(ann, ben, 3, 30)
            poll(
                ann,
                f"(bbDebug.levels[{ben.evaluate('bbDebug.me.singer_id')!r}] ?? -200) > -40",
                "the mixer reports Ben's level (his 660 Hz reached it)",
            )

            ben.fill("#chat-text", "ready when you are")
            ben.press("#chat-text", "Enter")
            poll(
                ann,
                "document.querySelector('#chat-log').innerText.includes('ready when you are')",
                "Ann sees Ben's chat line",
            )
            poll(
                ann,
                "document.querySelector('#occupancy-info').innerText.includes('hold audio')",
                "the occupancy chart is drawn",
            )

            sent_start, sent, _ = decode_dump(ann.evaluate("bbDebug.sent.dump()"))
            recv_start, recv, covered = decode_dump(ben.evaluate("bbDebug.received.dump()"))
            _, a_recv, a_covered = decode_dump(ann.evaluate("bbDebug.received.dump()"))
            playback = [page.evaluate("bbDebug.playback") for page in (ann, ben)]
            ann_playback = ann.evaluate("bbDebug.playbackOffsetMs")
            ben_playback = ben.evaluate("bbDebug.playbackOffsetMs")
            assert not errors, f"errors in the pages: {errors}"
            ann.screenshot(path=str(output_dir / "ann.png"), full_page=True)
            ben.screenshot(path=str(output_dir / "ben.png"), full_page=True)
        finally:
            browser_a.close()
            browser_b.close()

    # Ben's received audio holds Ann's 440 Hz at the positions where she sang it.
    lo = max(sent_start, recv_start)
    lo += -lo % BLOCK
    hi = min(sent_start + sent.shape[0], recv_start + recv.shape[0])
    assert hi - lo >= 2 * RATE, (
        f"only {(hi - lo) / RATE:.2f} s of overlap between sent and received"
    )
    sent_part = sent[lo - sent_start : hi - sent_start]
    recv_part = recv[lo - recv_start : hi - recv_start]
    assert tone_level(recv_part, 440, RATE) > 0.05
    env_sent = tone_envelope(sent_part, 440, RATE, BLOCK)
    env_recv = tone_envelope(recv_part, 440, RATE, BLOCK)
    lag, corr = best_lag(env_sent, env_recv, max_lag=round(0.5 * RATE / BLOCK))
    lag_ms = lag * BLOCK * 1000 / RATE
    print(
        f"{codec}: 440 Hz alignment: lag {lag_ms:.1f} ms, correlation {corr:.3f}; "
        f"playback offsets Ann {ann_playback:.1f} ms, Ben {ben_playback:.1f} ms; "
        f"playback totals Ann {playback[0]['totals']}, Ben {playback[1]['totals']}"
    )
    assert corr > 0.8
    assert abs(lag_ms) <= 6, f"Ben hears Ann {lag_ms:.1f} ms away from where she sang"
    # ... and plays position p when the room clock reads p + D_Ben, so he hears
    # her D_Ben - D_Ann after she sang (playback within one output buffer).
    assert abs(ben_playback) < 100 and abs(ann_playback) < 100

    # The health meter's source: hardly any quantum played without its audio.
    for stats in playback:
        assert not stats["starved"]
        played = stats["totals"]["underflowQuanta"]
        assert played < 20, f"{played} render quanta ran dry: {stats}"

    # Ann (first bucket) received her tap and it holds no 660 Hz from Ben.
    assert a_covered >= 2 * RATE
    assert tone_level(a_recv, 660, RATE) < 0.005
    assert covered >= 3 * RATE
    for shot in ("ann-setup.png", "ann.png", "ben.png"):
        assert (output_dir / shot).stat().st_size > 0


def test_a_listen_link_joins_at_once_and_hears_the_room(stack: Stack, output_dir: Path) -> None:
    """``/r/<room>?listen=1``: no form, no microphone, no calibration; the page is a
    listener (no member of the room) and hears the leader's tone on its own tap."""
    ann_mic = write_wav(output_dir / "ann-440.wav", gated_tone(440, ANN_NOTES, LOOP_S, RATE), RATE)
    with sync_playwright() as pw:
        browser_a = launch(pw, ann_mic)
        browser_f = launch(pw, ann_mic)
        try:
            ann = browser_a.new_page()
            errors: list[str] = []
            join(ann, stack.base, "Ann", "&debug=1")
            ann.click("#lead")
            poll(ann, "bbDebug.state && bbDebug.state.leader === bbDebug.me.singer_id", "Ann leads")
            ann.click("#start")
            poll(ann, "bbDebug.state.song && bbDebug.state.song.running", "the song runs")
            fan = browser_f.new_page()
            fan.on("pageerror", lambda exc: errors.append(str(exc)))
            fan.goto(f"{stack.base}/r/choir?listen=1&name=Fan")
            fan.wait_for_selector("#stage:not([hidden])", timeout=15_000)
            fan.evaluate("bbDebug.record(40)")
            assert fan.inner_text("#mic-title") == "Listening"
            assert fan.evaluate("bbDebug.me.role") == "listener"
            # Ann's room lists Ann alone: a listener is no member.
            assert ann.evaluate("bbDebug.state.members.length") == 1
            wait_until(
                lambda: (
                    (fan.evaluate("bbDebug.received.span()")["end"] or 0)
                    - (fan.evaluate("bbDebug.received.span()")["start"] or 0)
                    >= 3 * RATE
                ),
                40,
                "3 s of the room at the listener",
                interval_s=0.2,
            )
            _, heard, covered = decode_dump(fan.evaluate("bbDebug.received.dump()"))
            assert not errors, errors
        finally:
            browser_a.close()
            browser_f.close()
    assert covered >= 3 * RATE
    assert tone_level(heard, 440, RATE) > 0.05, "the listener does not hear Ann"
