"""The Recordings panel's pure helpers and its list, run in real Chromium (a static
server, no gateway; a stub ``fetch`` answers the panel's requests).

Times are shown in the browser's time zone: the page runs in Asia/Kolkata
(UTC+05:30, a half-hour offset) and the expected text comes from Python's
zoneinfo.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

ZONE = "Asia/Kolkata"
STEM = "choir-song3-20261201-0810-Ann"

PANEL = """
<section id="recordings-card">
  <p id="recording-summary"></p>
  <fieldset id="recording-options" hidden>
    <input type="checkbox" id="rec-stems"><input type="checkbox" id="rec-clicks">
  </fieldset>
  <p id="recording-options-hint" hidden></p>
  <button id="recordings-refresh" type="button">Refresh</button>
  <p id="recordings-status" role="status"></p>
  <p id="recordings-empty" hidden>No recordings yet.</p>
  <ol id="recordings"></ol>
</section>
"""


PAGE_SCRIPT = "async () => { window.rec = await import('/static/recordingsview.js'); }"
PAGE_OPTIONS = {"timezone_id": ZONE}
"""The module's ``page`` (tests/conftest.py): the panel's module, in the zone above."""


def sidecar(song: int, created: float | None, stems: bool = False, **more: Any) -> dict[str, Any]:
    stem = f"choir-song{song}-20261201-0800-Ann"
    return {
        "room": "choir",
        "song": song,
        "start_pos": 1000 * song,
        "length_s": 61.5,
        "leader": "Ann",
        "created": created,
        "flac": f"{stem}.flac",
        "ogg": f"{stem}.ogg",
        "stems": [{"singer": "s-1", "name": "Ann", "file": f"{stem}.stem-01-Ann.flac"}]
        if stems
        else [],
        **more,
    }


def test_lengths_and_local_times_read_as_people_expect(page: Any) -> None:
    got = page.evaluate("[0, 0.9, 59.99, 60, 61.5, 3600, -1, null, 'x', NaN].map(rec.lengthText)")
    unknown = "\u2013"  # an en dash
    assert got == ["0:00", "0:00", "0:59", "1:00", "1:01", "60:00", *[unknown] * 4]
    for created in (1796112600.0, 1796150000.5, 0.0, 1782000000.0):
        want = dt.datetime.fromtimestamp(created, zoneinfo.ZoneInfo(ZONE)).strftime(
            "%Y-%m-%d %H:%M"
        )
        assert page.evaluate("(t) => rec.localTime(t)", created) == want
    assert page.evaluate("[null, '1', 1e20, NaN, Infinity].map(rec.localTime)") == [""] * 5


def test_addresses_name_the_files_of_the_sidecar(page: Any) -> None:
    plain, with_stems = sidecar(3, 2.0), sidecar(4, 3.0, stems=True)
    assert page.evaluate("(r) => rec.downloads('choir', r)", plain) == [
        {
            "label": "Mix (Ogg)",
            "url": "/api/rooms/choir/recordings/choir-song3-20261201-0800-Ann.ogg",
            "name": "choir-song3-20261201-0800-Ann.ogg",
        },
        {
            "label": "FLAC",
            "url": "/api/rooms/choir/recordings/choir-song3-20261201-0800-Ann.flac",
            "name": "choir-song3-20261201-0800-Ann.flac",
        },
    ]
    links = page.evaluate("(r) => rec.downloads('choir', r)", with_stems)
    assert links[2] == {
        "label": "Stems (zip)",
        "url": "/api/rooms/choir/recordings/choir-song4-20261201-0800-Ann.stems.zip",
        "name": "choir-song4-20261201-0800-Ann.stems.zip",
    }
    assert (
        page.evaluate("rec.fileUrl('a b', 'x#1.flac')") == "/api/rooms/a%20b/recordings/x%231.flac"
    )
    assert page.evaluate("(r) => rec.hasStems(r)", {**plain, "stems": None}) is False
    assert page.evaluate("(r) => rec.hasStems(r)", {"flac": "x.flac"}) is False


def test_the_list_is_newest_first_and_skips_what_it_cannot_show(page: Any) -> None:
    listed = [
        sidecar(1, 10.0),
        sidecar(3, 30.0),
        {"created": 50.0},  # no files named
        sidecar(2, 20.0),
        {**sidecar(5, 40.0), "flac": 7},
        sidecar(4, None),
    ]
    got = page.evaluate("(l) => rec.newestFirst(l).map((r) => r.song)", listed)
    assert got == [3, 2, 1, 4]
    assert page.evaluate("rec.newestFirst(null)") == []


def test_messages_say_what_went_wrong(page: Any) -> None:
    texts = page.evaluate("[401, 403, 404, 503, 500].map((s) => rec.problemText(s))")
    assert "members" in texts[0] and "join it again" in texts[0]
    assert "no longer in this room" in texts[1]
    assert texts[2].startswith("The list of recordings was not found")
    assert "database" in texts[3]
    assert texts[4] == "The list of recordings could not be loaded (HTTP 500)."
    assert page.evaluate("rec.problemText(404, 'Song 2: FLAC')").startswith("Song 2: FLAC was")


def test_a_song_end_is_noticed_and_looked_for_a_bounded_while(page: Any) -> None:
    ended = page.evaluate(
        """[
          rec.songEnded({room: 'a', song: {running: true}}, {room: 'a', song: {running: false}}),
          rec.songEnded({song: {running: false}}, {song: {running: false}}),
          rec.songEnded({song: {running: false}}, {song: {running: true}}),
          rec.songEnded(null, {song: {running: false}}),
        ]"""
    )
    assert ended == [True, False, False, False]
    waits = page.evaluate(
        "Array.from({length: 30}, (_, i) => rec.retryDelayMs(i)).concat(rec.retryDelayMs(-1))"
    )
    looks = [w for w in waits if w is not None]
    assert looks[:5] == [2000, 3000, 5000, 8000, 15000] and len(looks) == 24
    assert waits[24:] == [None] * 7
    assert 4 * 60_000 <= sum(looks) <= 6 * 60_000  # about five minutes, then it gives up


def test_the_summary_says_what_is_recorded(page: Any) -> None:
    summary = page.evaluate(
        """[
          rec.recordingSummary({stems: false, metronome: false}, false),
          rec.recordingSummary({stems: true, metronome: true}, true),
          rec.recordingSummary(undefined, false),
        ]"""
    )
    assert summary == [
        "Recordings of the next songs hold the mix.",
        "This song's recording holds the mix with the metronome's clicks, "
        "and each singer's voice alone (stems).",
        "Recordings of the next songs hold the mix.",
    ]


def test_the_leaders_checkboxes_send_set_recording_and_show_the_rooms_choice(page: Any) -> None:
    """What the room says wins: a refused change (``song_running``) is undone on screen."""
    got = page.evaluate(
        """async (html) => {
          document.body.innerHTML = html;
          window.fetch = async () => new Response('{"recordings": []}');
          const sent = [];
          let answer = true;
          const store = {state: null, joined: true, isLeader: true};
          const request = async (type, fields) => { sent.push([type, fields]); return answer; };
          const app = {store, seat: () => null, request};
          const panel = new rec.RecordingsPanel({app, $: (id) => document.getElementById(id)});
          panel.bind();
          const $ = (id) => document.getElementById(id);
          const look = () => [$('rec-stems').checked, $('rec-clicks').checked,
            $('rec-stems').disabled, $('recording-options').hidden,
            $('recording-options-hint').hidden];
          const out = {};
          const song = (running, stems, metronome) => ({running, recording: {stems, metronome}});
          store.state = {room: 'r', song: song(false, false, true)};
          panel.onState(store.state, null);
          out.shown = look();
          $('rec-stems').click();
          await new Promise((r) => setTimeout(r, 0));
          answer = false;
          $('rec-clicks').click();
          await new Promise((r) => setTimeout(r, 0));
          out.refused = look();
          store.state = {room: 'r', song: song(true, true, true)};
          panel.onState(store.state, null);
          out.running = look();
          store.isLeader = false;
          panel.onState(store.state, null);
          out.notLeading = look();
          out.sent = sent;
          panel.reset();
          return out;
        }""",
        PANEL,
    )
    assert got["shown"] == [False, True, False, False, True]
    assert got["sent"] == [
        ["set_recording", {"stems": True, "metronome": True}],
        ["set_recording", {"stems": True, "metronome": False}],
    ]
    # The second change was refused: the room still has neither stems nor clicks changed.
    assert got["refused"] == [False, True, False, False, True]
    assert got["running"] == [True, True, True, False, False]
    assert got["notLeading"][3] is True


def test_the_panel_keeps_its_rows_and_shows_refusals(page: Any) -> None:
    """A new recording goes on top without rebuilding the others (a player playing
    plays on); a gone one is removed; a 403 and a 503 are said in words."""
    got = page.evaluate(
        """async ([html, first, second, third]) => {
          document.body.innerHTML = html;
          const answers = [];
          const asked = [];
          window.fetch = async (url, init) => {
            asked.push({url, headers: init.headers});
            const [status, body] = answers.shift();
            return new Response(JSON.stringify(body), {status});
          };
          const store = {state: null, joined: true, isLeader: false};
          const app = {store, seat: () => ({singer: 's-1', token: 't'}), request: async () => true};
          const panel = new rec.RecordingsPanel({app, $: (id) => document.getElementById(id)});
          panel.bind();
          const out = {};
          const until = (cond) => new Promise((resolve) => {
            const check = () => (cond() ? resolve() : setTimeout(check, 10));
            check();
          });
          answers.push([200, {recordings: [], members_only: false}]);
          store.state = {room: 'choir', song: {running: false, recording: {stems: true}}};
          panel.onState(store.state, null);
          await until(() => !document.getElementById('recordings-empty').hidden);
          out.empty = !document.getElementById('recordings-empty').hidden;
          out.summary = document.getElementById('recording-summary').textContent;
          out.optionsHidden = document.getElementById('recording-options').hidden;
          answers.push([200, {recordings: [first, second], members_only: false}]);
          await panel.refresh();
          const rows = () => [...document.querySelectorAll('#recordings li')];
          const before = rows();
          out.first = before.map((li) => li.dataset.stem);
          out.audio = before[0].querySelector('audio').getAttribute('src');
          answers.push([200, {recordings: [third, first], members_only: false}]);
          await panel.refresh();
          const after = rows();
          out.second = after.map((li) => li.dataset.stem);
          out.kept = after[1] === before[1];
          out.emptyAfter = !document.getElementById('recordings-empty').hidden;
          answers.push([403, {error: 'that seat is not in this room'}]);
          await panel.refresh();
          out.refused = document.getElementById('recordings-status').textContent;
          out.stillListed = rows().length;
          answers.push([503, {error: 'Redis is unreachable; retry'}]);
          document.getElementById('recordings-refresh').click();
          const list = document.getElementById('recordings');
          await until(() => !answers.length && !list.hasAttribute('aria-busy'));
          out.unavailable = document.getElementById('recordings-status').textContent;
          out.asked = asked;
          panel.reset();
          out.afterReset = rows().length;
          return out;
        }""",
        [PANEL, sidecar(1, 10.0), sidecar(2, 20.0, stems=True), sidecar(3, 30.0)],
    )
    assert got["empty"] is True
    assert got["summary"] == (
        "Recordings of the next songs hold the mix, and each singer's voice alone (stems)."
    )
    assert got["optionsHidden"] is True  # not the leader
    stems = [f"choir-song{n}-20261201-0800-Ann" for n in (1, 2, 3)]
    assert got["first"] == [stems[1], stems[0]]
    assert got["audio"] == f"/api/rooms/choir/recordings/{stems[1]}.ogg"
    assert got["second"] == [stems[2], stems[0]]
    assert got["kept"] is True
    assert got["emptyAfter"] is False
    assert "no longer in this room" in got["refused"] and got["stillListed"] == 2
    assert "database" in got["unavailable"]
    assert all(a["url"] == "/api/rooms/choir/recordings" for a in got["asked"])
    assert all(a["headers"] == {"X-BB-Singer": "s-1", "X-BB-Token": "t"} for a in got["asked"])
    assert got["afterReset"] == 0


def test_every_ended_song_is_awaited_until_listed(page: Any) -> None:
    got = page.evaluate(
        """(() => {
          let a = [];
          a = rec.awaitSong(a, {number: 2, start_pos: 2000});
          a = rec.awaitSong(a, {number: 3, start_pos: 3000});
          a = rec.awaitSong(a, {number: 3, start_pos: 3000});
          return [a.length, rec.stillAwaited(a, [{song: 3, start_pos: 3000}]),
                  rec.stillAwaited(a, [{song: 2, start_pos: 9}]).length,
                  rec.stillAwaited(null, [])];
        })()"""
    )
    assert got == [2, [{"number": 2, "start_pos": 2000}], 2, []]


def test_three_songs_in_a_row_are_all_shown_without_refresh(page: Any) -> None:
    """Today: songs 1, 2, 3 end one after the other; the page waited for one song at a
    time (song 3 replaced song 2) and showed 3 and 1 until Refresh. Now each
    ``recording`` message, in whatever order, shows the list as the server has it."""
    got = page.evaluate(
        """async ([html, one, two, three]) => {
          document.body.innerHTML = html;
          let listed = [];
          window.fetch = async () =>
            new Response(JSON.stringify({recordings: listed, members_only: false}));
          const store = {state: null, joined: true, isLeader: false};
          const app = {store, seat: () => null, request: async () => true};
          const panel = new rec.RecordingsPanel({app, $: (id) => document.getElementById(id)});
          panel.bind();
          const list = document.getElementById('recordings');
          const settle = () => new Promise((resolve) => {
            const check = () =>
              (list.hasAttribute('aria-busy') ? setTimeout(check, 10) : resolve());
            check();
          });
          const rows = () => [...list.querySelectorAll('li')].map((li) => li.dataset.stem);
          const state = (n, running) =>
            ({room: 'choir', song: {running, number: n, start_pos: 1000 * n}});
          let previous = null;
          for (const n of [1, 2, 3]) {
            for (const running of [true, false]) {
              const next = state(n, running);
              store.state = next;
              panel.onState(next, previous);
              previous = next;
            }
          }
          await settle();
          const out = {waiting: document.getElementById('recordings-status').textContent};
          listed = [one];
          await panel.onRecorded({type: 'recording', song: 1, start_pos: 1000});
          listed = [three, one];  // song 3's recording is listed before song 2's
          await panel.onRecorded({type: 'recording', song: 3, start_pos: 3000});
          out.middle = rows();
          out.stillWaiting = panel.awaiting.map((a) => a.number);
          listed = [three, two, one];
          await panel.onRecorded({type: 'recording', song: 2, start_pos: 2000});
          out.last = rows();
          out.status = document.getElementById('recordings-status').textContent;
          out.timer = panel.awaiting.length;
          panel.reset();
          return out;
        }""",
        [PANEL, sidecar(1, 10.0), sidecar(2, 20.0), sidecar(3, 30.0)],
    )
    stems = [f"choir-song{n}-20261201-0800-Ann" for n in (1, 2, 3)]
    assert got["waiting"].startswith("Songs 1, 2, 3 ended")
    assert got["middle"] == [stems[2], stems[0]] and got["stillWaiting"] == [2]
    assert got["last"] == [stems[2], stems[1], stems[0]]
    assert got["status"] == "" and got["timer"] == 0
