"""The take's decisions (recorder/core.py), pure: no Redis, no sleeps; ``now`` is passed in.

Each way a song ends (its track, Stop song, its leader leaving, the next song
starting, the room going away), each length (a 3 s false start to the
60-minute cut), and what is silence versus audio still on its way.
"""

from __future__ import annotations

import numpy as np

from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE
from common.records import Member, Metronome, Role, RoomMeta, Song, SongMaterial, SongSpan, Track
from recorder.core import (
    OVERDUE_S,
    Finish,
    Retap,
    SaveInfo,
    TakeAction,
    TakeCore,
    last_bucket_delay,
    played_by,
    recording_delay,
    song_end,
    starts_take,
)
from recorder.take import MAX_SONG_SAMPLES, TakeInfo

S = SAMPLE_RATE
META = RoomMeta(n_buckets=6, bucket_spacing_s=3.0)
START = 1_000 * S
FRAME = OPUS_FRAME_SAMPLES


def member(singer: str, delay_s: float, role: Role = Role.SINGER) -> Member:
    return Member(
        singer_id=singer, name=singer, role=role, delay=round(delay_s * S), bucket=None, joined=0
    )


CHOIR = [member("lead", 3), member("b", 6), member("c", 9)]
"""Buckets 0-2 of six in use (delays 3, 6, 9 s)."""
LISTENER = member("l", 18, Role.SPECTATOR)


def running(number: int = 1, start: int = START) -> Song:
    return Song(running=True, leader="lead", start_pos=start, number=number)


def ended(end: int, number: int = 1, start: int = START) -> Song:
    """The song record once the song stopped (by Stop, its track, or its leader leaving)."""
    return Song(running=False, leader="lead", start_pos=start, end_pos=end, number=number)


def new_take(delay: int = 12 * S, written: int = 0) -> TakeCore:
    return TakeCore(TakeInfo(room="r", number=1, start_pos=START, delay=delay), written)


def feed_tap(core: TakeCore, until_pos: int, now_of: int) -> list[TakeAction]:
    """The tap's windows up to position ``until_pos``, each at the time the tap sends it
    (``pos + delay - lead`` with a 1 s lead), then the time ``now_of``."""
    actions: list[TakeAction] = []
    pos = core.take.frontier // FRAME * FRAME
    while pos < until_pos:
        actions += core.tick(pos + core.delay - S)
        core.place(pos, FRAME)
        pos += FRAME
    return actions + core.tick(now_of)


def test_the_tap_is_the_last_occupied_buckets_not_the_last_possible_one() -> None:
    # Singers in buckets 0-2 of six: one spacing behind the last singer (12 s), not 21 s.
    assert recording_delay(META, CHOIR) == 12 * S
    # A listener in the last bucket hears every singer: its own delay.
    assert recording_delay(META, [*CHOIR, LISTENER]) == 18 * S
    # A singer in the last bucket is heard one spacing later.
    assert recording_delay(META, [*CHOIR, member("z", 18)]) == 21 * S
    # Nobody there (a take carried on in an empty room): the last possible bucket.
    assert recording_delay(META, []) == 18 * S
    assert recording_delay(META, [member("far", 114)]) == 115 * S  # the mixer's limit
    assert last_bucket_delay(META, [3 * S]) == 18 * S


def test_a_song_that_ends_with_its_track_waits_for_the_tap_to_bring_its_end() -> None:
    """Today's bug: the song was over long before a 21 s tap sent its first sample, and
    the take gave up 10 s after it began: a recording with no voices."""
    core = new_take()
    end = START + 12 * S
    assert core.observe(running(), CHOIR, META, START + S // 2) == []
    assert core.observe(ended(end), CHOIR, META, end + S) == [SaveInfo()]
    assert core.take.end_pos == end
    # Nothing of the song has come 10 s after its end: it is still on its way.
    assert core.tick(end + 10 * S) == []
    assert feed_tap(core, end, end + 11 * S) == [Finish(12 * S, 0)]
    assert core.info.end_pos == end


def test_a_three_second_false_start_is_whole() -> None:
    core = new_take()
    end = START + 3 * S
    assert core.observe(ended(end), CHOIR, META, end + S // 2) == [SaveInfo()]
    assert core.tick(end + 8 * S) == []  # the 12 s tap has sent nothing of it yet
    assert feed_tap(core, end + 5 * FRAME, end + 12 * S) == [Finish(3 * S, 0)]
    assert core.take.written == 3 * S


def test_a_song_ended_by_its_leader_leaving_ends_where_the_record_says() -> None:
    # The mixer halts the song when its leader leaves: end_pos set, nobody stopped it.
    song = ended(START + 10 * S)
    song.leader = None
    core = new_take()
    core.observe(song, CHOIR[1:], META, START + 11 * S)
    assert core.take.end_pos == START + 10 * S
    assert feed_tap(core, START + 10 * S, START + 21 * S) == [Finish(10 * S, 0)]


def test_a_song_ended_by_the_next_one_starting_ends_at_its_own_end() -> None:
    info = TakeInfo(room="r", number=1, start_pos=START, delay=12 * S)
    after = running(number=2, start=START + 6 * S)
    after.earlier = [SongSpan(number=1, start_pos=START, end_pos=START + 5 * S)]
    assert song_end(info, after, START) == START + 5 * S
    # Two songs since ours: ours ended by the time the newest started, at the latest.
    assert song_end(info, running(number=3, start=START + 9 * S), START) == START + 9 * S
    assert song_end(info, running(), START) is None  # ours runs
    assert song_end(info, None, START + 7) == START + 7  # the room is gone: keep what we have


def test_three_songs_within_one_delay_each_end_at_their_own_end() -> None:
    """Song 1 (5 s) and song 2 (2 s) both ended before song 3 started, all within the
    18 s tap's delay: each take reads its own song's end from ``earlier``."""
    one = SongSpan(number=1, start_pos=START, end_pos=START + 5 * S)
    two = SongSpan(number=2, start_pos=START + 6 * S, end_pos=START + 8 * S)
    third = running(number=3, start=START + 9 * S)
    third.earlier = [two, one]
    first = TakeInfo(room="r", number=1, start_pos=START, delay=18 * S)
    second = TakeInfo(room="r", number=2, start_pos=START + 6 * S, delay=18 * S)
    assert song_end(first, third, START) == START + 5 * S
    assert song_end(second, third, START) == START + 8 * S
    # Only song 2 kept (song 1 left the ring): song 1 ended by song 2's start at the latest.
    third.earlier = [two]
    assert song_end(first, third, START) == START + 6 * S
    core = new_take(delay=18 * S)
    third.earlier = [two, one]
    assert core.observe(third, CHOIR, META, START + 10 * S) == [SaveInfo()]
    assert core.take.end_pos == START + 5 * S


HYMN = Track(id="t-0123456789ab", name="hymn", samples=10 * S)
CLICKS = Metronome(on=True, bpm=90.0, count_in=True)


def test_a_take_plays_its_own_songs_material_not_the_leaders_next_choice() -> None:
    """Song 1 started with a track and clicks; after it ended the leader removed both
    and started song 2: a take of either gets the material its song started with."""
    own = SongMaterial(track=HYMN, metronome=CLICKS)
    song = ended(START + 5 * S)
    song.started_with = own
    song.track, song.metronome = None, Metronome()  # the leader's choice since
    assert played_by(song, 1, START) == own
    nxt = running(number=2, start=START + 6 * S)
    nxt.started_with = SongMaterial()
    nxt.earlier = [SongSpan(number=1, start_pos=START, end_pos=START + 5 * S, started_with=own)]
    nxt.track = HYMN  # chosen again for song 3: not song 2's
    assert played_by(nxt, 1, START) == own
    assert played_by(nxt, 2, START + 6 * S) == SongMaterial()
    # A record from before songs kept their material: the current choice.
    old = ended(START + 5 * S)
    old.track = HYMN
    assert played_by(old, 1, START) == SongMaterial(track=HYMN)


def test_a_room_that_is_gone_finishes_the_take_as_it_is() -> None:
    core = new_take()
    feed_tap(core, START + 2 * S, START + 13 * S)
    written = core.take.written
    assert core.observe(None, [], META, START + 14 * S) == [SaveInfo(), Finish(written, 0)]


def test_audio_that_never_comes_is_silence_once_the_bucket_has_played_the_end() -> None:
    core = new_take()
    end = START + 30 * S
    feed_tap(core, START + 10 * S, START + 21 * S)  # the mixer died 10 s in
    core.observe(ended(end), CHOIR, META, end + S)
    deadline = end + 12 * S + round(OVERDUE_S * S)
    assert core.tick(deadline - 1) == []
    assert core.tick(deadline) == [Finish(30 * S, 20 * S)]
    assert core.tick(deadline + S) == []  # once


def test_a_resumed_take_goes_on_from_what_is_on_disk() -> None:
    core = new_take(written=4 * S)
    assert core.take.frontier == START + 4 * S
    assert core.place(START, 4 * S + FRAME).silence == 0  # the successor re-reads: skipped
    assert core.take.written == 4 * S + FRAME


def test_the_tap_follows_a_later_bucket_and_never_goes_back() -> None:
    core = new_take()
    assert core.observe(running(), [*CHOIR, LISTENER], META, START + S) == [
        Retap(18 * S),
        SaveInfo(),
    ]
    # The listener leaves: the take keeps the later tap (an earlier one would skip audio).
    assert core.observe(running(), CHOIR, META, START + 2 * S) == []
    assert core.delay == 18 * S


def test_a_refused_tap_falls_back_and_is_not_asked_again() -> None:
    core = new_take(delay=21 * S)
    assert core.refused(18 * S) == [Retap(18 * S), SaveInfo()]
    assert core.observe(running(), [*CHOIR, member("z", 18)], META, START + S) == []
    assert core.delay == 18 * S


def test_a_song_is_cut_at_sixty_minutes_even_when_nothing_ends_it() -> None:
    core = new_take()
    limit = START + MAX_SONG_SAMPLES
    assert core.observe(running(), CHOIR, META, limit) == []
    [finish] = core.tick(limit + 12 * S + round(OVERDUE_S * S))
    assert finish == Finish(MAX_SONG_SAMPLES, MAX_SONG_SAMPLES)


def test_a_sixty_minute_concert_whose_tap_keeps_up_finishes_when_its_end_arrives() -> None:
    core = new_take()
    core.take.written = MAX_SONG_SAMPLES - 10 * S  # as if the tap had sent the first 59:50
    assert core.observe(running(), CHOIR, META, START + MAX_SONG_SAMPLES) == []
    placed = core.place(START + MAX_SONG_SAMPLES - 10 * S, 20 * S)
    assert (placed.silence, placed.hi - placed.lo) == (0, 10 * S)
    assert core.tick(START + MAX_SONG_SAMPLES + S) == [Finish(MAX_SONG_SAMPLES, 0)]


def test_silence_in_the_tap_is_recorded_as_it_came() -> None:
    # A song nobody sang in: the tap sends zeros, which are the recording (not "missing").
    core = new_take()
    core.observe(ended(START + 2 * S), CHOIR, META, START + 3 * S)
    for pos in range(START, START + 2 * S, FRAME):
        assert core.place(pos, FRAME).hi == FRAME
    assert core.tick(START + 13 * S) == [Finish(2 * S, 0)]
    assert np.isclose(core.take.written, 2 * S)


def test_which_songs_get_a_take() -> None:
    assert starts_take(running(), set(), None, finished=False)
    assert not starts_take(running(), {1}, 1, finished=False)  # it has one
    assert not starts_take(running(), set(), None, finished=True)  # recorded already
    # A song that started and ended between two looks, after the take of the one before.
    assert starts_take(ended(START + S, number=2), {1}, 1, finished=False)
    assert not starts_take(ended(START + S, number=1), set(), None, finished=False)
    assert not starts_take(None, set(), None, finished=False)
