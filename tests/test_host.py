"""The pure room host: encoded commands and chunks in, what to publish out; no I/O, no sleeps."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from common import commands as c
from common.constants import SAMPLE_RATE
from common.errors import ValidationError
from common.events import Levels, Reply, State
from common.link import Link, parse_links
from common.records import Role, Track
from common.wire import encode_chunk
from mixer.host import HANDLERS, LEVELS_MAX, HostTiming, RoomHost
from mixer.room import RoomConfig, RoomState

SR = SAMPLE_RATE
T0 = 1_700_000_000 * SR
CONFIG = RoomConfig(ring_samples=20 * SR, lead_samples=SR // 2, bucket_spacing=SR, n_buckets=5)
TIMING = HostTiming(publish=SR // 4, levels=SR, grace=10 * SR)


def ctl(singer: str, cmd: c.AnyCommand, req: int = 0, gw: str = "gw1", conn: str = "") -> bytes:
    return c.encode_envelope(c.Envelope(singer=singer, cmd=cmd, gw=gw, req=req, conn=conn))


def host() -> RoomHost:
    return RoomHost("r", RoomState(CONFIG), T0, timing=TIMING, mixer_id="m1")


def replies(out: typing.Any) -> list[Reply]:
    return [e for e in out.events if isinstance(e, Reply)]


def test_every_command_has_exactly_one_table_row() -> None:
    assert set(HANDLERS) == set(typing.get_args(c.AnyCommand))


def test_a_step_applies_commands_then_chunks_and_emits_taps() -> None:
    h = host()
    join = [
        ctl(s, c.Join(name=s.upper(), role=Role.SINGER), i, conn=f"k{s}")
        for i, s in enumerate("ab")
    ]
    out = h.step(join, [], T0)
    assert [r.ok for r in replies(out)] == [True, True]
    assert isinstance(out.events[0], State)  # the state comes before the replies it answers
    assert out.persist and out.links == {"a": "gw1 ka", "b": "gw1 kb"}
    out = h.step(
        [ctl("a", c.Lead()), ctl("a", c.SetLeaderBoost(boost_db=0)), ctl("a", c.Start())],
        [],
        T0 + SR,
    )
    assert all(r.ok for r in replies(out))
    start = h.state.song.start_pos
    assert start is not None
    tone = np.full(SR // 10, 0.25, dtype=np.float32)
    # Ann (bucket 0, 1 s) has sung [start, start + 0.1 s) by start + 1.1 s.
    out = h.step([], [encode_chunk("r", "a", 1, 0, start, tone)], start + SR + SR // 10)
    assert h.counters.chunks_in == 1 and h.counters.chunks_rejected == 0
    b_delay = h.state.members["b"].delay
    # Bob's tap emits position p at p + delay - lead.
    later = h.step([], [], start + b_delay - CONFIG.lead_samples + SR // 5)
    heard = [t for t in later.taps if t.delay == b_delay]
    assert heard and heard[0].start <= start < heard[0].start + len(heard[0].samples) - 100
    first = heard[0].samples[start - heard[0].start : start - heard[0].start + 100]
    np.testing.assert_allclose(first, 0.25)  # one voice: gain sqrt(3/3) = 1, boost 0 dB


def test_bad_entries_are_counted_and_dropped() -> None:
    h = host()
    out = h.step([b"not msgpack", None, ctl("a", c.Lead())], [b"junk", None], T0)
    assert h.counters.bad_ctl == 2 and h.counters.bad_wire == 2
    refused = replies(out)
    assert [(r.ok, r.code) for r in refused] == [(False, "unknown_singer")]


def test_refusals_come_back_with_their_code() -> None:
    h = host()
    h.step(
        [
            ctl("a", c.Join(name="A", role=Role.SINGER)),
            ctl("b", c.Join(name="B", role=Role.SINGER)),
        ],
        [],
        T0,
    )
    out = h.step(
        [
            ctl("b", c.SetGain(target="a", gain_db=-6), 1),
            ctl("b", c.Solo(target="a", on=True), 2),
            ctl("b", c.Halt(), 3),
            ctl("a", c.SetRounds(bpm=20, beats=64, repeats=20), 4),
        ],
        [],
        T0 + 1,
    )
    assert [(r.req, r.code) for r in replies(out)] == [
        (1, "not_leader"),
        (2, "not_leader"),
        (3, "not_leader"),
        (4, "not_leader"),
    ]
    h.step([ctl("a", c.Lead())], [], T0 + 2)
    out = h.step([ctl("a", c.SetRounds(bpm=20, beats=64, repeats=20), 5)], [], T0 + 3)
    assert [(r.req, r.code) for r in replies(out)] == [(5, "bad_rounds")]


def test_a_stale_disconnect_is_ignored_and_expiry_removes_for_good() -> None:
    h = host()
    h.step([ctl("a", c.Join(name="A", role=Role.SINGER), gw="gw1", conn="old")], [], T0)
    h.step([ctl("a", c.Join(name="A", role=Role.SINGER), gw="gw2", conn="new")], [], T0 + 1)
    out = h.step([ctl("a", c.Disconnect(), gw="gw1", conn="old")], [], T0 + 2)
    assert replies(out)[0].ok and h.state.members["a"].connected
    h.step([ctl("a", c.Disconnect(), gw="gw2", conn="new")], [], T0 + SR)
    assert not h.state.members["a"].connected
    out = h.step([], [], T0 + 12 * SR)  # past the 10 s grace, on a publish step
    assert out.removed == {"a"} and "a" not in h.links and out.persist


def test_dead_gateways_disconnect_their_singers() -> None:
    h = host()
    h.step(
        [
            ctl("a", c.Join(name="A", role=Role.SINGER), gw="gw1", conn="1"),
            ctl("b", c.Join(name="B", role=Role.SINGER), gw="gw2", conn="2"),
        ],
        [],
        T0,
    )
    assert h.gateways() == {"gw1", "gw2"}
    assert h.disconnect_gateways({"gw2"}, T0 + 1) == 1
    assert h.state.members["a"].connected and not h.state.members["b"].connected
    assert h.gateways() == {"gw1"}


def test_publish_steps_carry_occupancy_stats_and_levels() -> None:
    h = host()
    h.step(
        [ctl("a", c.Join(name="A", role=Role.SINGER)), ctl("a", c.Lead()), ctl("a", c.Start())],
        [],
        T0,
    )
    out = h.step([], [], T0 + 1)
    assert out.occupancy is None and out.stats is None  # not yet a publish period later
    out = h.step([], [], T0 + SR)
    assert out.occupancy is not None and out.occupancy.mixer == "m1"
    assert out.stats is not None and "chunks_in" in out.stats
    assert any(isinstance(e, Levels) and "a" in e.levels for e in out.events)


def test_singing_rewrites_no_record_its_counters_go_with_the_stats() -> None:
    """Chunks change the members' counters, not the room: their records (which the keeper
    copies to the durable store) are written when the room changes, the counters with the
    stats of each publish step after audio arrived."""
    h = host()
    out = h.step(
        [ctl("a", c.Join(name="A", role=Role.SINGER)), ctl("a", c.Lead()), ctl("a", c.Start())],
        [],
        T0,
    )
    assert out.persist
    start = h.state.song.start_pos
    assert start is not None
    tone = np.full(SR // 10, 0.25, dtype=np.float32)
    now = start + 2 * SR  # a publish period after the start's step
    for k in range(8):  # two seconds of singing, a chunk per publish period
        chunk = encode_chunk("r", "a", 1, k, start + k * SR // 10, tone)
        out = h.step([], [chunk], now + k * SR // 4)
        assert not out.persist and not any(isinstance(e, State) for e in out.events)
        assert out.live is not None and out.stats is not None
        assert out.live.members["a"][:3] == (0, k + 1, 0)  # (late, chunks, rejected)
    out = h.step([], [], now + 8 * SR // 4)
    assert out.stats is not None and out.live is None  # nothing new to say
    out = h.step([ctl("a", c.Mute(muted=True))], [], now + 9 * SR // 4)
    assert out.persist  # a change: the record is written, counters included
    assert h.state.members["a"].chunks == 8


def test_the_published_state_keeps_the_last_songs_material_and_says_why_it_ended() -> None:
    h = host()
    h.step([ctl("a", c.Join(name="Ann", role=Role.SINGER), conn="ka")], [], T0)
    track = Track(id="t-0123456789ab", name="Hymn.flac", samples=4 * SR)
    h.step(
        [
            ctl("a", c.Lead()),
            ctl("a", c.AddTrack(track=track)),
            ctl("a", c.SetMetronome(on=True, bpm=90, beats=3)),
            ctl("a", c.Start()),
        ],
        [],
        T0 + SR,
    )
    h.step([ctl("a", c.Stop())], [], T0 + 3 * SR)
    out = h.step(
        [ctl("a", c.SetTrack(track=None)), ctl("a", c.SetMetronome(on=False))], [], T0 + 4 * SR
    )
    assert all(r.ok for r in replies(out))
    states = [e for e in out.events if isinstance(e, State)]
    song = states[-1].state.song
    assert song.track is None and not song.metronome.on  # the next song's
    assert song.started_with is not None and song.started_with.track is not None
    assert song.started_with.track.id == track.id  # the last song's, kept
    assert song.started_with.metronome.bpm == 90
    assert (song.ended, song.stopped_by) == ("stopped", "a")


def test_links_are_typed_records_stored_as_two_ids() -> None:
    link = Link("gw1", "k7")
    assert Link.decode(link.encode()) == link and link.encode() == "gw1 k7"
    assert parse_links({b"a": b"gw1 ka", b"b": b"junk", b"c": b"x y z"}) == {"a": Link("gw1", "ka")}
    with pytest.raises(ValidationError, match="GATEWAY CONN"):
        Link.decode("one-part")


def test_levels_name_only_the_loudest_singers() -> None:
    """A levels event goes to every page in the room: it names the loudest few singers,
    not everyone, so its size does not grow with the room."""
    config = RoomConfig(
        ring_samples=20 * SR, lead_samples=SR // 2, bucket_spacing=SR, n_buckets=5, capacity=100
    )
    h = RoomHost("r", RoomState(config), T0, timing=TIMING)
    singers = [f"s{i:02d}" for i in range(40)]
    h.step(
        [ctl(s, c.Join(name=s.upper(), role=Role.SINGER)) for s in singers]
        + [ctl("s00", c.Lead()), ctl("s00", c.Start())],
        [],
        T0,
    )
    for i, s in enumerate(singers):
        h.state.members[s].level_db = -60.0 + i  # s39 loudest
    out = h.step([], [], T0 + SR)
    levels = [e for e in out.events if isinstance(e, Levels)]
    assert len(levels) == 1
    loudest = singers[-LEVELS_MAX:]
    assert levels[0].levels == {s: -60.0 + singers.index(s) for s in loudest}
