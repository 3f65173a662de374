"""The mixer's maintenance planner: what Redis said and `now` in, a plan out; no Redis, no sleep."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.constants import SAMPLE_RATE
from common.lease import LeaseResult, preferred_owner
from mixer.planner import (
    CLAIM_GRACE_S,
    HANDOVER_BATCH,
    HANDOVER_CALM_S,
    STEMS_KEEP_MS,
    SWEEP_BATCH,
    SWEEP_S,
    Ask,
    GatewaySeen,
    MaintenancePlanner,
    Now,
    Observed,
    PeerLoad,
    PlannerSettings,
    older_id,
    trim_from,
)

SR = SAMPLE_RATE
WALL = 1_700_000_000.0
RELEASE_S = 30
IDLE_DELETE_S = 3600.0
MATERIAL_PERIOD_S = 20.0
MIXERS = ("m1", "m2", "m3")
ROOMS = tuple(f"room{i}" for i in range(30))


def settings(mixer_id: str = "m1", max_rooms: int = 100) -> PlannerSettings:
    return PlannerSettings(
        mixer_id=mixer_id,
        max_rooms=max_rooms,
        lease_ttl_ms=3000,
        heartbeat_ttl_ms=2000,
        release_samples=RELEASE_S * SR,
        idle_delete_s=IDLE_DELETE_S,
        material_period_s=MATERIAL_PERIOD_S,
    )


def at(s: float) -> Now:
    return Now(wall_s=WALL + s, mono_s=s)


IDLE = RELEASE_S * SR
"""Unused long enough to be given back."""


def seen(
    active: tuple[str, ...] = (),
    live: tuple[str, ...] = MIXERS,
    leases: dict[str, LeaseResult] | None = None,
    gateways: dict[str, GatewaySeen] | None = None,
    idle_due: tuple[str, ...] = (),
) -> Observed:
    return Observed(
        live=frozenset(live),
        active=frozenset(active),
        leases=leases or {},
        gateways=gateways or {},
        idle_due=idle_due,
    )


def round_of(
    p: MaintenancePlanner,
    rooms: dict[str, int],
    observed: Observed,
    now: Now,
    held: set[str] | None = None,
) -> tuple[Ask, tuple[str, ...]]:
    """One maintenance round: ask, plan, and the claims given which free leases are held."""
    ask = p.ask(rooms, set(), now)
    plan = p.plan(rooms, ask, observed)
    claims = p.claims(
        {r: r in (held or set()) for r in plan.check_free},
        plan.live,
        len(rooms) - len(plan.drop) - len(plan.retire),
        now,
    )
    return ask, claims


# --- claims ---------------------------------------------------------------------------------


def test_each_free_room_goes_to_exactly_its_preferred_mixer_first() -> None:
    planners = {m: MaintenancePlanner(settings(m)) for m in MIXERS}
    claimed = {m: round_of(p, {}, seen(ROOMS), at(0))[1] for m, p in planners.items()}
    everyone = sorted(r for rooms in claimed.values() for r in rooms)
    assert everyone == sorted(ROOMS)  # each room once, by one mixer
    for m, rooms in claimed.items():
        assert rooms and all(preferred_owner(r, MIXERS) == m for r in rooms)


NAMES = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=8)


@given(
    mixers=st.sets(NAMES, min_size=1, max_size=6),
    rooms=st.sets(NAMES, max_size=40),
    down=st.sets(NAMES, max_size=3),
)
def test_free_rooms_split_among_the_live_mixers_without_overlap(
    mixers: set[str], rooms: set[str], down: set[str]
) -> None:
    """Against a naive model: the live mixer that ranks first claims each free room
    at once, nobody else does before the grace; after it, anyone would."""
    live = mixers - down or mixers
    planners = {m: MaintenancePlanner(settings(m)) for m in live}
    active = tuple(sorted(rooms))
    claimed = {
        m: round_of(p, {}, seen(active, live=tuple(live)), at(0))[1] for m, p in planners.items()
    }
    for m, got in claimed.items():
        assert set(got) == {r for r in rooms if preferred_owner(r, live) == m}
    later = {
        m: round_of(p, {}, seen(active, live=tuple(live)), at(CLAIM_GRACE_S))[1]
        for m, p in planners.items()
    }
    assert all(set(got) == rooms for got in later.values())


def test_a_room_its_preferred_mixer_leaves_unclaimed_is_anyones_after_the_grace() -> None:
    p = MaintenancePlanner(settings("m1"))
    theirs = [r for r in ROOMS if preferred_owner(r, MIXERS) != "m1"]
    assert round_of(p, {}, seen(tuple(theirs)), at(0))[1] == ()
    assert round_of(p, {}, seen(tuple(theirs)), at(CLAIM_GRACE_S / 2))[1] == ()
    assert round_of(p, {}, seen(tuple(theirs)), at(CLAIM_GRACE_S))[1] == tuple(sorted(theirs))


def test_a_held_lease_is_not_claimed_and_restarts_the_grace() -> None:
    p = MaintenancePlanner(settings("m1"))
    room = next(r for r in ROOMS if preferred_owner(r, MIXERS) != "m1")
    round_of(p, {}, seen((room,)), at(0))
    # Another mixer took it meanwhile: no claim, and when it is free again it waits anew.
    assert round_of(p, {}, seen((room,)), at(0.9), held={room})[1] == ()
    assert round_of(p, {}, seen((room,)), at(1.5))[1] == ()
    assert round_of(p, {}, seen((room,)), at(1.5 + CLAIM_GRACE_S))[1] == (room,)


def test_survivors_rank_among_the_live_mixers_only() -> None:
    dead = "m3"
    rooms = tuple(r for r in ROOMS if preferred_owner(r, MIXERS) == dead)
    assert rooms
    planners = {m: MaintenancePlanner(settings(m)) for m in ("m1", "m2")}
    got = {
        m: round_of(p, {}, seen(rooms, live=("m1", "m2")), at(0))[1] for m, p in planners.items()
    }
    assert sorted(got["m1"] + got["m2"]) == sorted(rooms)  # at once, no grace


def test_this_mixer_is_live_even_before_redis_lists_it() -> None:
    p = MaintenancePlanner(settings("m9"))
    assert round_of(p, {}, seen(ROOMS[:3], live=()), at(0))[1] == ROOMS[:3]


def test_claims_stop_at_max_rooms() -> None:
    p = MaintenancePlanner(settings("m1", max_rooms=3))
    owned = {"mine": 0}
    ask = p.ask(owned, set(), at(0))
    plan = p.plan(owned, ask, seen(("mine", *ROOMS), live=()))
    assert "mine" not in plan.check_free
    assert p.claims({r: False for r in plan.check_free}, plan.live, 1, at(0)) == ROOMS[:2]
    full = {r: 0 for r in ("a", "b", "c")}
    assert p.plan(full, p.ask(full, set(), at(1)), seen(ROOMS)).check_free == ()


def test_a_claimed_room_stops_waiting() -> None:
    p = MaintenancePlanner(settings("m1"))
    room = next(r for r in ROOMS if preferred_owner(r, MIXERS) != "m1")
    round_of(p, {}, seen((room,)), at(0))
    p.claimed(room)
    assert round_of(p, {}, seen((room,)), at(CLAIM_GRACE_S))[1] == ()


# --- leases, release --------------------------------------------------------------------------


def test_lost_leases_are_dropped_and_reacquired_ones_rewritten() -> None:
    p = MaintenancePlanner(settings())
    rooms = {"a": 0, "b": 0, "c": 0}
    ask = p.ask(rooms, set(), at(0))
    assert ask.renew == ("a", "b", "c")
    leases = {"a": LeaseResult.LOST, "b": LeaseResult.RENEWED, "c": LeaseResult.REACQUIRED}
    plan = p.plan(rooms, ask, seen(("a", "b", "c"), leases=leases))
    assert plan.drop == ("a",) and plan.rewrite == ("c",)
    assert plan.retire == () and plan.check_free == ()  # "a" is another mixer's now


def test_a_room_is_released_after_room_release_s_unused() -> None:
    p = MaintenancePlanner(settings())
    rooms = {
        "busy": 0,
        "almost": IDLE - 1,
        "idle": IDLE,
    }
    plan = p.plan(rooms, p.ask(rooms, set(), at(0)), seen(tuple(rooms)))
    assert plan.retire == ("idle",)


def test_a_retired_room_is_not_claimed_back_by_its_own_mixer() -> None:
    p = MaintenancePlanner(settings("m1"))
    room = next(r for r in ROOMS if preferred_owner(r, MIXERS) == "m1")
    rooms = {room: IDLE}
    plan = p.plan(rooms, p.ask(rooms, set(), at(0)), seen((room,)))
    assert plan.retire == (room,) and room not in plan.check_free


def test_a_lost_room_is_neither_retired_nor_refreshed() -> None:
    p = MaintenancePlanner(settings())
    rooms = {"a": IDLE}
    ask = p.ask(rooms, set(), at(0))
    assert ask.refresh_material
    plan = p.plan(rooms, ask, seen(leases={"a": LeaseResult.LOST}), keeping_material={"a"})
    assert plan.drop == ("a",) and plan.retire == () and plan.refresh_material == ()


# --- heartbeats -------------------------------------------------------------------------------


def test_the_heartbeat_windows_follow_the_ttls() -> None:
    ask = MaintenancePlanner(settings()).ask({}, set(), at(100))
    assert ask.live_since_s == WALL + 100 - 3.0  # one lease TTL
    assert ask.prune_before_s == WALL + 100 - 4.0  # two heartbeat TTLs


# --- dead gateways ----------------------------------------------------------------------------


def test_a_gateway_is_dead_when_its_heartbeat_expired_but_it_had_registered() -> None:
    p = MaintenancePlanner(settings())
    rooms = {"a": 0, "b": 0}
    ask = p.ask(rooms, {"gw3", "gw1", "gw2"}, at(0))
    assert ask.gateways == ("gw1", "gw2", "gw3")
    gateways = {
        "gw1": GatewaySeen(alive=True, registered=True),
        "gw2": GatewaySeen(alive=False, registered=True),
        "gw3": GatewaySeen(alive=False, registered=False),  # never registered: left alone
    }
    plan = p.plan(rooms, ask, seen(("a", "b"), gateways=gateways))
    assert plan.dead_gateways == {"gw2"}


def test_no_gateways_no_questions() -> None:
    assert MaintenancePlanner(settings()).ask({"a": 0}, set(), at(0)).gateways == ()


# --- idle delete ------------------------------------------------------------------------------


def test_idle_rooms_are_swept_every_sweep_s_with_the_idle_deadline() -> None:
    p = MaintenancePlanner(settings())
    first = p.ask({}, set(), at(0))
    assert first.idle_before_s == WALL - IDLE_DELETE_S
    assert p.ask({}, set(), at(SWEEP_S - 0.1)).idle_before_s is None
    later = p.ask({}, set(), at(SWEEP_S))
    assert later.idle_before_s == WALL + SWEEP_S - IDLE_DELETE_S
    due = tuple(f"old{i}" for i in range(SWEEP_BATCH + 5))
    plan = p.plan({}, later, seen(idle_due=due))
    assert plan.delete == due[:SWEEP_BATCH]
    assert plan.delete_before_s == later.idle_before_s


def test_no_sweep_due_deletes_nothing() -> None:
    p = MaintenancePlanner(settings())
    p.ask({}, set(), at(0))
    ask = p.ask({}, set(), at(1))
    assert p.plan({}, ask, seen(idle_due=("x",))).delete == ()


# --- material ---------------------------------------------------------------------------------


def test_material_of_rooms_in_use_is_refreshed_every_period() -> None:
    p = MaintenancePlanner(settings())
    rooms = {
        "a": 0,
        "b": 0,
        "c": IDLE,  # retired now
    }
    keeping = {"a", "c"}  # "b" lists nothing or has nobody connected

    def refresh(t: float) -> tuple[str, ...]:
        ask = p.ask(rooms, set(), at(t))
        return p.plan(rooms, ask, seen(tuple(rooms)), keeping).refresh_material

    assert refresh(0) == ("a",)
    assert refresh(MATERIAL_PERIOD_S - 0.5) == ()
    assert refresh(MATERIAL_PERIOD_S) == ("a",)


# --- trimming ---------------------------------------------------------------------------------


def test_the_input_stream_is_trimmed_to_what_a_successor_needs() -> None:
    now_ms = 10_000
    # Applied and no ring: everything read goes.
    assert trim_from(b"9000-1", b"5000-0", False, False, now_ms) == b"9000-1"
    # A ring with a checkpoint: keep what came after it, a new owner replays it.
    assert trim_from(b"9000-1", b"5000-0", True, False, now_ms) == b"5000-0"
    assert trim_from(b"9000-1", None, True, False, now_ms) == b"9000-1"
    # Stems recorded: the last STEMS_KEEP_MS stay as well.
    assert trim_from(b"9000-1", None, False, True, now_ms) == f"{now_ms - STEMS_KEEP_MS}-0".encode()
    assert trim_from(b"4000-0", None, False, True, now_ms) == b"4000-0"


def test_older_id() -> None:
    assert older_id(b"5000-3", 4000) == b"4000-0"
    assert older_id(b"3000-7", 4000) == b"3000-7"
    assert older_id(b"weird", 4000) == b"weird"


# --- handing rooms over -----------------------------------------------------------------------


def loads(**rooms: int) -> dict[str, PeerLoad]:
    return {m: PeerLoad(rooms=n, max_rooms=100) for m, n in rooms.items()}


def handover_round(
    p: MaintenancePlanner,
    owned: dict[str, int],
    between: set[str],
    now: Now,
    peers: dict[str, PeerLoad],
    live: tuple[str, ...] = ("m1", "m2"),
) -> tuple[tuple[str, str], ...]:
    ask = p.ask(owned, set(), now)
    observed = Observed(
        live=frozenset(live), active=frozenset(owned), leases={}, gateways={}, peers=peers
    )
    return p.plan(owned, ask, observed, frozenset(), between, now).hand_over


def rooms_preferring(mixer: str, n: int, live: tuple[str, ...] = ("m1", "m2")) -> list[str]:
    return [r for r in ROOMS if preferred_owner(r, live) == mixer][:n]


def test_rooms_between_songs_go_to_the_mixer_that_ranks_first_after_the_calm() -> None:
    p = MaintenancePlanner(settings("m1"))
    theirs = rooms_preferring("m2", 2)
    ours = rooms_preferring("m1", 2)
    owned = dict.fromkeys(theirs + ours, 0)
    calm = set(owned)
    assert handover_round(p, owned, calm, at(0), loads(m2=0)) == ()
    assert handover_round(p, owned, calm, at(HANDOVER_CALM_S - 0.1), loads(m2=0)) == ()
    moved = handover_round(p, owned, calm, at(HANDOVER_CALM_S), loads(m2=0))
    # Only the rooms that rank m2 first, and only while it evens the load (4 - 0, 3 - 1).
    assert moved == tuple((r, "m2") for r in sorted(theirs)), moved


def test_a_room_still_singing_is_not_handed_over_and_its_calm_starts_again() -> None:
    p = MaintenancePlanner(settings("m1"))
    room, *others = rooms_preferring("m2", 1) + rooms_preferring("m1", 3)
    owned = dict.fromkeys([room, *others], 0)
    assert handover_round(p, owned, {room}, at(0), loads(m2=0)) == ()
    # A song starts (or its end is still playing): not between songs, the calm resets.
    assert handover_round(p, owned, set(), at(3), loads(m2=0)) == ()
    assert handover_round(p, owned, {room}, at(4), loads(m2=0)) == ()
    assert handover_round(p, owned, {room}, at(4 + HANDOVER_CALM_S - 0.1), loads(m2=0)) == ()
    assert handover_round(p, owned, {room}, at(4 + HANDOVER_CALM_S), loads(m2=0)) == ((room, "m2"),)


def test_no_handover_that_would_not_even_the_load() -> None:
    p = MaintenancePlanner(settings("m1"))
    room = rooms_preferring("m2", 1)[0]
    other = rooms_preferring("m1", 1)[0]
    owned = {room: 0, other: 0}
    handover_round(p, owned, set(owned), at(0), loads(m2=1))
    # 2 against 1: moving one would leave 1 against 2.
    assert handover_round(p, owned, set(owned), at(HANDOVER_CALM_S), loads(m2=1)) == ()
    assert handover_round(p, owned, set(owned), at(HANDOVER_CALM_S), loads(m2=0)) == ((room, "m2"),)


def test_no_handover_to_a_full_a_silent_or_an_older_mixer() -> None:
    theirs = rooms_preferring("m2", 3)
    owned = dict.fromkeys(theirs + rooms_preferring("m1", 3), 0)
    for peers in (
        {"m2": PeerLoad(rooms=5, max_rooms=5)},  # full
        {},  # its heartbeat could not be read
        {"m2": PeerLoad(rooms=0, max_rooms=0)},  # does not say how many it takes
    ):
        p = MaintenancePlanner(settings("m1"))
        handover_round(p, owned, set(owned), at(0), peers)
        assert handover_round(p, owned, set(owned), at(HANDOVER_CALM_S), peers) == (), peers
    # Room for one more: one room goes.
    p = MaintenancePlanner(settings("m1"))
    peers = {"m2": PeerLoad(rooms=4, max_rooms=5)}
    handover_round(p, owned, set(owned), at(0), peers)
    assert len(handover_round(p, owned, set(owned), at(HANDOVER_CALM_S), peers)) == 1


def test_a_mixer_never_hands_on_a_room_that_ranks_it_first() -> None:
    p = MaintenancePlanner(settings("m2"))
    owned = dict.fromkeys(rooms_preferring("m2", 6), 0)
    handover_round(p, owned, set(owned), at(0), loads(m1=0))
    assert handover_round(p, owned, set(owned), at(HANDOVER_CALM_S), loads(m1=0)) == ()


def test_at_most_a_batch_per_round_and_retired_rooms_are_not_handed_over() -> None:
    p = MaintenancePlanner(settings("m1"))
    theirs = rooms_preferring("m2", HANDOVER_BATCH + 3)
    owned = dict.fromkeys(theirs + rooms_preferring("m1", HANDOVER_BATCH + 3), 0)
    owned[theirs[0]] = IDLE  # unused long enough: retired, not handed over
    handover_round(p, owned, set(owned), at(0), loads(m2=0))
    moved = handover_round(p, owned, set(owned), at(HANDOVER_CALM_S), loads(m2=0))
    assert len(moved) == HANDOVER_BATCH
    assert theirs[0] not in {room for room, _ in moved}


def test_the_peers_read_are_the_other_live_mixers_of_the_last_round() -> None:
    p = MaintenancePlanner(settings("m1"))
    assert p.ask({}, set(), at(0)).peers == ()
    p.plan({}, p.ask({}, set(), at(0)), seen(live=("m3", "m2")))
    assert p.ask({}, set(), at(1)).peers == ("m2", "m3")


@given(
    owned_n=st.integers(0, 20),
    peer_n=st.integers(0, 20),
    max_rooms=st.integers(0, 25),
    calm_s=st.floats(0, 20),
)
def test_a_handover_only_moves_rooms_to_their_first_mixer_and_never_past_even(
    owned_n: int, peer_n: int, max_rooms: int, calm_s: float
) -> None:
    p = MaintenancePlanner(settings("m1"))
    owned = dict.fromkeys(ROOMS[:owned_n], 0)
    peers = {"m2": PeerLoad(rooms=peer_n, max_rooms=max_rooms)}
    handover_round(p, owned, set(owned), at(0), peers)
    moved = handover_round(p, owned, set(owned), at(calm_s), peers)
    assert len(moved) <= HANDOVER_BATCH
    if calm_s < HANDOVER_CALM_S:
        assert moved == ()
    for room, target in moved:
        assert room in owned and target == "m2" == preferred_owner(room, ("m1", "m2"))
    if moved:
        assert owned_n - len(moved) >= peer_n + len(moved)
        assert peer_n + len(moved) <= max_rooms
