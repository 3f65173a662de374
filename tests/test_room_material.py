"""A song's material and end, in the pure room: what it started with stays its own.

DESIGN.md, *Material belongs to its song*: a song keeps the track and the
metronome it started with until the last bucket has played its end; what the
leader chooses meanwhile belongs to the next song. The room's records say
why each song ended. No I/O: ``now`` is an argument.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from msgspec import to_builtins

from common import records
from common.constants import SAMPLE_RATE
from common.protocol import material_message, page_state
from common.records import EndReason, Image, Metronome, Role, SongMaterial, Track
from common.tracks import song_end, song_origin
from mixer.roomstate import CommandError, RoomConfig, RoomState
from mixer.view import public_state
from tests.support import REPO

S = SAMPLE_RATE
T0 = 1_700_000_000 * S
SMALL = RoomConfig(
    ring_samples=40 * S, lead_samples=S // 2, bucket_spacing=S, n_buckets=5, capacity=10
)
HYMN = Track(id="t-0123456789ab", name="Hymn.flac", samples=6 * S)
CANON = Track(id="t-ba9876543210", name="Canon.flac", samples=4 * S)
CLICKS = Metronome(on=True, bpm=120, beats=4, count_in=True)


def led_room() -> RoomState:
    state = RoomState(SMALL)
    state.join("lead", "Ann", Role.SINGER, T0)
    state.join("bob", "Bob", Role.SINGER, T0 + 1)
    state.join("lis", "Lis", Role.SPECTATOR, T0 + 2)
    state.request_lead("lead", T0 + S)
    return state


def song_view(state: RoomState) -> dict[str, object]:
    song = to_builtins(public_state("choir", state))["song"]
    assert isinstance(song, dict)
    return song


def test_a_song_keeps_its_track_and_metronome_after_the_leader_changes_them() -> None:
    state = led_room()
    state.add_track("lead", HYMN)
    state.set_metronome("lead", CLICKS)
    state.start_song("lead", T0 + 2 * S)
    start = state.song.start_pos
    assert start is not None
    played = SongMaterial(track=HYMN, metronome=CLICKS, rounds=records.Rounds())
    assert state.song.started_with == played
    # The song ends with its track, then the leader chooses no track and no clicks.
    end = song_end(start, CLICKS, HYMN.samples)
    assert state.end_with_track(end + state.members["lead"].delay)
    state.set_track("lead", None)
    state.set_metronome("lead", Metronome(on=False))
    assert state.song.track is None and not state.song.metronome.on  # the next song's
    assert state.song.started_with == played  # the last song's, unchanged
    view = song_view(state)
    assert view["started_with"] == {
        "track": {
            "id": HYMN.id,
            "name": HYMN.name,
            "samples": HYMN.samples,
            "bytes": 0,
            "source": "upload",
        },
        "metronome": {"on": True, "bpm": 120.0, "beats": 4, "count_in": True},
    }
    assert view["track"] is None
    # The origin is the song's own (after its count-in), not moved by the new choice.
    assert view["origin"] == song_origin(start, CLICKS) == start + 2 * S
    assert view["ended"] == "track"
    # The next song starts with the new choice; the last one is its previous, material and all.
    state.start_song("lead", end + state.members["lead"].delay + S)
    assert state.song.started_with == SongMaterial(
        track=None, metronome=Metronome(on=False), rounds=records.Rounds()
    )
    assert state.song.previous == records.SongSpan(
        number=1, start_pos=start, end_pos=end, started_with=played, ended=EndReason.TRACK
    )
    previous = song_view(state)["previous"]
    assert isinstance(previous, dict)
    assert previous["origin"] == start + 2 * S and previous["ended"] == "track"
    assert previous["started_with"] == view["started_with"]
    assert song_view(state)["ended"] is None


def test_a_song_ends_with_the_track_it_started_with() -> None:
    """A record whose next-song choice differs from the running song's ends at its own track."""
    state = led_room()
    state.add_track("lead", HYMN)
    state.start_song("lead", T0 + 2 * S)
    start = state.song.start_pos
    assert start is not None
    # Only possible through a stored record (commands refuse it while a song runs).
    state.song.track = CANON
    delay = state.members["lead"].delay
    assert not state.end_with_track(start + CANON.samples + delay)
    assert state.end_with_track(start + HYMN.samples + delay)
    assert state.song.end_pos == start + HYMN.samples


def test_a_record_from_before_plays_the_choice() -> None:
    song = records.Song(running=True, leader=None, start_pos=5, number=1, track=HYMN)
    decoded = records.decode(records.encode(song), records.Song)
    assert decoded.started_with is None and decoded.ended is None
    assert decoded.played() == SongMaterial(track=HYMN)


@pytest.mark.parametrize(
    ("how", "reason", "stopped_by"),
    [
        ("stop", EndReason.STOPPED, "lead"),
        ("halt", EndReason.HALTED, "lead"),
        ("leave", EndReason.LEADER_LEFT, None),
        ("expire", EndReason.LEADER_LEFT, None),
        ("spectate", EndReason.LEADER_LEFT, None),
        ("track", EndReason.TRACK, None),
    ],
)
def test_the_song_says_why_it_ended(how: str, reason: EndReason, stopped_by: str | None) -> None:
    state = led_room()
    state.add_track("lead", HYMN)
    state.start_song("lead", T0 + 2 * S)
    assert song_view(state)["ended"] is None
    now = T0 + 4 * S
    if how == "stop":
        state.stop_song("lead", now)
    elif how == "halt":
        state.halt("lead", now)
    elif how == "leave":
        state.leave("lead", now)
    elif how == "expire":
        state.disconnect("lead", now)
        state.expire(now + 20 * S, 10 * S)
    elif how == "spectate":
        state.join("lead", "Ann", Role.SPECTATOR, now)
    else:
        assert state.end_with_track(T0 + 20 * S)
    assert not state.song.running
    assert (state.song.ended, state.song.stopped_by) == (reason, stopped_by)
    assert song_view(state)["ended"] == reason.value
    # Kept in the record, and by the next song's previous.
    back = records.decode(records.encode(state.song), records.Song)
    assert back.ended is reason


def test_the_last_songs_cues_stay_for_later_buckets() -> None:
    state = led_room()
    state.set_lyrics("lead", "one\ntwo\nthree")
    state.start_song("lead", T0 + 2 * S)
    here = T0 + 3 * S - state.members["lead"].delay
    state.cue_lyrics("lead", 0, here, T0 + 3 * S)
    state.cue_lyrics("lead", 1, here + S, T0 + 4 * S)
    first = list(state.material.cues)
    state.stop_song("lead", T0 + 6 * S)
    version = state.material_version
    state.start_song("lead", T0 + 7 * S)
    assert state.material.cues == [] and state.material.previous_cues == first
    assert state.material_version > version  # persisted
    material = to_builtins(public_state("choir", state))["material"]
    assert material["previous_cues"] == [[c.pos, c.line] for c in first]
    assert material["cues"] == []
    back = records.decode(records.encode(state.material), records.Material)
    assert back.previous_cues == first


def test_a_new_track_never_pushes_out_the_last_songs_track() -> None:
    state = led_room()
    state.add_track("lead", HYMN)
    state.start_song("lead", T0 + 2 * S)
    state.stop_song("lead", T0 + 5 * S)
    others = [Track(id=f"t-{i:012x}", name=f"{i}.flac", samples=S) for i in range(1, 5)]
    for track in others:
        state.add_track("lead", track)
    ids = [t.id for t in state.material.tracks]
    assert HYMN.id in ids and ids[-1] == others[-1].id and len(ids) == 3
    assert ("track", HYMN.id) not in state.discarded


def test_gain_is_silenced_or_within_its_range() -> None:
    state = led_room()
    state.set_gain("lead", "bob", -60.0)
    state.set_gain("lead", "bob", -math.inf)
    assert state.members["bob"].gain_db == -math.inf
    for bad in (-60.5, -1000.0, 12.5, math.nan, math.inf):
        with pytest.raises(CommandError) as info:
            state.set_gain("lead", "bob", bad)
        assert info.value.code == "bad_gain"
    # A member record written before the lower bound (-1000 was stored) reads as silenced.
    raw = records.encode(
        records.Member(singer_id="x", name="X", role=Role.SINGER, delay=S, bucket=0, joined=0)
    )
    old = records.decode(raw, records.Member)
    old.gain_db = -1000.0
    assert records.decode(records.encode(old), records.Member).gain_db == -math.inf


def test_the_documented_room_state_has_the_fields_the_server_sends() -> None:
    """docs/protocol.md's *Room state* and *Room material* examples, key for key, against
    a room whose song has a song before it (so ``previous`` and ``started_with`` are
    filled in): what pages get in ``state`` (no material) and in ``material``."""
    text = (REPO / "docs" / "protocol.md").read_text()

    def example_after(heading: str) -> Any:
        block = text[text.index(heading) :]
        return json.loads(block[block.index("```json") + 7 : block.index("```\n", 10)])

    example = example_after("### Room state")
    material = example_after("### Room material")
    state = led_room()
    state.start_song("lead", T0 + 2 * S)
    state.stop_song("lead", T0 + 5 * S)
    state.add_track("lead", HYMN)
    state.set_image("lead", Image(id="i-0c1d2e3f4a5b", content_type="image/png"))
    state.start_song("lead", T0 + 6 * S)
    view = public_state("choir", state)
    sent = page_state(view)
    message = material_message(view.material_version, view.material)

    def keys_of(value: object, path: str) -> set[str]:
        found: set[str] = set()
        if isinstance(value, dict):
            for key, inner in value.items():
                found.add(f"{path}.{key}")
                if key not in ("members", "tracks"):
                    found |= keys_of(inner, f"{path}.{key}")
        return found

    assert list(example) == list(sent)  # material_version, and no material
    assert keys_of(example["song"], "song") == keys_of(sent["song"], "song")
    assert keys_of(material, "") == keys_of(message, "")


def test_the_cues_of_every_song_still_audible_are_kept() -> None:
    """Three songs within one delay: song 1's cues stay (``older_cues``) while song 1 is
    in ``song.earlier``; they go once it has left the ring."""
    state = led_room()
    state.set_lyrics("lead", "one\ntwo")
    state.start_song("lead", T0 + 2 * S)
    first = state.song.start_pos
    assert first is not None
    state.cue_lyrics("lead", 0, first + S, T0 + 3 * S)
    state.stop_song("lead", T0 + 4 * S)
    state.start_song("lead", T0 + 5 * S)
    second = state.song.start_pos
    assert second is not None
    state.cue_lyrics("lead", 1, second + S // 2, T0 + 6 * S)
    state.stop_song("lead", T0 + 7 * S)
    state.start_song("lead", T0 + 8 * S)
    material = state.material
    assert material.cues == []
    assert material.previous_cues == [records.Cue(second + S // 2, 1)]
    assert material.older_cues == [
        records.SongCues(start_pos=first, cues=[records.Cue(first + S, 0)])
    ]
    view = to_builtins(public_state("choir", state))["material"]
    assert view["older_cues"] == [{"start_pos": first, "cues": [[first + S, 0]]}]
    # Much later song 1 has left the ring: its cues go with it.
    later = T0 + 8 * S + state.config.ring_samples + 10 * S
    state.stop_song("lead", later)
    state.start_song("lead", later + S)
    assert [s.number for s in state.song.earlier] == [3]
    assert state.material.older_cues == []
