"""Each concern of a room's state works on its own, with no RoomState around it.

The full rules are tested through RoomState (tests/test_room*.py); these show the seams:
a concern's mutators report whether anything changed, and only RoomState counts versions.
"""

from __future__ import annotations

import pytest

from common.constants import SAMPLE_RATE
from common.records import Cue, EndReason, Material, Role, Song
from mixer.console import Console
from mixer.material import Materials
from mixer.members import Members
from mixer.roomconfig import CommandError, RoomConfig
from mixer.songs import Songs
from mixer.taps import Tap, Taps

T0 = 1_700_000_000 * SAMPLE_RATE
CONFIG = RoomConfig()


def _members(*ids: str) -> Members:
    members = Members(CONFIG, {})
    for i, sid in enumerate(ids):
        members.join(sid, sid, Role.SINGER, T0 + i, "")
    return members


def test_members_spread_new_singers_and_report_changes() -> None:
    members = _members("a", "b", "c")
    assert [m.bucket for m in members.by_id.values()] == [1, 2, 3]
    assert members.set_muted("a", True) is True
    assert members.set_muted("a", True) is False
    _, moved = members.join("a", "a", Role.SPECTATOR, T0 + 9, "")
    assert moved and members.by_id["a"].bucket == 1  # the caller settles the lead, then places
    members.place_new(members.by_id["a"])
    assert members.by_id["a"].bucket == CONFIG.spectator_bucket


def test_songs_end_at_the_leaders_position_and_drop_a_leader_leaving() -> None:
    members = _members("a", "b")
    songs = Songs(members, Song())
    songs.take_lead(members.member("a"))
    members.deal(members.member("a"))
    with pytest.raises(CommandError) as info:
        songs.start("b", T0, CONFIG.ring_samples)
    assert info.value.code == "not_leader"
    songs.start("a", T0, CONFIG.ring_samples)
    assert songs.drop_leader(T0 + SAMPLE_RATE) is True
    song = songs.song
    assert (song.running, song.ended, song.leader) == (False, EndReason.LEADER_LEFT, None)
    assert song.end_pos == T0 + SAMPLE_RATE - CONFIG.bucket_delay(0)


def test_console_and_material_need_the_leader() -> None:
    members = _members("a", "b")
    songs = Songs(members, Song(leader="a"))
    console = Console(songs)
    assert console.solo("a", "b", True) is True
    assert console.set_leader_boost("a", 9.0) is True
    assert console.gain(members.member("a")) == pytest.approx(10 ** (9 / 20))
    materials = Materials(songs, Material())
    with pytest.raises(CommandError):
        materials.set_lyrics("b", "la")
    assert materials.set_lyrics("a", "la\nla") is True
    songs.start("a", T0, CONFIG.ring_samples)
    materials.cue_lyrics("a", 1, T0 - members.member("a").delay, T0)
    assert materials.material.cues == [Cue(T0 - members.member("a").delay, 1)]


def test_taps_follow_the_version_they_are_asked_for() -> None:
    members = _members("a")
    taps = Taps(members)
    delay = members.member("a").delay
    assert taps.at(0).taps == [Tap(delay)]
    assert taps.subscribe("rec", delay, "solo", T0, SAMPLE_RATE, Song().rounds) is True
    assert taps.at(0).taps == [Tap(delay)]  # cached for version 0; no solo without a soloist
    members.member("a").soloed = True
    assert taps.at(1).taps == [Tap(delay), Tap(delay, "solo")]
    assert taps.expire(T0 + SAMPLE_RATE) is True
