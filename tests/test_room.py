"""The room: its model (members, buckets, song) and its live audio (ring + taps).

The audio tests drive a real :class:`Ring` with synthetic tones at real-time
pace: every singer sings positions [p, p + 4800) and their chunk reaches the
mixer at p + 4800 + their delay + an uplink latency, while the driver ticks
every 20 ms. Expected tap windows are computed sample-exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import to_builtins

from common import records
from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE
from common.errors import BrigadeError, ValidationError
from mixer.room import (
    AHEAD_TOLERANCE,
    MAX_FRAMES_PER_TICK,
    ApplyStatus,
    CommandError,
    Member,
    Role,
    RoomConfig,
    RoomMixer,
    RoomState,
    Song,
    Tap,
    TapOutput,
)
from mixer.view import public_state

SR = SAMPLE_RATE
FRAME = OPUS_FRAME_SAMPLES
T0 = 1_700_000_000 * SR  # a frame-aligned "now", like a real clock
CHUNK = 4800
UPLINK = 2400

# Small and quick: buckets at 1, 2, 3, 4, 5 s; lead 0.5 s; ring 20 s.
SMALL = RoomConfig(
    ring_samples=20 * SR, lead_samples=SR // 2, bucket_spacing=SR, n_buckets=5, capacity=10
)
S = SR  # one second, for readability


def command_code(call: Callable[[], object]) -> str:
    with pytest.raises(CommandError) as info:
        call()
    return info.value.code


def room(config: RoomConfig = SMALL, /, **roles: Role) -> RoomState:
    """A room whose members joined in keyword order, one second apart."""
    state = RoomState(config)
    for i, (sid, role) in enumerate(roles.items()):
        state.join(sid, sid.upper(), role, T0 + i * S)
    return state


# --- config -----------------------------------------------------------------------------------


def test_default_config_matches_the_design() -> None:
    c = RoomConfig()
    assert c.ring_samples == 120 * SR
    assert c.lead_samples == SR
    assert [c.bucket_delay(i) for i in range(c.n_buckets)] == [3 * S * (i + 1) for i in range(6)]
    assert c.min_delay == SR + SR // 4
    assert c.max_delay == 115 * SR


@pytest.mark.parametrize(
    "changes",
    [
        {"ring_samples": 20 * SR + 1},  # not a multiple of 128
        {"ring_samples": 0},
        {"lead_samples": 0},
        {"bucket_spacing": 0},
        {"n_buckets": 2},
        {"capacity": 0},
        {"lead_samples": SR},  # bucket 0 (1 s) below lead + 0.25 s
        {"n_buckets": 16},  # last bucket (16 s) beyond ring - 5 s
        {"n_buckets": 5.0},
        {"capacity": True},
    ],
)
def test_config_rejects_broken_invariants(changes: dict[str, object]) -> None:
    values: dict[str, object] = {
        "ring_samples": 20 * SR,
        "lead_samples": SR // 2,
        "bucket_spacing": SR,
        "n_buckets": 5,
        "capacity": 10,
    }
    values.update(changes)
    with pytest.raises(ValidationError):
        RoomConfig(**values)  # type: ignore[arg-type]


# --- membership -------------------------------------------------------------------------------


def test_new_singers_fill_the_least_populated_middle_bucket_lowest_first() -> None:
    state = RoomState(RoomConfig())  # buckets 0..5: singers in 1..4
    placed = [state.join(f"s{i}", f"S{i}", Role.SINGER, T0 + i).bucket for i in range(6)]
    assert placed == [1, 2, 3, 4, 1, 2]
    spectator = state.join("watch", "Watcher", Role.SPECTATOR, T0 + 9)
    assert spectator.bucket == 5
    assert spectator.delay == RoomConfig().bucket_delay(5)
    assert state.buckets() == [[], ["s0", "s4"], ["s1", "s5"], ["s2"], ["s3"], ["watch"]]
    # A disconnected singer does not hold a bucket's population up.
    state.disconnect("s2", T0 + 10)
    assert state.join("s6", "S6", Role.SINGER, T0 + 11).bucket == 3


def test_join_validates_identity() -> None:
    state = RoomState(SMALL)
    with pytest.raises(ValidationError):
        state.join("bad id!", "Ann", Role.SINGER, T0)
    with pytest.raises(ValidationError):
        state.join("ann", "   ", Role.SINGER, T0)
    with pytest.raises(ValidationError):
        state.join("ann", "Ann", "conductor", T0)  # type: ignore[arg-type]
    assert state.members == {}
    assert state.join("ann", "  Ann ", Role.SINGER, T0).name == "Ann"


def test_capacity_counts_connected_members() -> None:
    state = room(RoomConfig(capacity=2), a=Role.SINGER, b=Role.SPECTATOR)
    assert command_code(lambda: state.join("c", "C", Role.SINGER, T0 + 5 * S)) == "room_full"
    assert "c" not in state.members
    state.join("b", "B again", Role.SPECTATOR, T0 + 5 * S)  # already connected: no new seat
    state.disconnect("a", T0 + 6 * S)
    state.join("c", "C", Role.SINGER, T0 + 7 * S)
    # a's seat was taken while they were away.
    assert command_code(lambda: state.join("a", "A", Role.SINGER, T0 + 8 * S)) == "room_full"
    assert not state.members["a"].connected


def test_reconnect_keeps_the_place_and_updates_the_name() -> None:
    state = room(a=Role.SINGER, b=Role.SINGER)
    state.set_delay("a", 123_456)
    state.join_bucket("b", 3)
    state.disconnect("a", T0 + 10 * S)
    state.disconnect("b", T0 + 10 * S)
    assert state.members["a"].disconnected_at == T0 + 10 * S
    for i in range(3):  # other people fill the buckets meanwhile
        state.join(f"x{i}", "X", Role.SINGER, T0 + 11 * S)
    a = state.join("a", "Ann B", Role.SINGER, T0 + 12 * S)
    b = state.join("b", "B", Role.SINGER, T0 + 12 * S)
    assert (a.delay, a.bucket, a.name, a.connected, a.disconnected_at) == (
        123_456,
        None,
        "Ann B",
        True,
        None,
    )
    assert (b.delay, b.bucket, b.joined) == (SMALL.bucket_delay(3), 3, T0 + S)


def test_reconnect_with_another_role_is_placed_for_that_role() -> None:
    state = room(lead=Role.SINGER, b=Role.SINGER)
    state.request_lead("lead", T0 + 5 * S)
    state.start_song("lead", T0 + 6 * S)
    state.disconnect("lead", T0 + 7 * S)
    m = state.join("lead", "Lead", Role.SPECTATOR, T0 + 8 * S)
    assert (m.role, m.bucket) == (Role.SPECTATOR, SMALL.spectator_bucket)
    assert state.song.leader is None
    assert not state.song.running
    assert state.song.end_pos == T0 + 8 * S - SMALL.bucket_delay(0)
    m = state.join("lead", "Lead", Role.SINGER, T0 + 9 * S)
    assert m.role is Role.SINGER
    assert m.bucket == 2  # b is in bucket 1


def test_disconnect_and_expire_after_the_grace() -> None:
    state = room(a=Role.SINGER, b=Role.SINGER, c=Role.SINGER)
    state.disconnect("a", T0 + 10 * S)
    state.disconnect("b", T0 + 12 * S)
    state.disconnect("b", T0 + 13 * S)  # already gone: the first time counts
    grace = 30 * S
    assert state.expire(T0 + 10 * S + grace, grace) == []
    assert state.expire(T0 + 10 * S + grace + 1, grace) == ["a"]
    assert sorted(state.members) == ["b", "c"]
    assert state.expire(T0 + 100 * S, grace) == ["b"]
    assert list(state.members) == ["c"]  # connected members never expire
    assert command_code(lambda: state.disconnect("zed", T0)) == "unknown_singer"


def test_leader_expiring_halts_the_song_and_clears_the_lead() -> None:
    state = room(lead=Role.SINGER, b=Role.SINGER)
    state.request_lead("lead", T0 + 5 * S)
    state.start_song("lead", T0 + 6 * S)
    state.disconnect("lead", T0 + 7 * S)
    assert state.song.running  # a disconnect alone keeps the song going
    assert state.expire(T0 + 20 * S, 10 * S) == ["lead"]
    assert state.song == Song(
        running=False,
        leader=None,
        start_pos=T0 + 6 * S - SMALL.bucket_delay(0),
        end_pos=T0 + 20 * S - SMALL.bucket_delay(0),
        number=1,
        stopped_by=None,  # nobody stopped it: its leader left
        started_with=records.SongMaterial(rounds=records.Rounds()),
        ended=records.EndReason.LEADER_LEFT,
    )


def test_leave_removes_at_once() -> None:
    state = room(lead=Role.SINGER, b=Role.SINGER)
    state.request_lead("lead", T0 + 5 * S)
    state.start_song("lead", T0 + 6 * S)
    state.leave("b", T0 + 7 * S)
    assert "b" not in state.members
    assert state.song.running
    state.leave("lead", T0 + 8 * S)
    assert state.members == {}
    assert (state.song.running, state.song.leader) == (False, None)
    assert command_code(lambda: state.leave("lead", T0 + 9 * S)) == "unknown_singer"


# --- leading and songs ------------------------------------------------------------------------


def test_request_lead_reassigns_everyone_in_join_order() -> None:
    state = room(
        a=Role.SINGER,
        watch=Role.SPECTATOR,
        b=Role.SINGER,
        c=Role.SINGER,
        d=Role.SINGER,
        e=Role.SINGER,
    )
    state.set_delay("a", 100_000)
    state.join_bucket("watch", 2)
    state.request_lead("c", T0 + 10 * S)
    assert state.song.leader == "c"
    buckets = {sid: m.bucket for sid, m in state.members.items()}
    # a, b, d, e dealt round robin over buckets 1..3; c in bucket 0; spectator last.
    assert buckets == {"c": 0, "a": 1, "b": 2, "d": 3, "e": 1, "watch": 4}
    assert all(m.delay == SMALL.bucket_delay(m.bucket or 0) for m in state.members.values())
    assert state.taps() == [Tap(SMALL.bucket_delay(i)) for i in range(5)]
    # Someone else may take the lead between songs; the old leader is dealt out.
    state.request_lead("e", T0 + 11 * S)
    assert state.members["e"].bucket == 0
    assert state.members["c"].bucket == 3


def test_request_lead_deals_by_join_time_not_by_storage_order() -> None:
    # Loaded from Redis, the hash order is arbitrary: "joined" decides.
    members = {
        sid: Member(
            singer_id=sid,
            name=sid.upper(),
            role=Role.SINGER,
            delay=SMALL.bucket_delay(1),
            bucket=1,
            joined=joined,
        )
        for sid, joined in [("late", T0 + 9), ("lead", T0), ("mid", T0 + 5), ("early", T0 + 1)]
    }
    state = RoomState(SMALL, members)
    state.request_lead("lead", T0 + 10)
    assert state.buckets() == [["lead"], ["early"], ["mid"], ["late"], []]


def test_request_lead_refusals() -> None:
    state = room(lead=Role.SINGER, watch=Role.SPECTATOR, b=Role.SINGER)
    assert command_code(lambda: state.request_lead("watch", T0)) == "spectator_cannot_lead"
    assert command_code(lambda: state.request_lead("nobody", T0)) == "unknown_singer"
    state.request_lead("lead", T0)
    state.set_leader_boost("lead", 0.0)  # unity gain: heard sample-exactly
    state.start_song("lead", T0 + S)
    assert command_code(lambda: state.request_lead("b", T0 + 2 * S)) == "song_running"
    assert state.song.leader == "lead"


def test_start_and_stop_song() -> None:
    state = room(lead=Role.SINGER, b=Role.SINGER)
    assert command_code(lambda: state.start_song("lead", T0)) == "not_leader"
    state.request_lead("lead", T0 + S)
    d0 = SMALL.bucket_delay(0)
    assert command_code(lambda: state.start_song("b", T0 + 2 * S)) == "not_leader"
    assert command_code(lambda: state.stop_song("lead", T0 + 2 * S)) == "no_song"
    assert command_code(lambda: state.start_song("zed", T0 + 2 * S)) == "unknown_singer"
    state.start_song("lead", T0 + 2 * S)
    assert (state.song.running, state.song.start_pos, state.song.end_pos) == (
        True,
        T0 + 2 * S - d0,
        None,
    )
    assert (state.song.leader, state.song.number) == ("lead", 1)
    assert command_code(lambda: state.start_song("lead", T0 + 3 * S)) == "song_running"
    assert command_code(lambda: state.stop_song("b", T0 + 3 * S)) == "not_leader"
    state.stop_song("lead", T0 + 4 * S)
    assert (state.song.running, state.song.start_pos, state.song.end_pos) == (
        False,
        T0 + 2 * S - d0,
        T0 + 4 * S - d0,
    )
    assert (state.song.stopped_by, state.song.number) == ("lead", 1)
    state.start_song("lead", T0 + 5 * S)
    assert (state.song.running, state.song.start_pos, state.song.number) == (
        True,
        T0 + 5 * S - d0,
        2,
    )
    assert state.song.stopped_by is None


def test_only_the_leader_may_halt() -> None:
    state = room(lead=Role.SINGER, b=Role.SINGER, watch=Role.SPECTATOR)
    state.request_lead("lead", T0)
    state.set_leader_boost("lead", 0.0)  # unity gain: heard sample-exactly
    version = state.version
    state.halt("lead", T0 + S)  # no song: nothing happens
    assert state.version == version
    state.start_song("lead", T0 + 2 * S)
    assert command_code(lambda: state.halt("watch", T0 + 3 * S)) == "not_leader"
    assert command_code(lambda: state.halt("b", T0 + 3 * S)) == "not_leader"
    assert state.song.running and state.song.stopped_by is None
    assert command_code(lambda: state.halt("zed", T0 + 3 * S)) == "unknown_singer"
    state.halt("lead", T0 + 3 * S)
    assert not state.song.running
    assert state.song.end_pos == T0 + 3 * S - SMALL.bucket_delay(0)
    assert state.song.stopped_by == "lead"
    state.start_song("lead", T0 + 4 * S)
    assert state.song.stopped_by is None


def test_stopped_by_round_trips_and_is_public() -> None:
    song = Song(running=False, leader="lead", start_pos=10, end_pos=20, number=3, stopped_by="lead")
    assert records.decode(records.encode(song), Song) == song
    # Records written before the field existed still load.
    legacy = {k: v for k, v in msgspec.to_builtins(song).items() if k != "stopped_by"}
    assert records.decode(msgspec.msgpack.encode(legacy), Song).stopped_by is None
    state = room(lead=Role.SINGER)
    state.request_lead("lead", T0)
    state.start_song("lead", T0 + S)
    state.stop_song("lead", T0 + 2 * S)
    assert to_builtins(public_state("r", state))["song"]["stopped_by"] == "lead"


# --- places -----------------------------------------------------------------------------------


def test_join_bucket() -> None:
    state = room(a=Role.SINGER, watch=Role.SPECTATOR)
    state.join_bucket("a", 0)
    assert (state.members["a"].bucket, state.members["a"].delay) == (0, SMALL.bucket_delay(0))
    state.join_bucket("watch", 2)  # anyone may sit anywhere
    assert state.members["watch"].delay == SMALL.bucket_delay(2)
    bad_buckets: list[Any] = [-1, 5, True, "2", 1.0]
    for bad in bad_buckets:
        with pytest.raises(CommandError) as info:
            state.join_bucket("a", bad)
        assert info.value.code == "bad_bucket"
    assert command_code(lambda: state.join_bucket("zed", 1)) == "unknown_singer"
    assert state.members["a"].bucket == 0


def test_set_delay() -> None:
    state = room(a=Role.SINGER, b=Role.SINGER)
    state.set_delay("a", SMALL.min_delay)
    assert (state.members["a"].delay, state.members["a"].bucket) == (SMALL.min_delay, None)
    state.set_delay("b", SMALL.max_delay)
    assert state.taps() == [Tap(SMALL.min_delay), Tap(SMALL.max_delay)]
    bad_delays: list[Any] = [SMALL.min_delay - 1, SMALL.max_delay + 1, float(SR * 2), True, None]
    for bad in bad_delays:
        with pytest.raises(CommandError) as info:
            state.set_delay("a", bad)
        assert info.value.code == "bad_delay"
    assert command_code(lambda: state.set_delay("zed", SR * 2)) == "unknown_singer"
    assert state.members["a"].delay == SMALL.min_delay
    assert state.buckets() == [[] for _ in range(5)]  # custom delays sit in no bucket


def test_set_muted_and_version_counts_changes_only() -> None:
    state = room(a=Role.SINGER)
    v = state.version
    state.set_muted("a", True)
    assert state.members["a"].muted
    assert state.version == v + 1
    state.set_muted("a", True)
    state.join_bucket("a", state.members["a"].bucket or 0)
    assert state.version == v + 1
    state.set_muted("a", False)
    assert state.version == v + 2
    assert command_code(lambda: state.set_muted("zed", True)) == "unknown_singer"


def test_taps_are_the_distinct_delays_of_connected_members() -> None:
    state = room(a=Role.SINGER, b=Role.SINGER, c=Role.SINGER, d=Role.SINGER, w=Role.SPECTATOR)
    assert state.taps() == [Tap(SMALL.bucket_delay(i)) for i in (1, 2, 3, 4)]
    state.disconnect("c", T0 + 9 * S)
    assert state.taps() == [Tap(SMALL.bucket_delay(i)) for i in (1, 2, 4)]
    state.set_delay("b", 77_777)
    assert state.taps() == [Tap(d) for d in (77_777, SMALL.bucket_delay(1), SMALL.bucket_delay(4))]


@settings(max_examples=60, deadline=None)
@given(roles=st.lists(st.sampled_from([Role.SINGER, Role.SPECTATOR]), min_size=1, max_size=30))
def test_spreading_is_even(roles: list[Role]) -> None:
    config = RoomConfig(capacity=100)
    state = RoomState(config)
    for i, role in enumerate(roles):
        state.join(f"m{i}", "M", role, T0 + i)
    singer_buckets = range(1, config.n_buckets - 1)

    def populations() -> list[int]:
        b = state.buckets()
        return [
            len([s for s in b[i] if state.members[s].role is Role.SINGER]) for i in singer_buckets
        ]

    assert max(populations()) - min(populations()) <= 1
    assert all(state.members[s].role is Role.SPECTATOR for s in state.buckets()[-1])
    singers = [f"m{i}" for i, r in enumerate(roles) if r is Role.SINGER]
    if singers:
        state.request_lead(singers[-1], T0 + 100)
        others = singers[:-1]
        assert [state.members[s].bucket for s in others] == [1 + i % 4 for i in range(len(others))]
        assert max(populations()) - min(populations()) <= 1


# --- persistence ------------------------------------------------------------------------------


def test_state_round_trips_through_its_records() -> None:
    state = room(lead=Role.SINGER, b=Role.SINGER, w=Role.SPECTATOR)
    state.request_lead("lead", T0 + 5 * S)
    state.start_song("lead", T0 + 6 * S)
    state.set_delay("b", 99_999)
    state.set_muted("w", True)
    state.set_gain("lead", "b", -math.inf)
    state.solo("lead", "lead", True)
    state.disconnect("w", T0 + 7 * S)
    state.members["b"].late = 3
    state.members["b"].level_db = -12.5
    members = {sid: records.decode(records.encode(m), Member) for sid, m in state.members.items()}
    song = records.decode(records.encode(state.song), Song)
    back = RoomState(SMALL, members, song)
    assert back.members == state.members
    assert back.song == state.song
    assert back.members["b"].gain_db == -math.inf


def good_member() -> dict[str, Any]:
    return msgspec.to_builtins(  # type: ignore[no-any-return]
        Member(singer_id="ann", name="Ann", role=Role.SINGER, delay=SR * 2, bucket=1, joined=T0)
    )


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        [],
        "member",
        {},
        {**good_member(), "role": "conductor"},
        {**good_member(), "singer_id": "has space"},
        {**good_member(), "name": ""},
        {**good_member(), "delay": "2s"},
        {**good_member(), "delay": -5},
        {**good_member(), "delay": True},
        {**good_member(), "bucket": 1.5},
        {**good_member(), "muted": 1},
        {**good_member(), "level_db": float("nan")},
        {**good_member(), "late": -1},
        {**good_member(), "gain_db": 13.0},
        {**good_member(), "mix": "monitor"},
        {k: v for k, v in good_member().items() if k != "joined"},
    ],
)
def test_member_record_rejects_garbage(garbage: object) -> None:
    with pytest.raises(ValidationError):
        records.decode(msgspec.msgpack.encode(garbage), Member)


@pytest.mark.parametrize(
    "garbage",
    [
        [],
        {"running": True},  # running without start_pos
        {"end_pos": 5},
        {"leader": 7},
        {"number": -1},
        {"rounds": {"bpm": 10}},
        {"rounds": {"repeats": 21}},
        {"leader_boost_db": 40},
        {"stopped_by": "no spaces allowed"},
        "playing",
    ],
)
def test_song_record_rejects_garbage(garbage: object) -> None:
    with pytest.raises(ValidationError):
        records.decode(msgspec.msgpack.encode(garbage), Song)


def test_members_stored_under_another_id_are_refused() -> None:
    member = records.decode(msgspec.msgpack.encode(good_member()), Member)
    with pytest.raises(ValidationError):
        RoomState(SMALL, {"bob": member})


def test_loaded_state_fits_the_config() -> None:
    # Written by a room with 6 buckets of 3 s and a 120 s ring, loaded into SMALL.
    members = {
        "a": Member(
            singer_id="a", name="A", role=Role.SPECTATOR, delay=18 * S, bucket=5, joined=T0
        ),
        "b": Member(
            singer_id="b", name="B", role=Role.SINGER, delay=100 * S, bucket=None, joined=T0
        ),
        "c": Member(singer_id="c", name="C", role=Role.SINGER, delay=6 * S, bucket=1, joined=T0),
    }
    state = RoomState(SMALL, members, Song(leader="gone"))
    assert (state.members["a"].bucket, state.members["a"].delay) == (4, SMALL.bucket_delay(4))
    assert state.members["b"].delay == SMALL.max_delay
    assert state.members["c"].delay == SMALL.bucket_delay(1)
    assert state.song.leader is None


def test_command_error_carries_a_code() -> None:
    err = CommandError("no_song", "no song is running")
    assert isinstance(err, BrigadeError)
    assert (err.code, err.message, str(err)) == (
        "no_song",
        "no song is running",
        "no song is running",
    )


# --- audio ------------------------------------------------------------------------------------


def tone(freq: float, start: int, n: int) -> npt.NDArray[np.float32]:
    """A sine at ``freq`` for absolute positions [start, start + n) (phase fixed by position)."""
    t = np.arange(start - T0, start - T0 + n, dtype=np.float64) / SR
    return (0.25 * np.sin(2 * np.pi * freq * t + 0.3)).astype(np.float32)


@dataclass
class Voice:
    """A singer singing ``freq`` for positions [first, last), chunk by chunk."""

    singer_id: str
    freq: float
    first: int
    last: int
    pos: int = field(init=False)

    def __post_init__(self) -> None:
        self.pos = self.first


@dataclass
class Session:
    """Drives a mixer at real-time pace: 20 ms ticks, chunks arriving as they would."""

    mixer: RoomMixer
    now: int
    voices: list[Voice] = field(default_factory=list)
    commands: list[tuple[int, Callable[[int], None]]] = field(default_factory=list)
    outputs: dict[int, list[TapOutput]] = field(default_factory=dict)
    statuses: dict[str, list[ApplyStatus]] = field(default_factory=dict)

    def run(self, until: int) -> None:
        self.commands.sort(key=lambda c: c[0])
        while self.now < until:
            self.now += FRAME
            while self.commands and self.commands[0][0] <= self.now:
                at, command = self.commands.pop(0)
                command(at)
            for v in self.voices:
                delay = self.mixer.state.members[v.singer_id].delay
                while v.pos < v.last and v.pos + CHUNK + delay + UPLINK <= self.now:
                    status = self.mixer.apply(
                        v.singer_id, v.pos, tone(v.freq, v.pos, CHUNK), self.now
                    )
                    self.statuses.setdefault(v.singer_id, []).append(status)
                    v.pos += CHUNK
            for out in self.mixer.tick(self.now):
                previous = self.outputs.setdefault(out.delay, [])
                assert out.start % FRAME == 0
                assert out.samples.dtype == np.float32
                assert out.samples.shape[0] % FRAME == 0
                if previous:  # steady state: windows follow each other without gaps
                    assert out.start == previous[-1].start + previous[-1].samples.shape[0]
                previous.append(out)

    def heard(self, delay: int, lo: int, hi: int) -> npt.NDArray[np.float32]:
        """What tap ``delay`` emitted for positions [lo, hi)."""
        outs = self.outputs[delay]
        start = outs[0].start
        joined = np.concatenate([o.samples for o in outs])
        assert start <= lo
        assert hi <= start + joined.shape[0]
        return joined[lo - start : hi - start]


def amplitude(x: npt.NDArray[np.float32], freq: float) -> float:
    """Amplitude of ``freq`` in ``x`` (a sine of amplitude a gives about a)."""
    t = np.arange(x.shape[0]) / SR
    return float(2 * abs(np.mean(x * np.exp(-2j * np.pi * freq * t))))


def chain_room(*followers: tuple[str, int]) -> RoomState:
    """A leader in bucket 0 and followers in the given buckets."""
    state = room(lead=Role.SINGER, **{sid: Role.SINGER for sid, _ in followers})
    state.request_lead("lead", T0)
    state.set_leader_boost("lead", 0.0)  # unity gain: heard sample-exactly
    for sid, bucket in followers:
        state.join_bucket(sid, bucket)
    return state


def test_each_bucket_hears_exactly_the_earlier_ones_inside_the_song() -> None:
    state = chain_room(("f1", 1), ("f2", 2))
    d0, d1, d2 = (SMALL.bucket_delay(i) for i in range(3))
    session = Session(RoomMixer("choir", state, T0), T0)
    start_at, stop_at = T0 + 3 * S // 2 + 1234, T0 + 3 * S + 777
    start_pos, end_pos = start_at - d0, stop_at - d0
    # The leader chats before the song and after it; f1 comes in half a second late.
    session.voices = [
        Voice("lead", 440.0, T0, T0 + 4 * S),
        Voice("f1", 660.0, T0 + S, T0 + 4 * S),
        Voice("f2", 880.0, T0, T0 + 4 * S),
    ]
    session.commands = [
        (start_at, lambda now: state.start_song("lead", now)),
        (stop_at, lambda now: state.stop_song("lead", now)),
    ]
    session.run(T0 + 6 * S)
    assert (state.song.start_pos, state.song.end_pos) == (start_pos, end_pos)

    lo, hi = T0, T0 + 7 * S // 2
    lead = tone(440.0, lo, hi - lo)
    f1 = tone(660.0, lo, hi - lo)
    song = np.zeros(hi - lo, dtype=bool)
    song[start_pos - lo : end_pos - lo] = True
    both = song & (np.arange(lo, hi) >= T0 + S)

    # Bucket 1 hears the leader alone, sample-exactly, gain sqrt(3/3) = 1, and only in the song.
    heard1 = session.heard(d1, lo, hi)
    np.testing.assert_array_equal(heard1, np.where(song, lead, np.float32(0)))
    nonzero = np.flatnonzero(heard1)
    assert (lo + nonzero[0], lo + nonzero[-1] + 1) == (start_pos, end_pos)
    inside = heard1[start_pos - lo : end_pos - lo]
    assert amplitude(inside, 440.0) > 0.2
    assert amplitude(inside, 660.0) < 1e-3

    # Bucket 2 hears both where they overlap, normalised for two voices.
    gain2 = np.float32(math.sqrt(3 / 4))
    expected2 = np.where(both, (lead + f1) * gain2, np.where(song, lead, np.float32(0)))
    np.testing.assert_allclose(session.heard(d2, lo, hi), expected2, rtol=0, atol=1e-7)
    assert amplitude(session.heard(d2, T0 + S, end_pos), 880.0) < 1e-3

    # The leader hears nobody.
    assert not session.heard(d0, lo, hi).any()

    # Chatter outside the song was dropped, counted, and not held against anyone.
    lead_statuses = session.statuses["lead"]
    assert ApplyStatus.NO_SONG in lead_statuses
    assert set(lead_statuses) == {ApplyStatus.OK, ApplyStatus.NO_SONG}
    assert set(session.statuses["f1"]) <= {ApplyStatus.OK, ApplyStatus.NO_SONG}
    counters = session.mixer.counters
    assert counters.dropped["no_song"] == sum(
        s is ApplyStatus.NO_SONG for ss in session.statuses.values() for s in ss
    )
    assert counters.late == 0
    assert counters.frames_skipped == 0
    m = state.members["lead"]
    assert (m.rejected, m.late) == (0, 0)
    assert m.chunks == lead_statuses.count(ApplyStatus.OK)
    assert -16.0 < m.level_db < -14.0  # a 0.25 sine is at -15 dBFS RMS


def test_singers_in_one_bucket_do_not_hear_each_other() -> None:
    state = chain_room(("a", 1), ("b", 1), ("c", 2))
    d1, d2 = SMALL.bucket_delay(1), SMALL.bucket_delay(2)
    session = Session(RoomMixer("choir", state, T0), T0)
    session.voices = [
        Voice("lead", 440.0, T0, T0 + 3 * S),
        Voice("a", 660.0, T0, T0 + 3 * S),
        Voice("b", 550.0, T0, T0 + 3 * S),
    ]
    state.start_song("lead", T0)
    session.run(T0 + 5 * S)
    lo, hi = T0, T0 + 2 * S
    lead = tone(440.0, lo, hi - lo)
    np.testing.assert_array_equal(session.heard(d1, lo, hi), lead)
    three = (lead + tone(660.0, lo, hi - lo) + tone(550.0, lo, hi - lo)) * np.float32(
        math.sqrt(3 / 5)
    )
    np.testing.assert_allclose(session.heard(d2, lo, hi), three, rtol=0, atol=1e-7)


def song_mixer(*followers: tuple[str, int], config: RoomConfig = SMALL) -> RoomMixer:
    state = room(config, lead=Role.SINGER, **{sid: Role.SINGER for sid, _ in followers})
    state.request_lead("lead", T0)
    state.set_leader_boost("lead", 0.0)  # unity gain: heard sample-exactly
    for sid, bucket in followers:
        state.join_bucket(sid, bucket)
    state.start_song("lead", T0)  # the song window starts at T0 - 1 s
    return RoomMixer("choir", state, T0)


def test_a_write_after_a_later_tap_emitted_it_is_late_but_applied() -> None:
    # Three singers of bucket 1 (each position is mixed at most once per singer).
    mixer = song_mixer(("a", 1), ("b", 1), ("c", 1), ("far", 3))
    mixer.state.join("watch", "W", Role.SPECTATOR, T0)  # bucket 4 (5 s)
    now = T0 + 10 * S
    mixer.tick(T0)
    mixer.tick(now)
    d3 = SMALL.bucket_delay(3)
    f3 = mixer.frontier(d3)
    assert f3 == ((now - d3 + SMALL.lead_samples) // FRAME + 1) * FRAME
    a, b, c = (mixer.state.members[x] for x in "abc")

    chunk = tone(660.0, f3, CHUNK)
    assert mixer.apply("a", f3, chunk, now) is ApplyStatus.OK  # exactly at the frontier
    assert mixer.apply("b", f3 - 1, chunk, now) is ApplyStatus.LATE
    assert (a.late, a.chunks, a.rejected) == (0, 1, 0)
    assert (b.late, b.chunks, b.rejected) == (1, 1, 0)
    assert mixer.counters.late == 1

    # The late write is still there for the spectator, whose tap has not reached it.
    late_pos = f3 - S // 2
    assert mixer.apply("c", late_pos, tone(660.0, late_pos, CHUNK), now) is ApplyStatus.LATE
    d4 = SMALL.bucket_delay(4)
    spectator_frontier = mixer.frontier(d4)
    assert spectator_frontier is not None
    assert spectator_frontier <= late_pos
    heard: list[TapOutput] = []
    t = now
    while t < late_pos + CHUNK + d4:
        t += FRAME
        heard += [o for o in mixer.tick(t) if o.delay == d4]
    joined = np.concatenate([o.samples for o in heard])
    offset = late_pos - heard[0].start
    # c's chunk ends before a's and b's begin, so it is heard alone (gain 1).
    assert late_pos + CHUNK <= f3 - 1
    np.testing.assert_array_equal(joined[offset : offset + CHUNK], tone(660.0, late_pos, CHUNK))
    assert c.late == 1
    assert mixer.counters.late == 2


def test_ahead_is_rejected_at_the_play_time_plus_tolerance() -> None:
    mixer = song_mixer(("a", 1))
    now = T0 + 5 * S
    bound = now - SMALL.bucket_delay(1) + AHEAD_TOLERANCE
    x = tone(660.0, bound - CHUNK, CHUNK)
    assert mixer.apply("a", bound - CHUNK + 1, x, now) is ApplyStatus.AHEAD
    assert mixer.apply("a", bound - CHUNK, x, now) is ApplyStatus.OK
    a = mixer.state.members["a"]
    assert (a.rejected, a.chunks) == (1, 1)
    assert mixer.counters.dropped["ahead"] == 1


def test_future_with_a_short_lead() -> None:
    config = RoomConfig(
        ring_samples=20 * SR, lead_samples=2400, bucket_spacing=SR, n_buckets=5, capacity=10
    )
    mixer = song_mixer(("a", 1), config=config)
    mixer.state.set_delay("a", config.min_delay)  # 0.3 s: play time + 0.5 s is past now
    now = T0 + 5 * S
    x = tone(660.0, now, CHUNK)
    assert mixer.apply("a", now - CHUNK + 1, x, now) is ApplyStatus.FUTURE
    assert mixer.apply("a", now - CHUNK, x, now) is ApplyStatus.OK
    assert mixer.state.members["a"].rejected == 1
    assert mixer.counters.dropped["future"] == 1


def test_too_old_and_too_long() -> None:
    mixer = song_mixer(("a", 1))
    now = T0 + 30 * S
    x = tone(660.0, 0, CHUNK)
    oldest = now - SMALL.ring_samples
    assert mixer.apply("a", oldest - 1, x, now) is ApplyStatus.TOO_OLD
    assert mixer.apply("a", oldest, x, now) is ApplyStatus.OK
    long = np.zeros(SMALL.ring_samples + OPUS_FRAME_SAMPLES, dtype=np.float32)
    end = now - SMALL.bucket_delay(1)
    assert mixer.apply("a", end - long.shape[0], long, now) is ApplyStatus.TOO_LONG
    a = mixer.state.members["a"]
    assert (a.rejected, a.chunks) == (2, 1)
    assert mixer.counters.dropped["too_old"] == mixer.counters.dropped["too_long"] == 1


def test_muted_spectators_unknown_and_no_song_are_dropped_without_rejection() -> None:
    state = room(lead=Role.SINGER, a=Role.SINGER, watch=Role.SPECTATOR)
    state.request_lead("lead", T0)
    state.set_leader_boost("lead", 0.0)  # unity gain: heard sample-exactly
    mixer = RoomMixer("choir", state, T0)
    now = T0 + 10 * S
    pos = now - 3 * S
    x = tone(660.0, pos, CHUNK)
    assert mixer.apply("a", pos, x, now) is ApplyStatus.NO_SONG  # no song ever started
    state.start_song("lead", now - 2 * S)
    assert state.song.start_pos == now - 3 * S
    pos = now - 3 * S - 1  # just before the song window
    x = tone(660.0, pos - CHUNK + 1, CHUNK)
    assert mixer.apply("a", pos - CHUNK + 1, x, now) is ApplyStatus.NO_SONG
    assert mixer.apply("watch", pos + 1, x, now) is ApplyStatus.MUTED
    state.set_muted("a", True)
    assert mixer.apply("a", pos + 1, x, now) is ApplyStatus.MUTED
    assert mixer.apply("ghost", pos + 1, x, now) is ApplyStatus.UNKNOWN_SINGER
    state.set_muted("a", False)
    assert mixer.apply("a", pos + 1, x, now) is ApplyStatus.OK
    assert all(m.rejected == 0 for m in state.members.values())
    assert state.members["a"].chunks == 1
    c = mixer.counters
    assert c.chunks_in == 6
    assert (c.dropped["no_song"], c.dropped["muted"], c.dropped["unknown_singer"]) == (2, 2, 1)
    assert c.to_dict()["dropped_muted"] == 2
    assert mixer.ring is not None
    assert not mixer.ring.read_raw(pos - CHUNK, CHUNK)[1].any()  # nothing before the song
    assert (mixer.ring.read_raw(pos + 1, CHUNK)[1] == 1).all()
    with pytest.raises(ValidationError):
        mixer.apply("a", pos + 1, x.astype(np.float64), now)


def test_the_last_seconds_of_a_song_still_mix_after_the_next_one_starts() -> None:
    """The leader stops and starts again at once: a later bucket is still singing the
    first song's end. Its chunks for that end are mixed; between the songs nothing is."""
    mixer = song_mixer(("far", 3))
    state = mixer.state
    first = state.song.start_pos
    assert first is not None
    now = T0 + 10 * S
    state.stop_song("lead", now)
    end = state.song.end_pos
    assert end is not None
    state.start_song("lead", now + S)
    assert state.song.previous == records.SongSpan(
        number=1,
        start_pos=first,
        end_pos=end,
        started_with=records.SongMaterial(rounds=records.Rounds()),
        ended=records.EndReason.STOPPED,
    )
    assert state.song.start_pos == end + S
    later = now + SMALL.bucket_delay(3) - SMALL.bucket_delay(0)  # the end reaches bucket 3
    x = tone(660.0, end - CHUNK, CHUNK)
    assert mixer.apply("far", end - CHUNK, x, later) is ApplyStatus.OK
    assert mixer.apply("far", end, tone(660.0, end, CHUNK), later) is ApplyStatus.NO_SONG
    y = tone(660.0, end + S, CHUNK)
    assert mixer.apply("far", end + S, y, later + 2 * S) is ApplyStatus.OK  # the new song
    assert mixer.ring is not None
    np.testing.assert_array_equal(mixer.ring.read_raw(end - CHUNK, CHUNK)[0], x)
    assert not mixer.ring.read_raw(end, CHUNK)[1].any()
    # The record keeps the span through a failover (and the recorder reads its end there).
    again = records.decode(records.encode(state.song), records.Song)
    assert again.previous == state.song.previous
    # The song two back stays open while it is in the ring; once its end has left it,
    # its span goes.
    state.stop_song("lead", later + S)
    state.start_song("lead", later + 2 * S)
    assert [span.number for span in state.song.earlier] == [2, 1]
    assert state.song.window(end - CHUNK, end) == (end - CHUNK, end)
    gone = end + SMALL.ring_samples + SMALL.bucket_delay(0) + S
    state.stop_song("lead", gone)
    state.start_song("lead", gone + S)
    assert [span.number for span in state.song.earlier] == [3, 2]
    assert state.song.window(end - CHUNK, end) is None


def test_three_songs_within_one_delay_each_mix_their_own_end_in_the_last_bucket() -> None:
    """Song 1 ends with its track, song 2 is stopped after 1 s, song 3 starts at once:
    the last bucket (4 s behind) is still singing song 1 when song 3 starts. Its chunks
    for the ends of songs 1 and 2 are both mixed, and the pages find each song's own
    material: song 1's track, though the leader removed it for the next songs."""
    mixer = song_mixer(("far", 4))
    state = mixer.state
    song1 = state.song
    first = song1.start_pos
    assert first is not None
    track = records.Track(id="t-0123456789ab", name="backing", samples=3 * S)
    # Song 1 was started without a track; give song 2 one to watch it stay song 2's.
    state.stop_song("lead", T0 + 3 * S)
    end1 = state.song.end_pos
    assert end1 is not None
    state.add_track("lead", track)
    state.start_song("lead", T0 + 3 * S + CHUNK)
    state.stop_song("lead", T0 + 4 * S)
    end2 = state.song.end_pos
    assert end2 is not None
    state.set_track("lead", None)
    state.set_metronome("lead", records.Metronome(on=False))
    state.start_song("lead", T0 + 4 * S + CHUNK)
    song = state.song
    assert [s.number for s in song.earlier] == [2, 1]
    assert song.earlier[0].started_with == records.SongMaterial(
        track=track, rounds=records.Rounds()
    )
    assert song.earlier[1].started_with == records.SongMaterial(rounds=records.Rounds())
    assert song.started_with == records.SongMaterial(rounds=records.Rounds())
    # The far bucket (delay 5 s) sings songs 1 and 2's ends after song 3 has started.
    now = T0 + 4 * S + CHUNK + 3 * S
    a = tone(440.0, end1 - CHUNK, CHUNK)
    b = tone(550.0, end2 - CHUNK, CHUNK)
    assert mixer.apply("far", end1 - CHUNK, a, now) is ApplyStatus.OK
    assert mixer.apply("far", end2 - CHUNK, b, now + S) is ApplyStatus.OK
    # Between songs 2 and 3 (a gap of one chunk) nothing is mixed.
    gap = tone(660.0, end2, CHUNK)
    assert mixer.apply("far", end2, gap, now + S) is ApplyStatus.NO_SONG
    assert mixer.ring is not None
    np.testing.assert_array_equal(mixer.ring.read_raw(end1 - CHUNK, CHUNK)[0], a)
    np.testing.assert_array_equal(mixer.ring.read_raw(end2 - CHUNK, CHUNK)[0], b)
    # The page's view lists both songs with their own material, newest first.
    view: Any = to_builtins(public_state("choir", state))["song"]
    assert [e["number"] for e in view["earlier"]] == [2, 1]
    assert view["earlier"][0]["started_with"]["track"]["id"] == track.id
    assert view["previous"] == view["earlier"][0]
    # The record keeps them through a failover.
    again = records.decode(records.encode(state.song), records.Song)
    assert again.earlier == song.earlier


def test_new_taps_start_at_the_due_frame_and_the_backlog_is_capped() -> None:
    state = room(a=Role.SINGER)
    d = state.members["a"].delay
    lead = SMALL.lead_samples
    mixer = RoomMixer("choir", state, T0)
    now = T0 + 123
    k0 = (now - d + lead) // FRAME
    (out,) = mixer.tick(now)
    assert (out.delay, out.start, out.samples.shape[0]) == (d, k0 * FRAME, FRAME)
    assert mixer.frontier(d) == (k0 + 1) * FRAME
    assert mixer.tick(now) == []  # nothing new is due
    assert mixer.tick((k0 + 1) * FRAME + d - lead - 1) == []  # one sample early

    now += 2 * S  # 100 frames due: the oldest 50 are skipped
    last = (now - d + lead) // FRAME
    (out,) = mixer.tick(now)
    assert last - k0 == 100
    assert out.start == (last - MAX_FRAMES_PER_TICK + 1) * FRAME
    assert out.samples.shape[0] == MAX_FRAMES_PER_TICK * FRAME
    assert mixer.counters.frames_skipped == 100 - MAX_FRAMES_PER_TICK
    assert mixer.counters.frames_out == 1 + MAX_FRAMES_PER_TICK
    (out,) = mixer.tick(now + FRAME)
    assert (out.start, out.samples.shape[0]) == ((last + 1) * FRAME, FRAME)


def test_taps_follow_the_members() -> None:
    state = room(a=Role.SINGER, b=Role.SINGER)
    da, db = state.members["a"].delay, state.members["b"].delay
    mixer = RoomMixer("choir", state, T0)
    assert [o.delay for o in mixer.tick(T0)] == [da, db]
    state.disconnect("b", T0 + S)
    assert [o.delay for o in mixer.tick(T0 + S)] == [da]
    assert mixer.frontier(db) is None
    state.join("b", "B", Role.SINGER, T0 + 2 * S)
    (_, out) = mixer.tick(T0 + 2 * S)
    assert (out.delay, out.start) == (db, (T0 + 2 * S - db + SMALL.lead_samples) // FRAME * FRAME)
    assert out.samples.shape[0] == FRAME  # restarted, not the missed backlog


def test_a_singer_is_mixed_at_most_once_per_position() -> None:
    mixer = song_mixer(("a", 1))
    now = T0 + 10 * S
    start = now - SMALL.bucket_delay(1) - 2 * CHUNK
    x = tone(440.0, start, CHUNK)
    assert mixer.apply("a", start, x, now) is ApplyStatus.OK
    # The same chunk again (a replay or a duplicate): dropped, counted as rejected.
    assert mixer.apply("a", start, x, now) is ApplyStatus.OVERLAP
    # Half overlapping: only the new half is written.
    y = tone(440.0, start + CHUNK // 2, CHUNK)
    assert mixer.apply("a", start + CHUNK // 2, y, now) is ApplyStatus.OK
    assert mixer.ring is not None
    audio, counts = mixer.ring.read_raw(start, CHUNK + CHUNK // 2)
    assert counts.max() == 1 and counts.min() == 1
    np.testing.assert_allclose(audio, tone(440.0, start, CHUNK + CHUNK // 2), atol=1e-6)
    a = mixer.state.members["a"]
    assert (a.chunks, a.rejected) == (2, 1)
    assert mixer.counters.dropped["overlap"] == 1


def test_the_ring_exists_only_while_a_song_can_be_heard() -> None:
    state = room(lead=Role.SINGER, b=Role.SINGER)
    state.request_lead("lead", T0)
    mixer = RoomMixer("r", state, T0)
    outputs = mixer.tick(T0 + S)
    assert mixer.ring is None and outputs  # taps flow, silent, with no ring behind them
    assert all(not out.samples.any() for out in outputs)
    assert mixer.occupancy(T0 + S).occupied == 0
    state.start_song("lead", T0 + 2 * S)
    mixer.tick(T0 + 2 * S)
    assert mixer.ring is not None
    state.stop_song("lead", T0 + 3 * S)
    end = state.song.end_pos
    assert end is not None
    horizon = state.largest_delay() + 2 * S
    mixer.tick(end + horizon - S)
    assert mixer.ring is not None  # the last bucket has not played the end yet
    mixer.tick(end + horizon + S)
    assert mixer.ring is None and mixer.solo_ring is None


def test_a_checkpoint_lets_a_new_owner_emit_what_the_old_one_would_have() -> None:
    state = room(lead=Role.SINGER, b=Role.SINGER, c=Role.SINGER)
    state.request_lead("lead", T0)
    state.set_rounds("lead", records.Rounds(bpm=120, beats=2, repeats=1))
    state.start_song("lead", T0 + S)
    start = state.song.start_pos
    assert start is not None
    old = RoomMixer("r", state, T0 + S)
    d_lead = state.members["lead"].delay
    now = T0 + S
    for k in range(30):  # the leader sings 3 s, chunk by chunk, as time goes by
        pos = start + k * CHUNK
        now = pos + CHUNK + d_lead
        old.tick(now)
        assert old.apply("lead", pos, tone(440.0, pos, CHUNK), now) is ApplyStatus.OK
    checkpoint = old.checkpoint()
    assert checkpoint is not None
    wire = records.decode(records.encode(checkpoint), records.Checkpoint)
    # The old owner dies; a new one takes over 1.5 s later from the checkpoint.
    later = now + 3 * S // 2
    new = RoomMixer("r", RoomState(SMALL, state.members, state.song), later)
    assert new.restore([wire], later)
    # What the new owner emits equals what the old one emits (int16 storage aside),
    # from the first frame still playable on.
    old_out = {o.tap: o for o in old.tick(later)}
    new_out = {o.tap: o for o in new.tick(later)}
    assert new_out.keys() == old_out.keys()
    for tap, out in new_out.items():
        assert out.start >= old_out[tap].start
        offset = out.start - old_out[tap].start
        np.testing.assert_allclose(out.samples, old_out[tap].samples[offset:], rtol=2e-3, atol=2e-4)
        playable = later - tap.delay + SR // 5
        assert out.start <= playable + FRAME
    heard = np.concatenate([o.samples for o in new_out.values()])
    assert np.abs(heard).max() > 0.1  # the audio sung before the takeover is there


def test_checkpoints_after_the_first_hold_only_what_was_mixed_since() -> None:
    """The first checkpoint entry of a ring holds every position a tap still needs; the
    next ones only the spans written since. Restored in order, they give a new owner the
    ring the old one had."""
    state = room(lead=Role.SINGER, far=Role.SINGER)
    state.request_lead("lead", T0)
    state.join_bucket("far", 4)
    state.start_song("lead", T0 + S)
    start = state.song.start_pos
    assert start is not None
    old = RoomMixer("r", state, T0 + S)
    singers = {sid: state.members[sid].delay for sid in ("lead", "far")}
    entries: list[records.Checkpoint] = []
    now = T0 + S
    for second in range(14):
        for k in range(10):
            now = start + (second * 10 + k + 1) * CHUNK + singers["lead"]
            old.tick(now)
            for sid, delay in singers.items():
                # Each singer sings at room time - its delay (the far one an echo of
                # the leader, later); chunks before the song are simply not mixed.
                pos = now - delay - CHUNK
                if pos >= start:
                    assert old.apply(sid, pos, tone(330.0, pos, CHUNK), now) in (
                        ApplyStatus.OK,
                        ApplyStatus.LATE,
                    )
        checkpoint = old.checkpoint()
        assert checkpoint is not None
        entries.append(records.decode(records.encode(checkpoint), records.Checkpoint))
    first, last = entries[0], entries[-1]
    assert first.full and not any(e.full for e in entries[1:])
    spanned = last.clock - last.start
    held = sum(len(p.audio) // 2 for p in last.parts)
    # Two singers, one second each (and a chunk of slack at each span's edges)...
    assert held <= 2 * (S + 2 * CHUNK)
    # ...of a span that reaches back to the far singer's tap (5 s, less the lead).
    assert spanned > singers["far"] - 2 * SMALL.lead_samples
    assert held < spanned / 2
    later = now + S
    new = RoomMixer("r", RoomState(SMALL, state.members, state.song), later)
    assert new.restore(entries, later)
    old_out = {o.tap: o for o in old.tick(later)}
    new_out = {o.tap: o for o in new.tick(later)}
    assert new_out.keys() == old_out.keys()
    for tap, out in new_out.items():
        offset = out.start - old_out[tap].start
        np.testing.assert_allclose(out.samples, old_out[tap].samples[offset:], rtol=2e-3, atol=2e-4)
    assert np.abs(np.concatenate([o.samples for o in new_out.values()])).max() > 0.1
    # The entry after a restore is full again: the new owner's list starts afresh.
    after = new.checkpoint()
    assert after is not None and after.full


def test_rounds_changed_between_songs_do_not_reach_the_tail_of_the_song_before() -> None:
    """Song 1 has one repeat a second later; after it the leader turns rounds off and
    starts song 2 at once. The last bucket, still hearing song 1, hears its repeats to
    its end; song 2 is emitted without them."""
    state = room(lead=Role.SINGER, far=Role.SINGER)
    state.request_lead("lead", T0)
    state.set_leader_boost("lead", 0.0)
    state.join_bucket("far", 4)
    one = records.Rounds(bpm=120, beats=2, repeats=1)  # one repeat, 1 s later
    state.set_rounds("lead", one)
    state.start_song("lead", T0)
    start = state.song.start_pos
    assert start is not None
    mixer = RoomMixer("r", state, T0)
    d_lead = state.members["lead"].delay
    sung = start + 3 * S // 2
    x = tone(440.0, sung, CHUNK)
    assert mixer.apply("lead", sung, x, sung + CHUNK + d_lead) is ApplyStatus.OK
    state.stop_song("lead", start + 3 * S + d_lead)
    end = state.song.end_pos
    assert end == start + 3 * S
    state.set_rounds("lead", records.Rounds(bpm=120, beats=2, repeats=0))
    state.start_song("lead", end + d_lead + CHUNK)
    assert state.song.earlier[0].started_with is not None
    assert state.song.earlier[0].started_with.rounds == one
    assert state.song.rounds_from(end - S, end + S) == [
        (end - S, one),
        (end + CHUNK, records.Rounds(bpm=120, beats=2, repeats=0)),
    ]
    # The far bucket's tap emits song 1's last 2 s after song 2 started.
    far = Tap(state.members["far"].delay, "full")
    lead = SMALL.lead_samples
    out: dict[int, float] = {}
    for now in range(start + 2 * S + far.delay - lead, end + S + far.delay - lead, CHUNK):
        for o in mixer.tick(now):
            if o.tap == far:
                for k in range(0, len(o.samples), FRAME):
                    out[o.start + k] = float(np.abs(o.samples[k : k + FRAME]).max())
    echo = [out[p] for p in range(sung + S, sung + S + CHUNK - FRAME, FRAME) if p in out]
    assert echo and min(echo) > 0.1  # the repeat of song 1 sounds
    assert all(v == 0.0 for p, v in out.items() if p >= end)  # nothing sung in song 2


def test_a_checkpoint_keeps_voice_counts_as_runs_and_refuses_runs_that_do_not_fit() -> None:
    from mixer.room import _counts, _runs  # noqa: PLC0415  (the encoding's own helpers)

    counts = np.repeat(np.array([0, 2, 3, 3, 1, 0], dtype=np.uint16), [5, 4800, 7, 1, 960, 3])
    runs, values = _runs(counts)
    np.testing.assert_array_equal(_counts(runs, values, counts.shape[0]), counts)
    assert len(runs) == 4 * 4 and len(values) == 2 * 5  # 5 runs (3, 3 are one)
    flat = np.full(10, 4, dtype=np.uint16)
    np.testing.assert_array_equal(_counts(*_runs(flat), 10), flat)
    with pytest.raises(ValueError):
        _counts(runs, values, 100)  # runs past the span's end
    with pytest.raises(ValueError):
        _counts(runs, values[:-2], counts.shape[0])  # a count missing
    # A span of no samples (a full entry when no tap needs anything kept: the mixer's
    # tick raised IndexError on it once every member had left).
    empty = np.zeros(0, dtype=np.uint16)
    assert _counts(*_runs(empty), 0).shape == (0,)


def test_a_checkpoint_keeps_audio_as_int16_scaled_to_each_span_and_reads_older_float16() -> None:
    from mixer.room import _runs, _scaled, _unscaled  # noqa: PLC0415  (the encoding's own)

    rng = np.random.default_rng(7)
    loud = ((rng.random(4800) - 0.5) * 6).astype(np.float32)  # a sum of voices, past 1.0
    quiet = loud * np.float32(1e-3)
    for audio in (loud, quiet, np.zeros(960, dtype=np.float32), np.zeros(0, dtype=np.float32)):
        scale, data = _scaled(audio)
        assert len(data) == 2 * audio.shape[0]
        back = _unscaled(data, scale)
        peak = float(np.abs(audio).max()) if audio.shape[0] else 0.0
        np.testing.assert_allclose(back, audio, rtol=0, atol=peak / 32767 + 1e-12)
    # An older mixer's entry: float16 audio and no scale, read as it was written.
    counts = np.full(loud.shape[0], 2, dtype=np.uint16)
    old = msgspec.msgpack.encode([5, loud.astype("<f2").tobytes(), *_runs(counts)])
    part = records.decode(old, records.CheckpointPart)
    assert part.scale == 0.0
    np.testing.assert_array_equal(
        _unscaled(part.audio, part.scale), loud.astype("<f2").astype(np.float32)
    )
    with pytest.raises(ValueError):
        _unscaled(data, -1.0)
