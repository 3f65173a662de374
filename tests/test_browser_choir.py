"""The page as a choir uses it, in real headless Chromium against the real
stack (redis-server, a mixer, a gateway): who may stop a song and what
everyone is told, room links and reloads, a blocked microphone, room names,
states that stay true, the Details panel, the phone layout and accessibility.

Every test saves screenshots under test-output/<test>/ (1280x800 and 390x844)
and fails on any console error in any page.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from common.constants import SAMPLE_RATE
from tests.browser_support import (
    fill_join,
    launch,
    poll,
    require_axe,
    tone,
    write_wav,
)
from tests.support import Stack, wait_until
from tests.uploadfiles import encode, tone_notes

pytestmark = pytest.mark.stack(chromium=True)

SIZES = ((1280, 800), (390, 844))

# Keeps the page's WebSockets reachable, so that a test can drop the connection.
TRACK_SOCKETS = """
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__sockets.push(this); }
  };
"""

# getUserMedia refused the way Chromium refuses it when the person clicks "Block".
DENY_MIC = """
  navigator.mediaDevices.getUserMedia = () =>
    Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


@pytest.fixture
def mic(output_dir: Path) -> Path:
    """A fake microphone: a 440 Hz tone."""
    return write_wav(output_dir / "mic-440.wav", tone(440, 2.0, SAMPLE_RATE), SAMPLE_RATE)


class Pages:
    """Pages opened by a test, with their console errors collected."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.errors: list[str] = []

    def open(self, browser: Any, url: str, init_script: str | None = None, **context: Any) -> Any:
        ctx = browser.new_context(viewport={"width": 1280, "height": 800}, **context)
        if init_script:
            ctx.add_init_script(init_script)
        page = ctx.new_page()
        page.on(
            "console",
            lambda msg: self.errors.append(f"{url}: {msg.text}") if msg.type == "error" else None,
        )
        page.on("pageerror", lambda exc: self.errors.append(f"{url}: {exc}"))
        page.goto(url)
        page.wait_for_selector("body[data-ready]")
        return page

    def shots(self, page: Any, name: str) -> None:
        """Full-page screenshots at the desktop and the phone size."""
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.screenshot(
                path=str(self.output_dir / f"{name}-{width}x{height}.png"), full_page=True
            )
        page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})

    def assert_clean(self) -> None:
        assert not self.errors, f"console errors: {self.errors}"


def joined(page: Any) -> None:
    page.wait_for_selector("#stage:not([hidden])", timeout=15_000)
    poll(page, "bbDebug.me !== null", "the page knows its member")


def text(page: Any, selector: str) -> str:
    return str(page.inner_text(selector))


def status_bucket(page: Any) -> dict[str, Any]:
    """The status line's bucket part: its text, whether it shows whole, its right edge.
    Measured in one go: the status line is redrawn twice a second."""
    return dict(
        page.evaluate(
            """() => {
              const el = [...document.querySelectorAll('#status .part:not(.shrink)')].at(-1);
              return {text: el.innerText, whole: el.scrollWidth <= el.clientWidth,
                      right: el.getBoundingClientRect().right};
            }"""
        )
    )


def active_id(page: Any) -> str:
    return str(page.evaluate("document.activeElement ? document.activeElement.id : ''"))


# --- 1. stopping a song ----------------------------------------------------------------


def test_only_the_leader_stops_and_everyone_sees_who_stopped(
    stack: Stack, output_dir: Path, mic: Path
) -> None:
    pages = Pages(output_dir)
    with sync_playwright() as pw:
        singer_browser = launch(pw, mic)
        listener_browser = launch(pw)
        try:
            ann = pages.open(singer_browser, f"{stack.base}/r/choir")
            lis = pages.open(listener_browser, f"{stack.base}/r/choir")
            fill_join(ann, "Ann")
            joined(ann)
            fill_join(lis, "Lis", role="spectator")
            joined(lis)
            for page in (ann, lis):
                poll(page, "bbDebug.state.members.length === 2", "both are listed")
            # A listener is not told to press a Lead button it does not have.
            assert lis.is_hidden("#lead")
            assert "Press Lead" not in text(lis, "#song-status")
            assert "a singer can choose to lead" in text(lis, "#song-status")
            assert "1 singer, 1 listener" in text(ann, "#people-count")

            ann.click("#lead")
            poll(ann, "!document.querySelector('#start').hidden", "Ann may start")
            assert active_id(ann) == "start"  # focus moved to the next step, not the body
            ann.click("#start")
            for page in (ann, lis):
                poll(page, "bbDebug.state.song.running", "the song runs")
            poll(ann, "document.activeElement.id === 'stop'", "focus on Stop once running")

            # The listener has no control that ends the song for everyone ...
            for control in ("#start", "#stop", "#lead"):
                assert lis.is_hidden(control)
            assert lis.locator("#halt").count() == 0
            # ... and the server refuses it too (a raw halt from another listener).
            refused = lis.evaluate(
                """() => new Promise((resolve) => {
                  const ws = new WebSocket(`ws://${location.host}/ws`);
                  ws.onopen = () => ws.send(JSON.stringify({type: 'hello', version: 1,
                    room: 'choir', name: 'Eve', role: 'spectator', codec: 'pcm16'}));
                  ws.onmessage = (e) => {
                    if (typeof e.data !== 'string') return;  // tap audio
                    const m = JSON.parse(e.data);
                    if (m.type === 'welcome') ws.send(JSON.stringify({type: 'halt', req: 7}));
                    if (m.type === 'error' && m.req === 7) {
                      ws.send(JSON.stringify({type: 'leave'}));
                      resolve(m.code);
                    }
                  };
                })"""
            )
            assert refused == "not_leader"
            assert ann.evaluate("bbDebug.state.song.running")

            # The listener can ask; the leader is told who asks.
            lis.click("#ask-stop")
            poll(
                ann,
                "document.querySelector('#song-status').innerText.includes("
                "'Lis asks you to stop the song')",
                "Ann sees who asks her to stop",
            )
            assert "You asked Ann to stop" in text(lis, "#song-status")
            assert lis.is_disabled("#ask-stop")
            pages.shots(ann, "leader-during-song")
            pages.shots(lis, "listener-during-song")

            ann.click("#stop")
            poll(lis, "!bbDebug.state.song.running", "the song stopped")
            poll(
                lis,
                "document.querySelector('#song-status').innerText.includes('Ann stopped song 1')",
                "the listener is told who stopped",
            )
            poll(
                ann,
                "document.querySelector('#song-status').innerText.includes('You stopped song 1')",
                "the leader is told too",
            )
            assert lis.evaluate("bbDebug.state.song.stopped_by") == ann.evaluate(
                "bbDebug.me.singer_id"
            )
            poll(ann, "document.activeElement.id === 'start'", "focus back on Start")
            assert lis.is_hidden("#ask-stop")
            pages.shots(lis, "listener-after-stop")
            pages.assert_clean()
        finally:
            singer_browser.close()
            listener_browser.close()


# --- 2. room links and reloads ---------------------------------------------------------------


def test_room_link_joins_and_a_reload_keeps_the_seat(
    stack: Stack, output_dir: Path, mic: Path
) -> None:
    pages = Pages(output_dir)
    with sync_playwright() as pw:
        browser = launch(pw, mic)
        try:
            page = pages.open(
                browser,
                f"{stack.base}/r/choir",
                init_script=TRACK_SOCKETS,
                permissions=["clipboard-read", "clipboard-write"],
            )
            # The link fills the room; the cursor waits in the name field.
            assert page.input_value("#room") == "choir"
            assert active_id(page) == "name"
            assert page.is_hidden("#intro")  # a link goes straight to the form
            pages.shots(page, "landing-from-link")
            fill_join(page, "Ann")
            joined(page)
            assert page.evaluate("location.pathname") == "/r/choir"
            assert page.input_value("#invite-link") == f"{stack.base}/r/choir"
            page.click("#copy-invite")
            poll(page, "document.querySelector('#copy-invite').innerText === 'Copied'", "copied")
            assert page.evaluate("navigator.clipboard.readText()") == f"{stack.base}/r/choir"

            # Take bucket 4; focus follows to the new place.
            page.get_by_role("button", name="Join bucket 4", exact=True).click()
            poll(page, "bbDebug.me.bucket === 3", "in bucket 4")
            poll(page, "document.activeElement.dataset.bucket === '3'", "focus on the new bucket")
            seat = page.evaluate("bbDebug.me")

            page.reload()
            page.wait_for_selector("body[data-ready]")
            joined(page)  # no typing at all
            poll(page, "bbDebug.state.members.length === 1", "one member, not two")
            again = page.evaluate("bbDebug.me")
            assert again["singer_id"] == seat["singer_id"]
            assert again["bucket"] == 3 and again["name"] == "Ann"
            assert "back in your place" in text(page, "#notice")
            pages.shots(page, "after-reload")

            # A dropped connection comes back to the same seat by itself, too.
            page.evaluate(
                """() => {
                  window.__said = [];
                  const record = (id) => new MutationObserver(() =>
                    window.__said.push(document.getElementById(id).textContent)
                  ).observe(document.getElementById(id), {childList: true, subtree: true});
                  record('status');
                  record('announcer');
                  window.__sockets.at(-1).close();
                }"""
            )
            poll(page, "window.__sockets.at(-1).readyState === WebSocket.OPEN", "reconnected")
            poll(page, "document.querySelector('#status').innerText.includes('bucket 4')", "back")
            poll(page, "window.__said.some((t) => t.startsWith('Back in room'))", "announced")
            said = " | ".join(page.evaluate("window.__said"))
            assert "reconnecting" in said and "Back in room choir, bucket 4" in said, said
            assert page.evaluate("bbDebug.me.singer_id") == seat["singer_id"]
            assert page.evaluate("bbDebug.state.members.length") == 1

            # Leaving frees the seat: the next load of the link shows the form again.
            page.click("#leave")
            page.wait_for_selector("#setup:not([hidden])")
            page.reload()
            page.wait_for_selector("body[data-ready]")
            assert page.is_hidden("#stage")
            assert page.input_value("#name") == "Ann"  # remembered for the next visit
            pages.assert_clean()
        finally:
            browser.close()


def test_a_reload_without_a_click_offers_to_turn_the_sound_on(
    stack: Stack, output_dir: Path
) -> None:
    """Browsers start sound only after a click; a reload that rejoins by itself has had
    none. The page must still rejoin, and offer the click."""
    pages = Pages(output_dir)
    with sync_playwright() as pw:
        browser = launch(pw, autoplay=False)
        try:
            page = pages.open(browser, f"{stack.base}/r/choir")
            fill_join(page, "Lis", role="spectator")
            joined(page)
            assert page.is_hidden("#sound-off")
            page.reload()
            page.wait_for_selector("body[data-ready]")
            joined(page)
            # Chromium may count the click before the reload as the origin's user
            # interaction and let sound start anyway; then nothing needs offering.
            poll(page, "['running', 'suspended'].includes(bbDebug.audioState)", "audio state")
            if page.evaluate("bbDebug.audioState") == "suspended":
                page.wait_for_selector("#sound-off:not([hidden])")
                pages.shots(page, "sound-paused")
                page.click("#sound-on")
            page.wait_for_selector("#sound-off", state="hidden")
            assert page.evaluate("bbDebug.audioState") == "running"
            pages.assert_clean()
        finally:
            browser.close()


# --- 3. a blocked microphone ------------------------------------------------------------------


def test_a_blocked_microphone_explains_and_lets_you_listen(stack: Stack, output_dir: Path) -> None:
    axe = require_axe()
    pages = Pages(output_dir)
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = pages.open(browser, f"{stack.base}/r/choir", init_script=DENY_MIC)
            page.fill("#name", "Ann")
            page.click("#cal-latency")
            page.wait_for_selector("#mic-help:not([hidden])")
            help_text = text(page, "#mic-help")
            assert "Microphone" in help_text and "Allow" in help_text
            # The calibration line says what happened instead of listening forever.
            result = text(page, "#cal-latency-result")
            assert "blocked" in result and "Listening" not in result
            assert active_id(page) == "mic-listen"
            pages.shots(page, "microphone-blocked")
            audit(page, axe, output_dir / "axe-microphone-blocked.json")

            # Joining to sing meets the same help, which stays until acted on ...
            page.fill("#latency-ms", "0")
            page.click("#manual-latency button[type=submit]")
            page.click("#mic-retry")
            page.wait_for_selector("#mic-help:not([hidden])")
            page.click("#join")
            page.wait_for_selector("#mic-help:not([hidden])")
            assert page.is_hidden("#stage")
            # ... and "Only listen instead" joins as a listener straight away.
            page.click("#mic-listen")
            joined(page)
            assert page.evaluate("bbDebug.me.role") == "spectator"
            assert page.is_hidden("#mic-help")
            assert text(page, "#mic-title") == "Listening"
            pages.shots(page, "joined-as-listener")
            pages.assert_clean()
        finally:
            browser.close()


# --- 4. room names -----------------------------------------------------------------------------


def test_room_names_ignore_case_and_a_new_room_says_so(stack: Stack, output_dir: Path) -> None:
    pages = Pages(output_dir)
    request = urllib.request.Request(
        f"{stack.base}/api/rooms",
        data=json.dumps({"room": "locked", "password": "pw"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            ann = pages.open(browser, f"{stack.base}/")
            # An invalid name says what is allowed, next to the field.
            fill_join(ann, "Ann", room="my choir", role="spectator")
            error = text(ann, "#join-error")
            assert "letters, digits, - and _" in error and "no spaces" in error
            assert ann.get_attribute("#room", "aria-invalid") == "true"
            pages.shots(ann, "invalid-room-name")

            # A new room says it is empty.
            fill_join(ann, "Ann", room="choir", role="spectator")
            joined(ann)
            assert "Nobody else is in room" in text(ann, "#alone")

            # "Choir" is the same room.
            ben = pages.open(browser, f"{stack.base}/")
            fill_join(ben, "Ben", room="Choir", role="spectator")
            joined(ben)
            assert ben.evaluate("bbDebug.state.room") == "choir"
            assert text(ben, "#room-name") == "choir"
            for page in (ann, ben):
                poll(page, "bbDebug.state.members.length === 2", "one room for both")
                poll(page, "document.querySelector('#alone').hidden", "no longer alone")

            # A wrong password is said once, and gone after the right one.
            cy = pages.open(browser, f"{stack.base}/r/locked")
            fill_join(cy, "Cy", role="spectator", password="nope")
            poll(cy, "document.querySelector('#join-error').innerText !== ''", "refused")
            assert "password" in text(cy, "#join-error")
            pages.shots(cy, "wrong-password")
            cy.fill("#password", "pw")
            cy.click("#join")
            joined(cy)
            assert text(cy, "#join-error") == ""
            assert cy.is_hidden("#notice")
            pages.assert_clean()
        finally:
            browser.close()


# --- 5, 6. true states and the Details panel --------------------------------------------


def test_states_stay_true_and_figures_live_in_details(
    stack: Stack, output_dir: Path, mic: Path
) -> None:
    pages = Pages(output_dir)
    with sync_playwright() as pw:
        browser = launch(pw, mic)
        try:
            page = pages.open(browser, f"{stack.base}/")
            # The landing page does not claim a failure: nothing was tried yet.
            assert "Not connected" not in text(page, "header")
            assert page.is_hidden("#notice")
            assert page.is_hidden("#cal-giveup")
            # The root page says what this is and where a room link comes from.
            intro = text(page, "#intro")
            assert "choir" in intro and "room link" in intro and "Copy invite link" in intro
            pages.shots(page, "landing")
            fill_join(page, "Ann", room="choir")
            joined(page)
            # "Give up" is never offered once a latency is set.
            assert page.is_hidden("#cal-giveup")

            # Between songs nothing is heard, and the playback meter does not say otherwise.
            poll(page, "document.querySelector('#health-text').innerText !== ''", "health")
            meter = page.locator("#health-meter")
            assert meter.get_attribute("aria-valuenow") == "0"
            assert "good" not in (meter.get_attribute("class") or "")
            assert "clearly" not in text(page, "#health-text")

            # No figures or codes in the main view; they are in Details.
            main = page.evaluate(
                """() => [...document.querySelectorAll('#stage > *, #stage .column > *')]
                  .filter((el) => el.id !== 'details' && !el.classList.contains('column'))
                  .map((el) => el.innerText).join('\\n')
                  + document.querySelector('header').innerText"""
            )
            for jargon in ("dBFS", "round trip", "Round trip", "Opus", "ms (", "ppm", "(bad_"):
                assert jargon not in main, jargon
            assert not page.evaluate("document.querySelector('#details').open")
            # The occupancy chart in Details answers 404 until the room's mixer has
            # published (the browser would log that as a console error): wait for it.
            wait_until(
                lambda: (
                    urllib.request.urlopen(f"{stack.base}/api/rooms/choir/occupancy").status == 200
                ),
                20,
                "the room's first occupancy snapshot",
            )
            page.click("#details summary")
            poll(
                page,
                "document.querySelector('#details-list').innerText.includes('Round trip')",
                "the clock figures are in Details",
            )
            assert "Opus" in text(page, "#details-list") or "PCM16" in text(page, "#details-list")
            pages.shots(page, "details-open")
            pages.assert_clean()
        finally:
            browser.close()


# --- 7. phones ------------------------------------------------------------------------------------


def test_phone_layout_puts_song_microphone_and_buckets_first(
    stack: Stack, output_dir: Path, mic: Path
) -> None:
    pages = Pages(output_dir)
    with sync_playwright() as pw:
        browser = launch(pw, mic)
        try:
            # A long room name: the status line cuts the name, never the bucket.
            page = pages.open(browser, f"{stack.base}/r/tuesday_evening_rehearsal_room")
            page.set_viewport_size({"width": 390, "height": 844})
            fill_join(page, "Ann")
            joined(page)
            page.click("#lead")
            poll(page, "!document.querySelector('#start').hidden", "Ann leads")

            def top(selector: str) -> float:
                box = page.locator(selector).bounding_box()
                assert box is not None, selector
                return float(box["y"])

            order = ["#song-card", "#mic-card", "#buckets-card", "#people-card", "#details"]
            tops = [top(s) for s in order]
            assert tops == sorted(tops), dict(zip(order, tops, strict=True))
            assert top("#mic-card") < 844 - 100, "the microphone card is on the first screen"
            # The status line is one line on a phone.
            status = page.locator("#status").bounding_box()
            assert status is not None and status["height"] < 30
            header = page.locator("header").bounding_box()
            assert header is not None and header["height"] < 60
            poll(page, "document.querySelector('#status').innerText.includes('bucket 1')", "status")
            part = status_bucket(page)
            assert part["text"] == "bucket 1 of 6" and part["whole"] and part["right"] <= 390, part
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            pages.shots(page, "phone-joined")
            pages.assert_clean()
        finally:
            browser.close()


# --- 8. accessibility ----------------------------------------------------------------------------


def audit(page: Any, axe: Path, report: Path) -> None:
    """Run axe-core on ``page``; save every violation; fail on serious or critical ones."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=str(axe))
    result = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']})"
        ".then((r) => r.violations.map((v) => ({id: v.id, impact: v.impact,"
        " help: v.help, nodes: v.nodes.map((n) => n.target.join(' '))})))"
    )
    report.write_text(json.dumps(result, indent=2))
    serious = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not serious, json.dumps(serious, indent=2)


def test_accessibility_names_roles_live_region_and_axe(
    stack: Stack, output_dir: Path, mic: Path
) -> None:
    axe = require_axe()
    pages = Pages(output_dir)
    with sync_playwright() as pw:
        browser = launch(pw, mic)
        try:
            ann = pages.open(browser, f"{stack.base}/r/choir")
            ben = pages.open(browser, f"{stack.base}/r/choir")
            audit(ann, axe, output_dir / "axe-landing.json")
            fill_join(ann, "Ann")
            joined(ann)
            fill_join(ben, "Ben")
            joined(ben)
            poll(ann, "bbDebug.state.members.length === 2", "two members")
            ann.click("#lead")
            poll(ann, "!document.querySelector('#start').hidden", "Ann leads")
            ann.click("#start")
            poll(ann, "bbDebug.state.song.running", "the song runs")
            poll(
                ann,
                "document.querySelector('#announcer').innerText.includes('Song 1 started')",
                "the start is announced once, politely",
            )

            # Every bucket button has its own name.
            names = (
                ann.locator("#buckets")
                .get_by_role("button")
                .evaluate_all(
                    "(els) => els.map((el) => el.getAttribute('aria-label') || el.innerText)"
                )
            )
            assert len(names) == 5 and len(set(names)) == 5, names
            for i in range(2, 7):
                assert ann.get_by_role("button", name=f"Join bucket {i}", exact=True).count() == 1
            snapshot = ann.locator("#buckets").aria_snapshot()
            assert 'button "Join bucket 2"' in snapshot

            # Meters have a role, a name and a value.
            meters = ann.get_by_role("meter")
            assert meters.count() >= 4  # yours, playback, Ann's and Ben's levels
            for i in range(meters.count()):
                m = meters.nth(i)
                label = m.get_attribute("aria-label") or m.get_attribute("aria-labelledby")
                assert label, m.evaluate("(el) => el.outerHTML")
                assert (m.get_attribute("aria-valuenow") or "").isdigit()
            assert ann.get_by_role("meter", name="Ben's level").count() == 1

            # The status line is not a live region; the announcer is polite.
            status = ann.locator("#status")
            assert status.get_attribute("aria-live") is None
            assert status.get_attribute("role") is None
            assert ann.get_attribute("#announcer", "aria-live") == "polite"
            assert ann.locator("[aria-live=assertive]").count() == 0

            # axe-core finds nothing serious on the joined page, for either member.
            for who, page in (("leader", ann), ("singer", ben)):
                audit(page, axe, output_dir / f"axe-{who}.json")
            pages.shots(ann, "a11y-leader")
            pages.assert_clean()
        finally:
            browser.close()


# --- the mixing console ------------------------------------------------------------------------


def test_the_console_faders_solo_and_mix_choice(stack: Stack, output_dir: Path, mic: Path) -> None:
    pages = Pages(output_dir)
    with sync_playwright() as pw:
        browser = launch(pw, mic)
        try:
            ann = pages.open(browser, f"{stack.base}/r/console")
            bob = pages.open(browser, f"{stack.base}/r/console")
            fill_join(ann, "Ann")
            joined(ann)
            fill_join(bob, "Bob")
            joined(bob)
            ann.click("#lead")
            poll(ann, "bbDebug.state.leader === bbDebug.me.singer_id", "Ann leads")
            bob_id = bob.evaluate("bbDebug.me.singer_id")
            # The leader has a fader and a solo button per singer; Bob only his own fader.
            poll(ann, "document.querySelectorAll('#console .console-row').length === 2", "rows")
            poll(bob, "document.querySelectorAll('#console .console-row').length === 1", "Bob's")
            assert bob.locator("#console button", has_text="Solo").count() == 0
            assert bob.get_by_role("slider", name="Microphone level of Bob").count() == 1
            assert bob.get_by_role("slider", name="Microphone level of Ann").count() == 0

            # The leader turns Bob down to -12 dB; everyone sees it in the state.
            fader = ann.get_by_role("slider", name="Microphone level of Bob")
            fader.fill("-12")
            fader.dispatch_event("change")
            poll(
                bob,
                f"bbDebug.state.members.find((m) => m.singer_id === '{bob_id}').gain_db === -12",
                "Bob's gain reaches his page",
            )
            assert bob.input_value("#console input[type=range]") == "-12"
            # Bob sets his own fader to off (the bottom of the range): null on the wire.
            own = bob.get_by_role("slider", name="Microphone level of Bob")
            own.fill(own.get_attribute("min") or "-41")
            own.dispatch_event("change")
            poll(
                ann,
                f"bbDebug.state.members.find((m) => m.singer_id === '{bob_id}').gain_db === null",
                "Bob silenced himself",
            )

            # Solo Bob; Ann chooses to hear the soloed singers.
            solo = ann.get_by_role("button", name="Solo Bob")
            solo.click()
            poll(ann, "bbDebug.state.solo.length === 1", "Bob is soloed")
            assert (
                ann.get_by_role("button", name="Solo Bob").get_attribute("aria-pressed") == "true"
            )
            ann.check("#console input[name=mix][value=solo]")
            poll(ann, "bbDebug.me.hears === 'solo'", "Ann hears the solo mix")
            # Rounds: refused during a song, set between songs.
            ann.fill("#console input[name=repeats]", "2")
            ann.click("#console form.rounds button[type=submit]")
            poll(ann, "bbDebug.state.song.rounds.repeats === 2", "the rounds are set")
            pages.shots(ann, "console-leader")
            pages.shots(bob, "console-singer")
            pages.assert_clean()
        finally:
            browser.close()


# --- the room in each role during a song, and a phone joining mid-song --------------------------

LYRICS = "Row, row, row your boat\nGently down the stream\nMerrily, merrily\nLife is but a dream"
PRESSED = ("rgb(36, 89, 184)", "rgb(27, 71, 147)")  # the accent, and its hover shade


def test_each_role_during_a_song_and_a_phone_joining_mid_song(
    stack: Stack, output_dir: Path, mic: Path
) -> None:
    axe = require_axe()
    pages = Pages(output_dir)
    track = output_dir / "song.flac"
    track.write_bytes(
        encode(tone_notes([(0.0, 40.0, 330.0)], SAMPLE_RATE, 0.1), SAMPLE_RATE, "flac")
    )
    with sync_playwright() as pw:
        browser = launch(pw, mic)
        try:
            ann = pages.open(browser, f"{stack.base}/r/choir")
            fill_join(ann, "Ann")
            joined(ann)
            ann.click("#lead")
            poll(ann, "bbDebug.state.leader === bbDebug.me.singer_id", "Ann leads")
            # The file field says what went up, not the browser's "No file chosen".
            ann.set_input_files("#track-file", str(track))
            poll(ann, "bbDebug.state.song.track !== null", "the track is the room's", 30)
            poll(
                ann,
                "document.querySelector('#track-file-holds').innerText === 'Uploaded: song.flac'",
                "the uploaded name beside the field",
            )
            assert ann.locator("label[for=track-choice]").inner_text() == "Track"
            ann.fill("#lyrics-text", LYRICS)
            ann.click("text=Show lyrics")
            poll(ann, "document.querySelectorAll('#lyrics li').length === 4", "lyrics shown")
            ben = pages.open(browser, f"{stack.base}/r/choir")
            fill_join(ben, "Ben")
            joined(ben)
            ben.get_by_role("button", name="Join bucket 5", exact=True).click()
            poll(ben, "bbDebug.me.bucket === 4", "Ben in bucket 5, 12 s after the leader")
            lis = pages.open(browser, f"{stack.base}/r/choir")
            fill_join(lis, "Lis", role="spectator")
            joined(lis)
            pages.shots(ann, "leader-before-the-song")

            ann.click("#start")
            poll(ben, "bbDebug.state.song.running", "the song runs")
            # Ben is told when the song gets to him, not that the buckets before him are silent.
            said = poll(
                ben,
                "(() => { const t = document.querySelector('#health-text').innerText;"
                " return t.startsWith('The song reaches your bucket in') && t; })()",
                "the song's arrival in Ben's bucket",
            )
            seconds = int(said.removeprefix("The song reaches your bucket in ").split()[0])
            assert 1 <= seconds <= 13, said  # 12 s, give or take the clock estimates
            pages.shots(ben, "singer-before-the-song-reaches-him")

            # The leader's locked fields look locked; Next line sits with the lyrics.
            poll(ann, "document.querySelector('#metronome fieldset').disabled", "locked fields")
            assert ann.is_disabled("#metronome input[name=bpm]")
            assert ann.locator("#lyrics-card #next-line").is_enabled()
            assert "Locked while the song runs" in text(ann, "#material")
            ann.click("#next-line")
            poll(ann, "bbDebug.state.material.cues.length === 1", "the first cue")

            # Solo stays visibly on with the pointer still over it.
            solo = ann.get_by_role("button", name="Solo Ben")
            solo.click()
            poll(ann, "bbDebug.state.solo.length === 1", "Ben is soloed")
            solo.hover()
            assert solo.evaluate("(el) => getComputedStyle(el).backgroundColor") in PRESSED

            # A phone joins mid-song and lands on the song and the lyrics, not 900 px down.
            cy = pages.open(browser, f"{stack.base}/r/choir")
            cy.set_viewport_size({"width": 390, "height": 844})
            fill_join(cy, "Cy")
            joined(cy)
            poll(cy, "document.querySelector('#lyrics li.current') !== null", "Cy's lyrics")
            for card in ("#song-card", "#lyrics-card"):
                box = cy.locator(card).bounding_box()
                assert box is not None and 0 <= box["y"] < 844, (card, box)
            song = cy.locator("#song-card").bounding_box()
            assert song is not None and song["y"] + song["height"] <= 844
            assert cy.evaluate("scrollY") == 0
            cy.screenshot(path=str(output_dir / "phone-mid-song-landing.png"))
            # The status line keeps the bucket whole; only the room name may be cut.
            part = status_bucket(cy)
            assert part["text"].startswith("bucket") and part["whole"] and part["right"] <= 390

            audit(ann, axe, output_dir / "axe-leader-during-song.json")
            pages.shots(ann, "leader-during-song-with-material")
            pages.shots(ben, "singer-during-song")
            pages.shots(lis, "listener-during-song")
            pages.shots(cy, "phone-singer-during-song")
            ann.click("#stop")
            poll(ann, "!bbDebug.state.song.running", "stopped")
            pages.assert_clean()
        finally:
            browser.close()
