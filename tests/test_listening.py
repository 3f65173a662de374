"""Which mix each member hears, at which delay: one rule (common/listening.py), every reader agrees.

The mixer's taps, the public room view and ``brigade inspect``'s tap table are built from
the same members here and must say the same thing; the rule itself is checked against a
naive model written in the test.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.constants import SAMPLE_RATE
from common.listening import anyone_soloed, bucket_delay, hears, listeners
from common.records import Mix
from inspector.view import RoomDetail, TapInfo, _taps_lines
from mixer.room import Role, RoomConfig, RoomState
from mixer.view import public_state

T0 = 1_700_000_000 * SAMPLE_RATE


def test_the_solo_mix_is_heard_only_by_who_chose_it_while_someone_solos() -> None:
    assert [hears(mix, soloing) for mix in ("full", "solo") for soloing in (False, True)] == [
        "full",
        "full",
        "full",
        "solo",
    ]


def test_bucket_delays_are_one_spacing_apart_from_one_spacing() -> None:
    config = RoomConfig()
    assert [bucket_delay(i, 7) for i in range(4)] == [7, 14, 21, 28]
    view = public_state("r", RoomState(config))
    assert view.buckets.delays == [config.bucket_delay(i) for i in range(config.n_buckets)]
    assert view.buckets.delays == [bucket_delay(i, config.bucket_spacing) for i in range(6)]


# One entry per member: (singer?, soloed by the leader?, chose solo?, still connected?, bucket)
_MEMBERS = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 5)),
    min_size=1,
    max_size=8,
)


def _room(spec: list[tuple[bool, bool, bool, bool, int]]) -> RoomState:
    state = RoomState(RoomConfig(capacity=20))
    state.join("lead", "Lead", Role.SINGER, T0)
    state.request_lead("lead", T0)
    for i, (singer, soloed, solo_mix, connected, bucket) in enumerate(spec):
        sid = f"m{i}"
        state.join(sid, sid, Role.SINGER if singer else Role.SPECTATOR, T0 + i + 1)
        state.join_bucket(sid, bucket)
        state.solo("lead", sid, soloed)
        mix: Mix = "solo" if solo_mix else "full"
        state.set_mix(sid, mix)
        if not connected:
            state.disconnect(sid, T0 + 100)
    return state


@settings(max_examples=60, deadline=None)
@given(_MEMBERS)
def test_the_mixer_the_room_view_and_inspect_hear_the_same(
    spec: list[tuple[bool, bool, bool, bool, int]],
) -> None:
    state = _room(spec)
    members = list(state.members.values())
    soloing = any(m.soloed for m in members)  # the naive model
    expected = {
        (m.delay, "solo" if soloing and m.mix == "solo" else "full") for m in members if m.connected
    }
    assert anyone_soloed(members) == state.soloing == soloing
    assert set(listeners(members)) == expected
    assert state.taps() == sorted(expected)  # the mixer writes these taps
    view = public_state("r", state)
    assert {(m.delay, m.hears) for m in view.members if m.connected} == expected
    taps = [
        TapInfo(d, f"k{d}{mix}", True, 1, None, None, None, None, mix=mix) for d, mix in expected
    ]
    detail = RoomDetail(
        name="r",
        redis_url="redis://x",
        now_us=0,
        registered=True,
        owner=None,
        lease_ttl_ms=None,
        meta={},
        password_set=False,
        song=state.song,
        song_version=state.version,
        ctl_applied=None,
        ctl_pending=None,
        members=members,
        bad_members={},
        taps=taps,
        streams=[],
        stats={},
        occupancy=None,
        problems=[],
    )
    rows = "\n".join(_taps_lines(detail))
    for (delay, mix), ids in listeners(members).items():
        assert f"k{delay}{mix}" in rows
        assert ",".join(sorted(ids)) in rows
