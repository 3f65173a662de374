"""The mixer service against a real redis-server, as real `brigade mixer` processes."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from common import keys, records
from common.clock import now_samples
from common.commands import Disconnect, Lead, SetLeaderBoost, Start, Stop
from common.lease import preferred_owner
from common.records import MixerStatus
from common.streams import parse_entries
from tests.simgateway import CHUNK, SimGateway, Singer, assemble, collect, sing_until, tone
from tests.support import Process, RedisServer, processes, wait_until


def start_mixer(
    started: list[Process], url: str, log_dir: Path, mixer_id: str, **env: str
) -> Process:
    proc = Process(["mixer"], {"REDIS_URL": url, "BB_MIXER_ID": mixer_id, **env}, log_dir, mixer_id)
    started.append(proc)
    return proc


def owner(client: redis.Redis, room: str) -> str | None:
    return SimGateway(client).owner(room)


@pytest.fixture
def sim(redis_url: str) -> Iterator[SimGateway]:
    client = redis.Redis.from_url(redis_url)
    yield SimGateway(client)
    client.close()


def run_song(sim: SimGateway, room: str, seconds: float) -> tuple[int, int, int]:
    """Leader A (bucket 0) sings 440 Hz, follower B sings 660 Hz; returns (start, dA, dB)."""
    assert sim.join(room, "a", "Ann").ok
    assert sim.join(room, "b", "Bob").ok
    assert sim.command(room, "a", Lead()).ok
    # Unity gain for the leader, so the taps carry the tone sample-exactly.
    assert sim.command(room, "a", SetLeaderBoost(boost_db=0.0)).ok
    assert sim.command(room, "a", Start()).ok
    state = sim.state(room)
    start = int(state["song"]["start_pos"])
    da, db = sim.member_delay(room, "a"), sim.member_delay(room, "b")
    assert da < db
    singers = [Singer(sim, room, "a", 440, da, start), Singer(sim, room, "b", 660, db, start)]
    # The scenario: they sing for ``seconds``, at real-time pace.
    end = time.monotonic() + seconds
    sing_until(singers, lambda: time.monotonic() >= end, seconds + 5, "the song's end")
    return start, da, db


def test_chunks_come_back_in_the_right_tap(
    sim: SimGateway, redis_url: str, output_dir: Path
) -> None:
    with processes(output_dir) as started:
        start_mixer(started, redis_url, output_dir, "m1")
        sim.create_room("choir")
        wait_until(lambda: owner(sim.client, "choir") == "m1", 5, "m1 to own the room")
        start, da, db = run_song(sim, "choir", 1.5)
        sung = 6 * CHUNK  # the leader has surely sung this much by now
        # The follower's tap emits position p at p + db - lead; wait for it.
        wait_until(
            lambda: assemble(sim.taps("choir", db), start, sung) is not None, 10, "follower tap"
        )
        heard = assemble(sim.taps("choir", db), start, sung)
        assert heard is not None
        # Sample-exact: one voice is normalised by sqrt(3/(1+2)) = 1, and B is not in it.
        np.testing.assert_allclose(heard, tone(440, start, sung), atol=1e-6)
        # Nothing before the song started was mixed.
        before = assemble(sim.taps("choir", db), start - 960, 960)
        if before is not None:
            assert float(np.abs(before).max()) == 0.0
        # The leader hears nobody: its tap is silent throughout the song.
        leader_frames = collect(sim.taps("choir", da))
        assert leader_frames, "the leader's tap emits frames too"
        assert max(float(np.abs(f).max()) for f in leader_frames.values()) == 0.0
        stats = sim.client.hgetall(keys.room_stats("choir"))
        assert int(stats[b"chunks_in"]) >= 6


def rooms_ranking(mixers: tuple[str, ...], first: str, n: int) -> list[str]:
    """``n`` room names for which ``first`` ranks first among ``mixers``."""
    names = (f"room{i}" for i in itertools.count())
    return list(itertools.islice((r for r in names if preferred_owner(r, mixers) == first), n))


def test_a_mixer_added_later_gets_its_rooms_between_songs_and_failover_on_sigkill(
    sim: SimGateway, redis_url: str, output_dir: Path
) -> None:
    pair = ("m1", "m2")
    # Eight rooms, three of which rank m2 first: m1 owns them all until m2 comes.
    theirs = rooms_ranking(pair, "m2", 3)
    ours = rooms_ranking(pair, "m1", 5)
    rooms = sorted(theirs + ours)
    singing = theirs[0]
    with processes(output_dir) as started:
        m1 = start_mixer(started, redis_url, output_dir, "m1")
        for room in rooms:
            sim.create_room(room)
        wait_until(lambda: all(owner(sim.client, r) == "m1" for r in rooms), 10, "m1 owns all")
        _start, _da, db_singing = run_song(sim, singing, 0.5)  # its song keeps running

        m2 = start_mixer(started, redis_url, output_dir, "m2")
        # The rooms between songs that rank m2 first move to it once they have been
        # calm for HANDOVER_CALM_S; the one with a song does not.
        wait_until(
            lambda: all(owner(sim.client, r) == "m2" for r in theirs[1:]),
            30,
            "m2 to be handed the rooms between songs that rank it first",
        )
        assert all(owner(sim.client, r) == "m1" for r in ours), {
            r: owner(sim.client, r) for r in rooms
        }
        assert owner(sim.client, singing) == "m1"
        assert sim.state(singing)["song"]["running"]

        # Its song ends: once its end has played and the room has been calm, it moves too.
        assert sim.command(singing, "a", Stop()).ok
        wait_until(lambda: owner(sim.client, singing) == "m2", 60, "the sung room handed over")
        # It works on its new owner: a new song's audio reaches the follower's tap.
        before = parse_entries(sim.client.xrevrange(keys.room_tap(singing, db_singing), count=1))
        _start, _da, db = run_song(sim, singing, 0.5)
        since = before[0][0] if before else b"0-0"
        wait_until(lambda: len(sim.taps(singing, db, since=since)) > 0, 10, "taps from m2")
        wait_until(
            lambda: mixer_status(sim.client, "m1").counters["rooms_handed_over"] == len(theirs),
            5,
            "m1's heartbeat to count the three handovers",
        )

        room = ours[0]
        _start, _da, db = run_song(sim, room, 0.5)
        wait_until(lambda: len(sim.taps(room, db)) > 0, 5, "tap frames from m1")

        m1.kill()
        # Generous limits: a takeover at all is the behaviour; how fast it is, is
        # measured by bench/failover.py.
        wait_until(lambda: owner(sim.client, room) == "m2", 30, "m2 to take the room over")
        last_id = parse_entries(sim.client.xrevrange(keys.room_tap(room, db), count=1))[0][0]
        wait_until(
            lambda: len(sim.taps(room, db, since=last_id)) > 0, 30, "tap frames resumed by m2"
        )
        # The room's state survived the takeover.
        assert {m["singer_id"] for m in sim.state(room)["members"]} == {"a", "b"}
        assert sim.state(room)["song"]["running"]
        assert m2.alive()


def mixer_status(client: redis.Redis, mixer: str) -> MixerStatus:
    raw = client.get(keys.mixer_heartbeat(mixer))
    assert isinstance(raw, bytes), f"no heartbeat of {mixer}"
    return records.decode(raw, MixerStatus)


def test_redis_restart_mid_song(private_redis: RedisServer, output_dir: Path) -> None:
    client = redis.Redis(port=private_redis.port)
    sim = SimGateway(client)
    with processes(output_dir) as started:
        mixer = start_mixer(started, private_redis.url, output_dir, "m1")
        sim.create_room("choir")
        wait_until(lambda: owner(client, "choir") == "m1", 5, "m1 to own the room")
        _start, da, db = run_song(sim, "choir", 0.5)

        private_redis.stop()
        time.sleep(1.5)  # the scenario: Redis is away for 1.5 s
        private_redis.start()  # empty: nothing was persisted
        # The mixer re-claims its room and writes the state back...
        wait_until(lambda: owner(client, "choir") == "m1", 10, "lease re-asserted")
        wait_until(lambda: client.sismember(keys.ROOMS, "choir"), 5, "room re-registered")
        stored = client.hkeys(keys.room_members("choir"))
        assert {bytes(k).decode() for k in stored} == {"a", "b"}  # type: ignore[arg-type]
        wait_until(
            lambda: {m["singer_id"] for m in sim.state("choir")["members"]} == {"a", "b"},
            5,
            "a fresh state event",
        )
        # ...and audio flows again: the leader keeps singing, the follower's tap carries it.
        leader = Singer(sim, "choir", "a", 440, da, now_samples() - da - 2 * CHUNK)

        def heard() -> bool:
            frames = collect(sim.taps("choir", db))
            return any(float(np.abs(f).max()) > 0.1 for f in frames.values())

        sing_until([leader], heard, 10, "audio in the follower's tap after the restart")
        assert mixer.alive()
        assert "Redis unavailable" in mixer.log()
    client.close()


def test_streams_stay_bounded_with_a_slow_consumer(
    sim: SimGateway, redis_url: str, output_dir: Path
) -> None:
    with processes(output_dir) as started:
        start_mixer(started, redis_url, output_dir, "m1", BB_TAP_MAXLEN="20")
        sim.in_maxlen = 100
        sim.create_room("choir")
        wait_until(lambda: owner(sim.client, "choir") == "m1", 5, "m1 owns the room")
        run_song(sim, "choir", 0.2)
        db = sim.member_delay("choir", "b")
        # Nobody reads the tap for 4 s (a stalled gateway): it must stay bounded.
        time.sleep(4)  # the scenario: the stall
        assert sim.client.xlen(keys.room_tap("choir", db)) <= 20 + 100  # MAXLEN ~ slack
        # A flood of chunks: the input stream stays bounded too.
        for i in range(600):
            sim.push("choir", "a", now_samples() - 10 * 48000 - i, tone(440, 0, 480))
        assert sim.client.xlen(keys.room_in("choir")) <= 100 + 100
        # The mixer trims what it has consumed: the stream drains to its backlog.
        wait_until(lambda: sim.client.xlen(keys.room_in("choir")) <= 100, 3, "input trimmed")
        assert sim.client.xlen(keys.room_events("choir")) <= 500 + 100


def member(sim: SimGateway, room: str, singer: str) -> dict[str, object]:
    return next(m for m in sim.state(room)["members"] if m["singer_id"] == singer)


def test_connections_gateways_and_tokens(sim: SimGateway, redis_url: str, output_dir: Path) -> None:
    gw_a, gw_b = SimGateway(sim.client, gw="gw-a"), SimGateway(sim.client, gw="gw-b")
    with processes(output_dir) as started:
        start_mixer(started, redis_url, output_dir, "m1", BB_RECONNECT_GRACE_S="1")
        sim.create_room("choir")
        wait_until(lambda: owner(sim.client, "choir") == "m1", 5, "m1 owns the room")

        # A singer resumes through gateway B before gateway A notices the old socket died:
        # A's late disconnect must not undo the resume. (Gateways store the resume token.)
        sim.client.hset(keys.room_tokens("choir"), "ann", "digest")
        assert gw_a.join("choir", "ann", "Ann", conn="c1").ok
        assert gw_b.join("choir", "ann", "Ann", conn="c7").ok
        assert gw_a.command("choir", "ann", Disconnect(), conn="c1").ok
        assert member(sim, "choir", "ann")["connected"]
        assert gw_b.command("choir", "ann", Disconnect(), conn="c7").ok
        wait_until(lambda: not member(sim, "choir", "ann")["connected"], 3, "ann disconnected")

        # When the place expires (grace 1 s), the resume token goes with it.
        wait_until(
            lambda: not sim.client.hexists(keys.room_tokens("choir"), "ann"),
            5,
            "token removed with the expired member",
        )

        # A gateway that registered and then stopped heartbeating is dead: its singers
        # are marked disconnected; a live gateway's singers are not.
        now = time.time()
        sim.client.zadd(keys.GATEWAYS, {"gw-a": now, "gw-b": now})
        sim.client.set(keys.gateway_heartbeat("gw-b"), b"alive", px=60_000)
        assert gw_a.join("choir", "bob", "Bob", conn="c2").ok
        assert gw_b.join("choir", "cy", "Cy", conn="c8").ok
        wait_until(lambda: not member(sim, "choir", "bob")["connected"], 5, "bob disconnected")
        assert member(sim, "choir", "cy")["connected"]
