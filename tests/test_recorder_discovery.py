"""The recorder's choice of rooms and of what a new take records: pure, no Redis, no sleeps."""

from __future__ import annotations

from common.constants import SAMPLE_RATE
from common.records import Member, Metronome, RecordingOptions, Role, RoomMeta, Song, SongMaterial
from recorder.core import recording_delay
from recorder.discovery import new_take, wanted

S = SAMPLE_RATE
START = 1_000 * S
META = RoomMeta(n_buckets=6, bucket_spacing_s=3.0)


def member(singer: str, delay_s: float, name: str = "") -> Member:
    return Member(
        singer_id=singer,
        name=name or singer,
        role=Role.SINGER,
        delay=round(delay_s * S),
        bucket=None,
        joined=0,
    )


def test_a_running_song_not_yet_recorded_is_wanted() -> None:
    song = Song(running=True, leader="lead", start_pos=START, number=3)
    assert wanted("r", song, set(), set())
    assert not wanted("r", song, set(), {("r", 3, START)})  # finished here: never again
    assert wanted("r", song, set(), {("r", 3, START + 1)})  # another song with that number


def test_a_stopped_or_never_started_song_is_not_wanted() -> None:
    assert not wanted("r", None, set(), set())
    assert not wanted("r", Song(), set(), set())
    stopped = Song(running=False, leader="lead", start_pos=START, end_pos=START + S, number=1)
    assert not wanted("r", stopped, set(), set())


def test_a_take_left_on_disk_is_wanted_even_when_its_room_is_gone() -> None:
    assert wanted("gone", None, {"gone"}, set())
    finished = Song(running=False, start_pos=START, end_pos=START + S, number=1)
    assert wanted("r", finished, {"r"}, {("r", 1, START)})


def test_a_new_take_records_the_songs_own_material_and_the_stems_in_bucket_order() -> None:
    clicks = Metronome(on=True, bpm=100)
    song = Song(
        running=True,
        leader="lead",
        start_pos=START,
        number=2,
        recording=RecordingOptions(stems=True, metronome=True),
        started_with=SongMaterial(metronome=clicks),
    )
    members = [member("c", 9, "Cy"), member("lead", 3, "Lea"), member("b", 6, "Bo")]
    info = new_take("r", song, members, META, created=42.0)
    assert (info.room, info.number, info.start_pos, info.created) == ("r", 2, START, 42.0)
    assert info.leader == "Lea"
    assert info.delay == recording_delay(META, members)
    assert list(info.singers.items()) == [("lead", "Lea"), ("b", "Bo"), ("c", "Cy")]
    assert info.clicks == clicks
    assert info.track_id is None and info.origin is None


def test_a_take_without_stems_or_metronome_names_no_singer_and_no_clicks() -> None:
    song = Song(
        running=True,
        leader="gone",
        start_pos=START,
        number=1,
        started_with=SongMaterial(metronome=Metronome(on=True, bpm=90)),
    )
    info = new_take("r", song, [member("a", 3)], META, created=0.0)
    assert info.singers == {} and info.clicks is None and not info.stems
    assert info.leader == ""
