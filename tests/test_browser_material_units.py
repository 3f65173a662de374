"""The page's song material modules, run in real Chromium against the Python arithmetic.

metronome.js must place every click exactly where common/tracks.py does (the
mixer ends songs with the same origin), and the worklet's per-sample click
must be the click wave at those positions; backing.js, lyrics.js and
materialview.js pure helpers are checked on their own. No gateway: a static
server serves the modules.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from common.constants import SAMPLE_RATE
from common.records import Metronome
from common.tracks import (
    CLICK_SAMPLES,
    beat_position,
    clicks_between,
    count_in_samples,
    song_origin,
)

T0 = 85_236_480_000_000


PAGE_SCRIPT = """async () => {
  window.met = await import('/static/metronome.js');
  window.back = await import('/static/backing.js');
  window.lyr = await import('/static/lyrics.js');
  window.mat = await import('/static/materialview.js');
}"""
"""The modules under test, loaded in the module's ``page`` (tests/conftest.py)."""


def metronome_cases() -> list[Metronome]:
    rng = random.Random(11)
    cases = [
        Metronome(on=True, bpm=120, beats=4),
        Metronome(on=True, bpm=120, beats=4, count_in=True),
        Metronome(on=True, bpm=97, beats=3, count_in=True),
        Metronome(on=True, bpm=20, beats=16, count_in=True),
        Metronome(on=True, bpm=300, beats=1),
    ]
    cases += [
        Metronome(
            on=True,
            bpm=round(rng.uniform(20, 300), 2),
            beats=rng.randint(1, 16),
            count_in=rng.random() < 0.5,
        )
        for _ in range(25)
    ]
    return cases


def as_js(m: Metronome) -> dict[str, Any]:
    return {"on": m.on, "bpm": m.bpm, "beats": m.beats, "count_in": m.count_in}


def test_clicks_fall_where_the_python_arithmetic_puts_them(page: Any) -> None:
    for m in metronome_cases():
        lo, hi = T0 - SAMPLE_RATE, T0 + 30 * SAMPLE_RATE
        got = page.evaluate(
            "([lo, hi, start, m]) => met.clicksBetween(lo, hi, start, m)", [lo, hi, T0, as_js(m)]
        )
        want = [
            {"pos": c.pos, "beat": c.beat, "accent": c.accent}
            for c in clicks_between(lo, hi, T0, m)
        ]
        assert got == want, m
        assert page.evaluate("([m]) => met.countInSamples(m)", [as_js(m)]) == count_in_samples(m)
        assert page.evaluate("([s, m]) => met.songOrigin(s, m)", [T0, as_js(m)]) == song_origin(
            T0, m
        )
        for beat in (-16, -1, 0, 1, 7, 1000):
            assert page.evaluate(
                "([o, bpm, k]) => met.beatPosition(o, bpm, k)", [T0, m.bpm, beat]
            ) == beat_position(T0, m.bpm, beat)


def test_the_worklets_click_samples_are_the_click_wave_at_each_beat(page: Any) -> None:
    """``clickSampleAt`` per sample over the count-in and a bar: clicks and silence only."""
    m = Metronome(on=True, bpm=133, beats=3, count_in=True)
    origin = song_origin(T0, m)
    span = 4 * SAMPLE_RATE
    rendered = np.array(
        page.evaluate(
            """([start, origin, m, n]) => {
              const song = {start, end: null, origin, metronome: m};
              const waves = [met.clickWave(false), met.clickWave(true)];
              const out = [];
              for (let i = 0; i < n; i++) {
                out.push(met.clickSampleAt(start - 1000 + i, song, waves));
              }
              return out;
            }""",
            [T0, origin, as_js(m), span],
        )
    )
    waves = [
        np.array(page.evaluate("(a) => Array.from(met.clickWave(a))", accent))
        for accent in (False, True)
    ]
    expected = np.zeros(span)
    for click in clicks_between(T0 - 1000, T0 - 1000 + span, T0, m):
        at = click.pos - (T0 - 1000)
        part = waves[int(click.accent)][: span - at]
        expected[at : at + part.shape[0]] += part
    assert np.array_equal(rendered, expected)
    assert np.all(rendered[:1000] == 0)  # nothing before the song starts
    # The first click is the count-in's accented one, at start_pos exactly.
    assert rendered[1000] == 0 and rendered[1001] != 0 and np.count_nonzero(waves[1]) > 400
    assert waves[1].shape[0] == CLICK_SAMPLES
    # No click from the end position on.
    ended = page.evaluate(
        """([start, origin, m]) => {
          const song = {start, end: start + 10, origin, metronome: m};
          const waves = [met.clickWave(false), met.clickWave(true)];
          return [5, 10, 11].map((d) => met.clickSampleAt(start + d, song, waves));
        }""",
        [T0, origin, as_js(m)],
    )
    assert ended[0] != 0 and ended[1:] == [0, 0]


def test_the_song_before_plays_on_for_its_last_seconds(page: Any) -> None:
    """The leader stops and starts the next song at once: a later bucket still plays the
    first song's end, with its own material, until the second song's window begins."""
    got = page.evaluate(
        """(t0) => {
          const none = {start: null, end: null};
          const first = {start: t0, end: null, origin: t0, metronome: null};
          const ended = {...first, end: t0 + 1000};
          const second = {start: t0 + 1500, end: null, origin: t0 + 1500, metronome: null};
          const before = met.previousSong(ended, second, null);
          const at = (p) => {
            const s = met.songAt(p, second, before);
            return s === null ? null : s === second ? "second" : "first";
          };
          return {
            before,
            same: met.previousSong(second, {...second, end: t0 + 2000}, before) === before,
            fresh: met.previousSong(none, first, null),
            cleared: met.previousSong(second, none, before),
            // Started again before the first song's end reached this page: ends at the start.
            unended: met.previousSong(first, second, null).end,
            at: [t0 - 1, t0, t0 + 999, t0 + 1000, t0 + 1499, t0 + 1500].map(at),
            endedAt: met.songAt(t0 + 2000, {...second, end: t0 + 2000}, before),
          };
        }""",
        T0,
    )
    assert got["before"] == {"start": T0, "end": T0 + 1000, "origin": T0, "metronome": None}
    assert got["same"] and got["fresh"] is None and got["cleared"] is None
    assert got["unended"] == T0 + 1500
    assert got["at"] == [None, "first", "first", None, None, "second"]
    assert got["endedAt"] is None


def test_track_positions_levels_and_the_song_window(page: Any) -> None:
    assert page.evaluate("back.trackIndex(1000, 1000, 10)") == 0
    assert page.evaluate("back.trackIndex(1009, 1000, 10)") == 9
    assert page.evaluate("[back.trackIndex(999, 1000, 10), back.trackIndex(1010, 1000, 10)]") == [
        None,
        None,
    ]
    assert page.evaluate("[0, 50, 100, 150, -5, 'x'].map(back.levelGain)") == [
        0,
        0.25,
        1,
        1,
        0,
        0,
    ]
    state = {
        "song": {
            "running": True,
            "start_pos": T0,
            "end_pos": None,
            "origin": T0 + 96000,
            "metronome": {"on": True, "bpm": 120, "beats": 4, "count_in": True},
            "track": {"id": "t-0123456789ab", "samples": 5},
        }
    }
    # A state without `started_with` and `previous` (a server from before): the choice.
    assert page.evaluate("(s) => back.songMaterial(s)", state) == {
        "start": T0,
        "end": None,
        "origin": T0 + 96000,
        "metronome": state["song"]["metronome"],
        "trackId": "t-0123456789ab",
        "previous": None,  # undefined: the worklet remembers the songs it played
        "earlier": None,
    }
    assert page.evaluate("back.songMaterial({song: {start_pos: 5}}).previous === undefined")
    assert page.evaluate("back.songMaterial({song: {start_pos: null}}).start") is None
    # Levels are remembered per browser; anything unreadable falls back to the defaults.
    levels = page.evaluate(
        """() => {
          const store = new Map();
          const fake = {getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v)};
          const first = back.loadLevels(fake);
          back.saveLevels({track: 35, click: 0}, fake);
          const saved = back.loadLevels(fake);
          store.set('bb-levels', '{"track": 900, "click": "x"}');
          const bad = back.loadLevels(fake);
          store.set('bb-levels', 'not json');
          return [first, saved, bad, back.loadLevels(fake)];
        }"""
    )
    default = {"track": 80, "click": 60}
    assert levels == [default, {"track": 35, "click": 0}, default, default]


def test_the_current_lyric_line_follows_the_cues(page: Any) -> None:
    cues = [[T0 + 100, 0], [T0 + 500, 1], [T0 + 900, 3]]
    got = page.evaluate(
        "([cues, t]) => [0, 100, 499, 500, 2000].map((d) => lyr.currentLine(cues, t + d))",
        [cues, T0],
    )
    assert got == [-1, 0, 0, 1, 3]
    assert page.evaluate("lyr.currentLine([], 5)") == -1
    assert page.evaluate("lyr.lyricLines('a\\nb\\n\\n')") == ["a", "b"]
    assert page.evaluate("lyr.lyricLines('')") == []
    assert page.evaluate(
        "[lyr.nextLine([], 3), lyr.nextLine([[1, 0]], 3), lyr.nextLine([[1, 2]], 3)]"
    ) == [
        0,
        1,
        2,
    ]
    assert page.evaluate("mat.duration(48000 * 125, 48000)") == "2:05"
    summary = page.evaluate(
        """mat.materialSummary({track: {name: 'Hymn.mp3', samples: 48000 * 61},
            metronome: {on: true, bpm: 90, beats: 3, count_in: true}}, 48000)"""
    )
    assert (
        summary
        == "Backing track: Hymn.mp3 (1:01). Metronome: 90 bpm, 3 per bar, one bar counted in"
    )


CLICKS = {"on": True, "bpm": 120, "beats": 4, "count_in": False}
OFF = {"on": False, "bpm": 100, "beats": 4, "count_in": False}
HYMN = {"id": "t-0123456789ab", "name": "Hymn", "samples": 48000, "bytes": 1, "source": "upload"}


def test_the_page_plays_each_songs_own_material_not_the_next_songs_choice(page: Any) -> None:
    """Song 1 ended with its track; the leader then chose no track and no clicks, and
    started song 2: the page keeps playing song 1's material for song 1's positions."""
    ended = {
        "running": False,
        "number": 1,
        "start_pos": T0,
        "end_pos": T0 + 48000,
        "origin": T0,
        "ended": "track",
        "track": None,
        "metronome": OFF,
        "started_with": {"track": HYMN, "metronome": CLICKS},
        "previous": None,
    }
    got = page.evaluate("(song) => back.songMaterial({song})", ended)
    assert got == {
        "start": T0,
        "end": T0 + 48000,
        "origin": T0,
        "metronome": CLICKS,
        "trackId": HYMN["id"],
        "previous": None,
        "earlier": [],
    }
    second = {
        **ended,
        "running": True,
        "number": 2,
        "start_pos": T0 + 60000,
        "end_pos": None,
        "origin": T0 + 60000,
        "ended": None,
        "started_with": {"track": None, "metronome": OFF},
        "previous": {
            "number": 1,
            "start_pos": T0,
            "end_pos": T0 + 48000,
            "ended": "track",
            "origin": T0,
            "started_with": {"track": HYMN, "metronome": CLICKS},
        },
    }
    got = page.evaluate("(song) => back.songMaterial({song})", second)
    assert (got["trackId"], got["metronome"]) == (None, OFF)
    assert got["previous"] == {
        "start": T0,
        "end": T0 + 48000,
        "origin": T0,
        "metronome": CLICKS,
        "trackId": HYMN["id"],
    }
    # What the worklet plays where: song 1's clicks up to its end, none in song 2.
    clicks = page.evaluate(
        """([m, t0]) => {
          const waves = [met.clickWave(false), met.clickWave(true)];
          const at = (p) => {
            const s = met.songAt(p, m, m.previous);
            return s === null ? 0 : met.clickSampleAt(p, s, waves);
          };
          return [t0 + 100, t0 + 24000 + 100, t0 + 60000 + 100, t0 + 84000 + 100].map(at);
        }""",
        [got, T0],
    )
    assert clicks[0] != 0 and clicks[1] != 0 and clicks[2:] == [0, 0]


def test_the_page_follows_the_last_songs_cues_then_the_running_songs(page: Any) -> None:
    state = {
        "song": {"start_pos": T0 + 1000},
        "material": {"cues": [[T0 + 1500, 2]], "previous_cues": [[T0 + 100, 0], [T0 + 600, 1]]},
    }
    cues = page.evaluate("(s) => lyr.songCues(s)", state)
    assert cues == [[T0 + 100, 0], [T0 + 600, 1], [T0 + 1000, -1], [T0 + 1500, 2]]
    lines = page.evaluate(
        "([c, t]) => [50, 100, 700, 999, 1000, 1499, 1500].map((d) => lyr.currentLine(c, t + d))",
        [cues, T0],
    )
    assert lines == [-1, 0, 1, 1, -1, -1, 2]
    # Without a song before, the cues as they are.
    alone = {"song": {"start_pos": T0}, "material": {"cues": [[T0 + 5, 0]], "previous_cues": []}}
    assert page.evaluate("(s) => lyr.songCues(s)", alone) == [[T0 + 5, 0]]
    # Two songs before, still audible: song 1's cues (older_cues) up to song 2's start,
    # song 2's (previous_cues) up to song 3's, then song 3's.
    three = {
        "song": {"start_pos": T0 + 3000, "previous": {"start_pos": T0 + 2000}},
        "material": {
            "cues": [[T0 + 3500, 2]],
            "previous_cues": [[T0 + 2100, 1]],
            "older_cues": [{"start_pos": T0, "cues": [[T0 + 100, 0], [T0 + 1200, 1]]}],
        },
    }
    assert page.evaluate("(s) => lyr.songCues(s)", three) == [
        [T0 + 100, 0],
        [T0 + 1200, 1],
        [T0 + 2000, -1],
        [T0 + 2100, 1],
        [T0 + 3000, -1],
        [T0 + 3500, 2],
    ]


@pytest.mark.parametrize(
    ("ended", "stopped_by", "me", "said"),
    [
        ("track", None, "s-lis", "Song 3 ended with its backing track."),
        ("stopped", "s-ann", "s-lis", "Ann stopped song 3."),
        ("stopped", "s-ann", "s-ann", "You stopped song 3."),
        ("stopped", "s-gone", "s-lis", "Song 3 was stopped by its leader, who has since left."),
        ("halted", "s-ann", "s-lis", "Ann halted song 3."),
        ("leader_left", None, "s-lis", "Song 3 ended: its leader left the room."),
        (None, None, "s-lis", "Song 3 ended."),
    ],
)
def test_the_end_of_song_line_names_the_real_reason(
    page: Any, ended: str | None, stopped_by: str | None, me: str, said: str
) -> None:
    """Song 3 ended with its track and the leader then chose no track: still the track's end."""
    state = {
        "version": 9,
        "leader": "s-ann",
        "song": {
            "running": False,
            "number": 3,
            "start_pos": T0,
            "end_pos": T0 + 48000,
            "origin": T0,
            "stopped_by": stopped_by,
            "ended": ended,
            "track": None,
            "started_with": {"track": HYMN, "metronome": OFF},
        },
        "buckets": {"n": 6, "spacing": 144000, "delays": [144000 * (i + 1) for i in range(6)]},
        "members": [
            {"singer_id": "s-ann", "name": "Ann", "role": "singer", "delay": 144000, "bucket": 0},
            {
                "singer_id": "s-lis",
                "name": "Lis",
                "role": "spectator",
                "delay": 864000,
                "bucket": 5,
            },
        ],
    }
    text = page.evaluate(
        """async ([state, me]) => {
          const { RoomStore } = await import('/static/roomstore.js');
          const store = new RoomStore();
          store.setMe(me);
          store.apply(state);
          return store.song().text;
        }""",
        [state, me],
    )
    assert text.startswith(said), text


def test_three_songs_within_one_delay_each_play_their_own_material(page: Any) -> None:
    """Song 1 (track and clicks) ended with its track, song 2 (clicks only) was stopped,
    song 3 (nothing) started at once: a later bucket still in song 1 plays song 1's
    track and clicks, then song 2's clicks, then nothing, from the state's `earlier`."""
    one = {
        "number": 1,
        "start_pos": T0,
        "end_pos": T0 + 48000,
        "ended": "track",
        "origin": T0,
        "started_with": {"track": HYMN, "metronome": CLICKS},
    }
    two = {
        "number": 2,
        "start_pos": T0 + 50000,
        "end_pos": T0 + 98000,
        "ended": "stopped",
        "origin": T0 + 50000,
        "started_with": {"track": None, "metronome": CLICKS},
    }
    third = {
        "running": True,
        "number": 3,
        "start_pos": T0 + 100000,
        "end_pos": None,
        "origin": T0 + 100000,
        "track": None,
        "metronome": OFF,
        "started_with": {"track": None, "metronome": OFF},
        "previous": two,
        "earlier": [two, one],
    }
    got = page.evaluate("(song) => back.songMaterial({song})", third)
    assert [e["start"] for e in got["earlier"]] == [T0 + 50000, T0]
    assert got["earlier"][1]["trackId"] == HYMN["id"] and got["earlier"][0]["trackId"] is None
    assert got["previous"] == got["earlier"][0]
    which = page.evaluate(
        """([m, t0]) => {
          const waves = [met.clickWave(false), met.clickWave(true)];
          return [t0 + 100, t0 + 24000 + 100, t0 + 49000, t0 + 50000 + 100, t0 + 74000 + 100,
                  t0 + 99000, t0 + 100000 + 100].map((p) => {
            const s = met.songAt(p, m, m.earlier);
            return s === null ? null : [s.start, s.trackId, met.clickSampleAt(p, s, waves) !== 0];
          });
        }""",
        [got, T0],
    )
    assert which == [
        [T0, HYMN["id"], True],
        [T0, HYMN["id"], True],
        None,
        [T0 + 50000, None, True],
        [T0 + 50000, None, True],
        None,
        [T0 + 100000, None, False],
    ]
    # A server that lists no songs before: the worklet keeps the ones it played.
    kept = page.evaluate(
        """(t0) => {
          const a = {start: t0, end: t0 + 1000, origin: t0, metronome: null};
          const b = {start: t0 + 1500, end: null, origin: t0 + 1500, metronome: null};
          const c = {start: t0 + 3000, end: null, origin: t0 + 3000, metronome: null};
          const afterB = met.earlierSongs(a, b, []);
          const afterC = met.earlierSongs(b, c, afterB);
          return {
            afterB: afterB.map((s) => [s.start, s.end]),
            afterC: afterC.map((s) => [s.start, s.end]),
            same: met.earlierSongs(c, {...c, end: t0 + 4000}, afterC) === afterC,
            none: met.earlierSongs(c, {start: null, end: null}, afterC),
          };
        }""",
        T0,
    )
    assert kept == {
        "afterB": [[T0, T0 + 1000]],
        "afterC": [[T0 + 1500, T0 + 3000], [T0, T0 + 1000]],
        "same": True,
        "none": [],
    }


def test_a_state_arriving_keeps_the_leaders_unsent_metronome_edits(page: Any) -> None:
    """Every state rebuilds the leader's controls: a metronome switched off but not yet
    sent stays off through the rebuild, and Set sends what the leader chose."""
    got = page.evaluate(
        """() => {
          const container = document.createElement('div');
          document.body.append(container);
          const sent = [];
          let draft = null;
          const metronome = {on: true, bpm: 120, beats: 4, count_in: false};
          const state = {leader: 'ann', room: 'r', material: {tracks: [], lyrics: ''},
                         song: {running: false, track: null, metronome}};
          const ctx = () => ({state, meId: 'ann', sampleRate: 48000, limits: {},
            levels: {track: 80, click: 60}, setLevels() {}, upload() {}, library: [],
            loadLibrary() {}, useLibrary() {}, uploaded: {},
            request: (type, fields) => sent.push([type, fields]),
            draft, setDraft: (d) => (draft = d)});
          const on = () => container.querySelector('#metronome input[name=on]');
          mat.renderMaterial(container, ctx());
          on().click();  // the leader switches the metronome off ...
          const afterClick = on().checked;
          mat.renderMaterial(container, ctx());  // ... and a state arrives before Set
          const afterState = on().checked;
          container.querySelector('#metronome button[type=submit]').click();
          mat.renderMaterial(container, ctx());  // sent: the room's state shows again
          const afterSet = on().checked;
          container.remove();
          return {afterClick, afterState, afterSet, sent, draft};
        }"""
    )
    assert got["afterClick"] is False and got["afterState"] is False
    assert got["sent"] == [
        ["set_metronome", {"on": False, "bpm": 120, "beats": 4, "count_in": False}]
    ]
    assert got["draft"] is None and got["afterSet"] is True
