"""Song material, the pure parts: where track samples and clicks fall, and the room's rules.

Positions are absolute samples (48 kHz). The page mirrors the arithmetic
(gateway/static/metronome.js, backing.js; checked in Chromium by
tests/test_browser_units.py against the same cases).
"""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec import to_builtins

from common import records
from common.commands import (
    AddTrack,
    CueLyrics,
    Envelope,
    SetLyrics,
    SetMetronome,
    SetRecording,
    SetTrack,
    Start,
    encode_envelope,
    parse_client_command,
)
from common.constants import SAMPLE_RATE
from common.events import State
from common.protocol import limits_json
from common.records import Image, Material, Metronome, RecordingOptions, Song, Track
from common.tracks import (
    MAX_TRACK_RATE,
    MIN_TRACK_RATE,
    Click,
    beat_position,
    clicks_between,
    count_in_samples,
    song_end,
    song_origin,
    track_index,
)
from gateway.tracks import UploadError, prepare_track
from mixer.host import RoomHost
from mixer.roomstate import CommandError, RoomConfig, RoomState
from mixer.view import public_state
from tests.uploadfiles import encode, good_track

T0 = 85_236_480_000_000  # some absolute position (about 2026 in samples since the epoch)


def track(samples: int = 10 * SAMPLE_RATE, tid: str = "t-0123456789ab") -> Track:
    return Track(id=tid, name="Song.mp3", samples=samples)


# --- position -> track sample -------------------------------------------------------------


def test_track_sample_zero_plays_at_the_song_start_without_a_count_in() -> None:
    metronome = Metronome(on=True, bpm=120, beats=4)
    origin = song_origin(T0, metronome)
    assert origin == T0
    assert track_index(T0, origin, 1000) == 0
    assert track_index(T0 + 999, origin, 1000) == 999
    assert track_index(T0 - 1, origin, 1000) is None
    assert track_index(T0 + 1000, origin, 1000) is None
    assert song_end(T0, metronome, 1000) == T0 + 1000


def test_a_count_in_bar_puts_the_track_one_bar_later() -> None:
    metronome = Metronome(on=True, bpm=120, beats=3, count_in=True)
    bar = 3 * SAMPLE_RATE // 2  # three beats of 0.5 s
    assert count_in_samples(metronome) == bar
    assert song_origin(T0, metronome) == T0 + bar
    assert track_index(T0 + bar, song_origin(T0, metronome), 10) == 0
    assert song_end(T0, metronome, 10) == T0 + bar + 10
    # A count-in needs the metronome on: off, the song starts at once.
    assert count_in_samples(Metronome(on=False, bpm=120, beats=3, count_in=True)) == 0


# --- clicks ----------------------------------------------------------------------------------


def test_clicks_at_120_bpm_fall_every_half_second_first_beat_accented() -> None:
    metronome = Metronome(on=True, bpm=120, beats=4)
    clicks = clicks_between(T0, T0 + 4 * SAMPLE_RATE, T0, metronome)
    assert [c.pos - T0 for c in clicks] == [k * SAMPLE_RATE // 2 for k in range(8)]
    assert [c.accent for c in clicks] == [True, False, False, False] * 2
    assert [c.beat for c in clicks] == list(range(8))


def test_the_count_in_bar_starts_at_the_song_start_and_is_accented_on_its_first_beat() -> None:
    metronome = Metronome(on=True, bpm=100, beats=3, count_in=True)
    clicks = clicks_between(T0 - SAMPLE_RATE, T0 + 3 * SAMPLE_RATE, T0, metronome)
    period = 60 * SAMPLE_RATE / 100  # 28 800 samples
    assert clicks[0] == Click(T0, -3, True)
    assert [c.beat for c in clicks[:5]] == [-3, -2, -1, 0, 1]
    assert [c.accent for c in clicks[:5]] == [True, False, False, True, False]
    assert clicks[3].pos == song_origin(T0, metronome) == T0 + round(3 * period)


def test_clicks_never_drift_at_an_awkward_bpm() -> None:
    # 60 * 48000 / 97 is not an integer: each beat is rounded from the origin.
    metronome = Metronome(on=True, bpm=97, beats=4)
    far = T0 + 600 * SAMPLE_RATE
    clicks = clicks_between(far, far + 10 * SAMPLE_RATE, T0, metronome)
    for click in clicks:
        exact = T0 + click.beat * 60 * SAMPLE_RATE / 97
        assert abs(click.pos - exact) <= 0.5
        assert click.pos == beat_position(T0, 97, click.beat)


def test_a_bpm_change_between_songs_moves_only_the_next_songs_clicks() -> None:
    first = Metronome(on=True, bpm=120, beats=4)
    second = Metronome(on=True, bpm=90, beats=3, count_in=True)
    end = T0 + 5 * SAMPLE_RATE
    song1 = clicks_between(T0, T0 + 20 * SAMPLE_RATE, T0, first, end_pos=end)
    assert song1[-1].pos < end and len(song1) == 10
    start2 = end + 7 * SAMPLE_RATE
    song2 = clicks_between(end, start2 + 4 * SAMPLE_RATE, start2, second)
    assert song2[0] == Click(start2, -3, True)  # nothing between the songs
    assert song2[1].pos - song2[0].pos == 60 * SAMPLE_RATE // 90


def test_no_clicks_with_the_metronome_off_or_after_the_end() -> None:
    assert clicks_between(T0, T0 + SAMPLE_RATE, T0, Metronome(on=False)) == []
    on = Metronome(on=True, bpm=60)
    assert clicks_between(T0, T0 + 5 * SAMPLE_RATE, T0, on, end_pos=T0) == []


@given(
    bpm=st.floats(min_value=20, max_value=300),
    beats=st.integers(1, 16),
    count_in=st.booleans(),
    lo=st.integers(-10 * SAMPLE_RATE, 60 * SAMPLE_RATE),
    width=st.integers(0, 3 * SAMPLE_RATE),
)
def test_clicks_between_matches_a_naive_scan(
    bpm: float, beats: int, count_in: bool, lo: int, width: int
) -> None:
    metronome = Metronome(on=True, bpm=bpm, beats=beats, count_in=count_in)
    origin = song_origin(T0, metronome)
    naive = [
        Click(beat_position(origin, bpm, k), k, k % beats == 0)
        for k in range(-beats if count_in else 0, 200 * 300)
        if T0 + lo <= beat_position(origin, bpm, k) < T0 + lo + width
        and beat_position(origin, bpm, k) >= T0
    ]
    assert clicks_between(T0 + lo, T0 + lo + width, T0, metronome) == naive


def test_positions_round_half_up_like_the_page() -> None:
    # beat * 2 880 000 / bpm: whole at 192 bpm; exactly k + 0.5 rounds up, as Math.round does.
    assert beat_position(0, 192, 1) == 15_000
    assert beat_position(0, 2880000 / 12.5, 1) == 13  # 12.5 rounds up, as Math.round does
    assert math.floor(-2.5 + 0.5) == -2 and beat_position(0, 2880000 / 2.5, -1) == -2


# --- the room's rules --------------------------------------------------------------------


def room() -> RoomState:
    state = RoomState(RoomConfig())
    state.join("s-lead", "Ann", records.Role.SINGER, T0)
    state.join("s-ben", "Ben", records.Role.SINGER, T0)
    state.request_lead("s-lead", T0)
    return state


def test_only_the_leader_adds_and_chooses_tracks_and_only_between_songs() -> None:
    state = room()
    with pytest.raises(CommandError) as refused:
        state.add_track("s-ben", track())
    assert refused.value.code == "not_leader"
    state.add_track("s-lead", track())
    assert state.song.track == track()
    state.set_track("s-lead", None)
    assert state.song.track is None
    with pytest.raises(CommandError) as unknown:
        state.set_track("s-lead", "t-ffffffffffff")
    assert unknown.value.code == "bad_track"
    state.set_track("s-lead", track().id)
    state.start_song("s-lead", T0)
    for attempt in (
        lambda: state.set_track("s-lead", None),
        lambda: state.add_track("s-lead", track(tid="t-111111111111")),
        lambda: state.set_metronome("s-lead", Metronome(on=True)),
    ):
        with pytest.raises(CommandError) as running:
            attempt()
        assert running.value.code == "song_running"


def test_the_leader_chooses_stems_and_clicks_for_the_recording_between_songs() -> None:
    state = room()
    assert state.song.recording == RecordingOptions()
    with pytest.raises(CommandError) as refused:
        state.set_recording("s-ben", RecordingOptions(stems=True))
    assert refused.value.code == "not_leader"
    version = state.version
    state.set_recording("s-lead", RecordingOptions(stems=True, metronome=True))
    assert state.version > version
    view = to_builtins(public_state("r", state))
    assert view["song"]["recording"] == {"stems": True, "metronome": True}
    # The song record (what the recorder reads) carries it, and it survives a round trip.
    again = records.decode(records.encode(state.song), Song)
    assert again.recording == RecordingOptions(stems=True, metronome=True)
    state.start_song("s-lead", T0)
    with pytest.raises(CommandError) as running:
        state.set_recording("s-lead", RecordingOptions())
    assert running.value.code == "song_running"
    command = parse_client_command({"type": "set_recording", "stems": True})
    assert command == SetRecording(stems=True, metronome=False)
    with pytest.raises(msgspec.ValidationError):
        parse_client_command({"type": "set_recording", "stems": "yes"})


def test_a_room_keeps_three_tracks_and_drops_the_oldest() -> None:
    state = room()
    ids = [f"t-{i:012x}" for i in range(5)]
    for tid in ids:
        state.add_track("s-lead", track(tid=tid))
    assert [t.id for t in state.material.tracks] == ids[2:]
    assert state.discarded == [("track", ids[0]), ("track", ids[1])]
    assert state.song.track is not None and state.song.track.id == ids[4]


def test_the_song_ends_when_the_leaders_position_passes_the_track() -> None:
    state = room()
    state.add_track("s-lead", track(samples=5 * SAMPLE_RATE))
    state.set_metronome("s-lead", Metronome(on=True, bpm=120, beats=4, count_in=True))
    delay = state.member("s-lead").delay
    state.start_song("s-lead", T0 + delay)  # start_pos = T0
    end = T0 + 2 * SAMPLE_RATE + 5 * SAMPLE_RATE  # count-in bar (2 s) + track
    assert not state.end_with_track(end - 1 + delay)
    assert state.song.running
    assert state.end_with_track(end + 3000 + delay)
    assert (state.song.running, state.song.end_pos, state.song.stopped_by) == (False, end, None)
    assert not state.end_with_track(end + 10 * SAMPLE_RATE)


def test_the_host_ends_the_song_with_its_track_and_publishes_it() -> None:
    state = room()
    state.add_track("s-lead", track(samples=SAMPLE_RATE))
    host = RoomHost("r", state, T0)
    delay = state.member("s-lead").delay
    cmd = Envelope(singer="s-lead", cmd=Start())
    host.step([encode_envelope(cmd)], [], T0 + delay)
    assert state.song.running
    host.step([], [], T0 + delay + SAMPLE_RATE - 960)
    assert state.song.running
    out = host.step([], [], T0 + delay + SAMPLE_RATE + 960)
    assert not state.song.running and state.song.end_pos == T0 + SAMPLE_RATE
    published = [e for e in out.events if isinstance(e, State)]
    assert out.persist and published and published[0].state.song.running is False


def test_lyric_cues_follow_the_leaders_position_in_order() -> None:
    state = room()
    state.set_lyrics("s-lead", "one\r\ntwo\nthree")
    assert state.material.lyrics == "one\ntwo\nthree"
    delay = state.member("s-lead").delay
    with pytest.raises(CommandError) as no_song:
        state.cue_lyrics("s-lead", 1, T0, T0 + delay)
    assert no_song.value.code == "no_song"
    state.start_song("s-lead", T0 + delay)
    now = T0 + delay + 2 * SAMPLE_RATE
    state.cue_lyrics("s-lead", 1, T0 + 2 * SAMPLE_RATE - 100, now)
    for pos in (T0 - 1, T0 + 3 * SAMPLE_RATE, T0 + SAMPLE_RATE):  # before start, ahead, backwards
        with pytest.raises(CommandError) as bad:
            state.cue_lyrics("s-lead", 2, pos, now)
        assert bad.value.code == "bad_lyrics"
    with pytest.raises(CommandError):
        state.cue_lyrics("s-ben", 2, T0 + 2 * SAMPLE_RATE, now)
    with pytest.raises(CommandError) as no_line:
        state.cue_lyrics("s-lead", 3, T0 + 2 * SAMPLE_RATE, now)  # three lines: 0, 1, 2
    assert no_line.value.code == "bad_lyrics"
    assert [(c.pos, c.line) for c in state.material.cues] == [(T0 + 2 * SAMPLE_RATE - 100, 1)]
    state.stop_song("s-lead", now)
    state.start_song("s-lead", now + SAMPLE_RATE)
    assert state.material.cues == []  # cues belong to one song
    with pytest.raises(CommandError):
        state.set_lyrics("s-lead", "bell\x07")


def test_images_replace_and_clear_and_their_bytes_are_discarded() -> None:
    state = room()
    first = Image(id="i-000000000001", content_type="image/png", size_bytes=10)
    second = Image(id="i-000000000002", content_type="image/webp", size_bytes=10)
    state.set_image("s-lead", first)
    state.set_image("s-lead", second)
    state.clear_image("s-lead")
    assert state.material.image is None
    assert state.discarded == [("image", first.id), ("image", second.id)]
    with pytest.raises(CommandError):
        state.set_image("s-ben", first)


def test_expired_material_is_forgotten_but_a_running_song_keeps_its_track() -> None:
    state = room()
    state.add_track("s-lead", track())
    state.set_image("s-lead", Image(id="i-000000000001", content_type="image/png"))
    state.start_song("s-lead", T0)
    state.forget_material({track().id}, {"i-000000000001"})
    assert state.material.tracks == [] and state.material.image is None
    assert state.song.track == track()


def test_material_survives_the_records_round_trip_and_shows_in_the_public_state() -> None:
    state = room()
    state.add_track("s-lead", track())
    state.set_metronome("s-lead", Metronome(on=True, bpm=90, beats=3, count_in=True))
    state.set_lyrics("s-lead", "la\nla")
    state.set_image("s-lead", Image(id="i-000000000001", content_type="image/jpeg"))
    song = records.decode(records.encode(state.song), Song)
    material = records.decode(records.encode(state.material), Material)
    again = RoomState(RoomConfig(), state.members, song, material)
    assert again.song.track == track() and again.material.lyrics == "la\nla"
    view = to_builtins(public_state("r", again))
    assert view["song"]["track"]["samples"] == 10 * SAMPLE_RATE
    assert view["song"]["metronome"] == {"on": True, "bpm": 90.0, "beats": 3, "count_in": True}
    assert view["material"]["lyrics"] == "la\nla"
    assert view["material"]["image"]["content_type"] == "image/jpeg"
    assert view["song"]["origin"] is None


def test_browser_commands_validate_their_fields() -> None:
    assert parse_client_command({"type": "set_track", "track": None}) == SetTrack(track=None)
    good = {"type": "set_metronome", "on": True, "bpm": 120, "beats": 4, "count_in": True}
    assert isinstance(parse_client_command(good), SetMetronome)
    for bad in (
        {"type": "set_track", "track": "../etc"},
        {"type": "set_metronome", "on": True, "bpm": 301},
        {"type": "set_metronome", "on": True, "bpm": 19},
        {"type": "set_metronome", "on": True, "beats": 0},
        {"type": "set_lyrics", "text": "x" * 10_001},
        {"type": "cue_lyrics", "line": -1, "pos": T0},
        {"type": "add_track", "track": {"id": "t-0123456789ab", "name": "x", "samples": 1}},
    ):
        with pytest.raises(msgspec.ValidationError):
            parse_client_command(bad)
    assert isinstance(parse_client_command({"type": "set_lyrics", "text": "x" * 10_000}), SetLyrics)
    assert isinstance(parse_client_command({"type": "cue_lyrics", "line": 3, "pos": T0}), CueLyrics)
    # Lyrics of 10 000 four-byte characters still fit in one control entry.
    big = Envelope(singer="s-1", cmd=SetLyrics(text="\U0001f3b5" * 10_000))
    assert len(encode_envelope(big)) < 64 * 1024
    assert isinstance(Envelope(singer="s-1", cmd=AddTrack(track=track())).cmd, AddTrack)


# --- which sample rates an upload may have (docs/protocol.md, *Song material*) ----------


@pytest.mark.parametrize(
    ("rate", "taken"),
    [(7_999, False), (8_000, True), (22_050, True), (192_000, True), (192_001, False)],
)
def test_a_track_may_have_any_rate_from_8_to_192_khz(rate: int, taken: bool) -> None:
    data = encode(good_track(rate), rate, "wav")
    if taken:
        prepared = prepare_track(data)
        assert abs(prepared.samples - 2 * SAMPLE_RATE) <= 2 and prepared.source_rate == rate
    else:
        with pytest.raises(UploadError) as refused:
            prepare_track(data)
        assert refused.value.status == 400
        assert "8000 to 192000 Hz" in refused.value.message


def test_the_constants_name_the_track_rates() -> None:
    limits = limits_json()
    assert (limits["min_track_rate"], limits["max_track_rate"]) == (MIN_TRACK_RATE, MAX_TRACK_RATE)
    assert (MIN_TRACK_RATE, MAX_TRACK_RATE) == (8_000, 192_000)
