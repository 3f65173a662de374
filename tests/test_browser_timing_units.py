"""The page's timing check (timing.js) and browser help (browser.js), pure
modules run in real Chromium on synthetic clock readings: which clock the page
trusts when one misbehaves (WebKitGTK's output timestamp at twice real time),
and what it tells a person on each browser."""

from __future__ import annotations

from typing import Any

# Readings every 250 ms, as audio.js takes them, of a context whose clocks
# behave as asked: `outRate` is how fast the output timestamp's performanceTime
# runs, `currentRate` the main thread's currentTime, `audioRate` the rendered
# frames; `stallMs` holds the audio (frames and currentTime) still at first;
# `noOutput` is a browser without getOutputTimestamp; `outAheadMs` shifts it.
# The module's ``page`` (tests/conftest.py) runs it.
PAGE_SCRIPT = """
  window.simulate = async (opts) => {
    const { TimingCheck } = await import('/static/timing.js');
    const o = { seconds: 8, outRate: 1, currentRate: 1, audioRate: 1, stallMs: 0, noOutput: false,
                outAheadMs: 0, latencyS: 0.04, ...opts };
    const check = new TimingCheck({ sampleRate: 48000 });
    const verdicts = [];
    for (let at = 1000; at <= 1000 + o.seconds * 1000; at += 250) {
      const running = Math.max(0, at - 1000 - o.stallMs) / 1000;
      const currentTime = running * o.currentRate;
      const frameTime = running * o.audioRate;
      const heardAt = 1000 + o.stallMs + (at - 1000 - o.stallMs) * o.outRate + o.outAheadMs;
      const output = o.noOutput ? null
        : { contextTime: Math.max(0, currentTime - o.latencyS), performanceTime: heardAt };
      check.add({ atMs: at, currentTime, latencyS: o.latencyS, output,
                  frame: { frame: Math.round(frameTime * 48000), atMs: at - 3 } });
      verdicts.push({ at, ...check.verdict, line: check.describe() });
    }
    return verdicts;
  };
"""


def simulate(page: Any, **opts: Any) -> list[dict[str, Any]]:
    return list(page.evaluate("(opts) => simulate(opts)", opts))


def test_clocks_that_agree_use_the_output_timestamp_once_proven(page: Any) -> None:
    verdicts = simulate(page)
    assert verdicts[0]["source"] == "currentTime"  # not proven yet
    assert verdicts[-1]["source"] == "outputTimestamp"
    assert all(not v["problems"] for v in verdicts)
    assert verdicts[-1]["line"] == "output timestamp"


def test_an_output_timestamp_at_twice_real_time_is_dropped(page: Any) -> None:
    """WebKitGTK 2.50: getOutputTimestamp().performanceTime runs at 2x."""
    verdicts = simulate(page, outRate=2.0)
    assert {v["source"] for v in verdicts} == {"currentTime"}
    last = verdicts[-1]
    assert set(last["problems"]) == {"outputTimestamp"}
    assert "2.00\u00d7 real time" in last["problems"]["outputTimestamp"]
    assert last["line"].startswith("audio clock (currentTime) (not the output timestamp")


def test_an_output_timestamp_far_from_now_is_dropped(page: Any) -> None:
    last = simulate(page, outAheadMs=5000)[-1]
    assert last["source"] == "currentTime"
    assert "5.04 s from now" in last["problems"]["outputTimestamp"]


def test_without_an_output_timestamp_the_audio_clock_is_used(page: Any) -> None:
    verdicts = simulate(page, noOutput=True)
    assert {v["source"] for v in verdicts} == {"currentTime"}
    assert not verdicts[-1]["problems"]


def test_a_frozen_current_time_falls_back_to_the_worklet_frames(page: Any) -> None:
    last = simulate(page, currentRate=0.0, noOutput=True)[-1]
    assert last["source"] == "frames"
    assert "currentTime" in last["problems"]


def test_a_slow_start_is_not_held_against_any_clock(page: Any) -> None:
    """The audio stands still for 1.5 s after the context says it runs, then keeps time."""
    verdicts = simulate(page, stallMs=1500, seconds=10)
    assert all(not v["problems"] for v in verdicts)
    assert verdicts[-1]["source"] == "outputTimestamp"


def test_slow_audio_is_reported_not_blamed_on_a_clock(page: Any) -> None:
    """A loaded computer renders 10 % slow: every clock agrees, the page says so."""
    last = simulate(page, currentRate=0.9, audioRate=0.9, outRate=1.0)[-1]
    assert last["source"] == "outputTimestamp" and not last["problems"]
    assert "the audio runs at 0.90\u00d7 real time" in last["line"]


UAS = {
    "chrome": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36",
    "edge": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/150.0.0.0 Safari/537.36 Edg/150.0.0.0",
    "firefox": "Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0",
    "webkitgtk": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/60.5 Safari/605.1.15",
    "safari": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/26.0 Safari/605.1.15",
    "iphone-chrome": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/150.0 Mobile/15E148 Safari/604.1",
}


def test_each_browser_gets_its_own_microphone_steps(page: Any) -> None:
    got = page.evaluate(
        """async ([uas]) => {
          const { browserFamily, MIC_STEPS } = await import('/static/browser.js');
          const out = {};
          for (const [name, ua] of Object.entries(uas)) out[name] = browserFamily(ua);
          out.ipad = browserFamily(uas.safari, 5);
          out.intro = Object.fromEntries(Object.entries(MIC_STEPS).map(([k, v]) => [k, v.intro]));
          return out;
        }""",
        [UAS],
    )
    assert got["chrome"] == got["edge"] == "chrome"
    assert got["firefox"] == "firefox"
    assert got["webkitgtk"] == got["safari"] == "safari"
    assert got["iphone-chrome"] == got["ipad"] == "ios"
    assert "Firefox" in got["intro"]["firefox"] and "Safari" in got["intro"]["safari"]


def test_a_browser_that_cannot_take_part_is_told_so(page: Any) -> None:
    got = page.evaluate(
        """async () => {
          const { missingFeatures, unsupportedText } = await import('/static/browser.js');
          const full = { WebSocket: 1, AudioContext: 1, AudioWorkletNode: 1, isSecureContext: true,
                         navigator: { mediaDevices: { getUserMedia() {} } } };
          const say = (g) => unsupportedText(missingFeatures(g));
          return { full: say(full), here: say(window),
                   noWorklet: say({ ...full, AudioWorkletNode: undefined }),
                   insecure: say({ ...full, isSecureContext: false, navigator: {} }) };
        }"""
    )
    assert got["full"] is None and got["here"] is None
    assert got["noWorklet"].startswith("This browser cannot take part: it lacks audio worklets.")
    assert got["insecure"].startswith("You can listen, but not sing here")
