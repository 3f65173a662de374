"""A song keeps its material for the last bucket after the leader changes it (issue 19).

The real stack (Redis, a mixer, a gateway) and two Chromium pages. Ann leads
(bucket 0, 3 s); Lis listens in the last bucket, 15 s behind (a room of five
buckets). Song 1 has a 12 s backing track of 12 pulses, the metronome at
120 bpm (24 clicks) and two lyric cues; it ends with its track. One second
later Ann chooses "No backing track", switches the metronome off and starts
song 2, while Lis still has 11 s of song 1 to play. Lis's page must still
play all 12 pulses and all 24 clicks of song 1 at their positions (measured
in what the page played, ``bbDebug.played``), and highlight song 1's lyric
lines when her playback reaches their cues. Before songs kept their material
the page dropped the track and the clicks at Ann's change (two pulses and
five clicks heard) and lost the cues when song 2 started. Max, another
listener 15 s behind, joins after song 2 started: his page knows song 1 only
from the state's ``song.previous``, and must play its remaining pulses and
clicks too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from playwright.sync_api import sync_playwright

from common import keys
from common.constants import SAMPLE_RATE
from common.records import Metronome
from common.tracks import clicks_between
from tests.browser_support import (
    console_errors,
    decode_dump,
    fill_join,
    launch,
    lead,
    poll,
    set_metronome,
    upload_track,
    write_wav,
)
from tests.support import Stack, wait_until
from tests.test_browser_material import click_wave
from tests.uploadfiles import encode, tone_notes

pytestmark = pytest.mark.stack(chromium=True)

RATE = SAMPLE_RATE
ROOM = "evening"
PULSE_HZ = 700.0
PULSES = [(k + 0.25, k + 0.35, PULSE_HZ) for k in range(12)]
TRACK_S = 12
METRONOME = Metronome(on=True, bpm=120, beats=4)
LYRICS = "Row, row, row your boat\nGently down the stream\nMerrily, merrily"
TRACK_LEVEL = 0.8**2  # the page's default levels (80 % and 60 %), square law
CLICK_LEVEL = 0.6**2


def make_room(redis_url: str) -> None:
    """A room of five buckets 3 s apart: the listeners' bucket is 15 s behind."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.hset(
            keys.room_meta(ROOM),
            mapping={"capacity": "10", "n_buckets": "5", "bucket_spacing_s": "3.0"},
        )
        client.sadd(keys.ROOMS, ROOM)
    finally:
        client.close()


def open_page(page: Any, base: str, role: str) -> None:
    page.goto(f"{base}/?room={ROOM}&role={role}")
    page.wait_for_selector("body[data-ready]")
    page.evaluate("bbDebug.record(60)")


def join(page: Any, base: str, name: str, role: str) -> None:
    open_page(page, base, role)
    fill_join(page, name, role=role)
    page.wait_for_selector("#stage:not([hidden])", timeout=15_000)


def heard(
    played: np.ndarray, played_start: int, track: np.ndarray, origin: int, end: int
) -> tuple[list[float], list[float]]:
    """Each pulse's and each click's gain in what a page played (positions from ``origin``)."""

    def at(pos: int) -> int:
        return pos - played_start

    pulse_gains = []
    for a, b, _hz in PULSES:
        lo, hi = origin + round(a * RATE) + 240, origin + round(b * RATE) - 240
        ref = track[lo - origin : hi - origin]
        pulse_gains.append(float(np.dot(played[at(lo) : at(hi)], ref) / np.dot(ref, ref)))
    click_gains = []
    for click in clicks_between(origin, end, origin, METRONOME, end_pos=end):
        wave = click_wave(click.accent)
        lo = at(click.pos) - 48
        corr = np.correlate(played[lo : lo + 96 + wave.shape[0]], wave, mode="valid")
        click_gains.append(float(np.max(corr) / np.dot(wave, wave)))
    return pulse_gains, click_gains


def test_the_last_bucket_plays_song_1s_material_after_the_leader_changed_it(
    stack: Stack, redis_url: str, output_dir: Path
) -> None:
    make_room(redis_url)
    silence = write_wav(output_dir / "silent.wav", np.zeros(RATE, np.float32), RATE)
    track = np.zeros(TRACK_S * RATE, np.float32)
    notes = tone_notes(PULSES, RATE, amp=0.3)
    track[: notes.shape[0]] = notes
    track_file = output_dir / "pulses.flac"
    track_file.write_bytes(encode(track, RATE, "flac"))
    with sync_playwright() as pw:
        browsers = [launch(pw, silence), launch(pw), launch(pw)]
        try:
            ann, lis, max_ = (b.new_page(viewport={"width": 1180, "height": 900}) for b in browsers)
            errors = console_errors(ann, lis, max_)
            join(ann, stack.base, "Ann", "singer")
            join(lis, stack.base, "Lis", "spectator")
            lead(ann)
            poll(lis, "bbDebug.me && bbDebug.me.delay === 15 * 48000", "Lis is 15 s behind")

            upload_track(ann, track_file)
            set_metronome(ann, 120, 4)
            poll(ann, "bbDebug.state.song.metronome.on", "the metronome is on")
            ann.fill("#lyrics-text", LYRICS)
            ann.click("text=Show lyrics")
            poll(lis, "bbDebug.state.song.track !== null && bbDebug.state.song.metronome.on", "Lis")

            open_page(max_, stack.base, "spectator")  # Max joins later
            ann.click("#start")
            song = poll(ann, "bbDebug.state.song.running && bbDebug.state.song", "song 1 runs")
            start = int(song["start_pos"])
            ann.wait_for_timeout(4000)
            ann.keyboard.press("PageDown")
            ann.wait_for_timeout(3000)
            ann.click("#next-line")
            poll(ann, "bbDebug.state.material.cues.length === 2", "two cues")
            ended = poll(
                ann, "bbDebug.state.song.end_pos !== null && bbDebug.state.song", "song 1 ends", 30
            )
            end = int(ended["end_pos"])
            cues = ann.evaluate("bbDebug.state.material.cues")
            # One second later Ann changes the material for the next song, and starts it.
            ann.wait_for_timeout(1000)
            ann.select_option("#track-choice", "")
            ann.uncheck("#metronome input[name=on]")
            ann.click("#metronome button[type=submit]")
            poll(
                ann,
                "bbDebug.state.song.track === null && !bbDebug.state.song.metronome.on",
                "no track, no clicks for the next song",
            )
            ann.click("#start")
            poll(ann, "bbDebug.state.song.running && bbDebug.state.song.number === 2", "song 2")
            changed_at = int(lis.evaluate("bbDebug.played.span().end") or 0)
            # Max joins now, 15 s behind too: his page never saw song 1 run, only the state.
            fill_join(max_, "Max", role="spectator")
            for page, who in ((lis, "Lis"), (max_, "Max")):
                wait_until(
                    lambda page=page: (
                        (page.evaluate("bbDebug.played.span().end") or 0) >= end + RATE // 5
                    ),
                    40,
                    f"{who}'s playback to pass the end of song 1",
                    interval_s=0.2,
                )
            played_start, played, _covered = decode_dump(lis.evaluate("bbDebug.played.dump()"))
            max_start, max_played, _ = decode_dump(max_.evaluate("bbDebug.played.dump()"))
            lis_log = lis.evaluate("bbDebug.lyrics")
            lis.screenshot(path=str(output_dir / "lis.png"), full_page=True)
            assert not errors, f"errors in the pages: {errors}"
        finally:
            for b in browsers:
                b.close()

    origin = start  # no count-in
    assert end == origin + track.shape[0]
    assert played_start <= start and played_start + played.shape[0] >= end
    print(
        f"Ann had changed the material and started song 2 when Lis was "
        f"{(changed_at - start) / RATE:.1f} s into song 1 (of {TRACK_S} s)"
    )
    # (Else the test would show nothing: Lis must still have been in song 1.)
    assert changed_at < end - 2 * RATE, "Lis had played song 1 before Ann changed it"

    pulse_gains, click_gains = heard(played, played_start, track, origin, end)
    heard_pulses = sum(g > 0.5 * TRACK_LEVEL for g in pulse_gains)
    heard_clicks = sum(g > 0.5 * CLICK_LEVEL for g in click_gains)
    # The lyric lines: highlighted when Lis's playback reached each cue of song 1.
    lyric_errors = []
    for pos, line in cues:
        seen = [entry for entry in lis_log if entry["line"] == line]
        lyric_errors.append(seen[0]["pos"] - pos if seen else None)
    print(
        f"Lis heard {heard_pulses} of {len(PULSES)} pulses (gains "
        f"{min(pulse_gains):.2f}-{max(pulse_gains):.2f}), {heard_clicks} of "
        f"{len(click_gains)} clicks (gains {min(click_gains):.2f}-{max(click_gains):.2f}); "
        f"lyric lines at {lyric_errors} samples from their cues"
    )
    assert len(click_gains) == 24
    assert heard_pulses == len(PULSES), pulse_gains
    assert heard_clicks == len(click_gains), click_gains
    assert all(e is not None and abs(e) <= round(0.05 * RATE) for e in lyric_errors), lis_log

    # Max: every pulse and click of song 1 from 2.5 s after his playback began (his page
    # fetches the track first) is there, from the state's `song.previous` alone.
    max_pulses, max_clicks = heard(max_played, max_start, track, origin, end)
    begun = max_start + 5 * RATE // 2 - origin
    due_pulses = [g for (a, _b, _hz), g in zip(PULSES, max_pulses, strict=True) if a * RATE > begun]
    due_clicks = [g for k, g in enumerate(max_clicks) if k * RATE // 2 > begun]
    print(
        f"Max began playing {(max_start - origin) / RATE:.1f} s into song 1 and heard "
        f"{sum(g > 0.5 * TRACK_LEVEL for g in due_pulses)} of the {len(due_pulses)} pulses and "
        f"{sum(g > 0.5 * CLICK_LEVEL for g in due_clicks)} of the {len(due_clicks)} clicks due"
    )
    assert due_pulses and due_clicks, "Max joined too late to hear any of song 1"
    assert all(g > 0.5 * TRACK_LEVEL for g in due_pulses), due_pulses
    assert all(g > 0.5 * CLICK_LEVEL for g in due_clicks), due_clicks
