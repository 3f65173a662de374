"""The keeper's parts: which keys are durable (pure), copy / restore between two
real redis-servers (keeper/copier.py), and ``--check`` of a real keeper process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from brigade.redisserver import LocalRedis
from common import keys
from keeper import copier, durable
from tests.support import REPO, Process, processes, wait_for


def test_the_rooms_state_is_durable_and_the_audio_is_not() -> None:
    room = "Choir_1-a"
    kept = [
        keys.room_meta(room),
        keys.room_members(room),
        keys.room_song(room),
        keys.room_tokens(room),
        keys.room_links(room),
        keys.room_track(room, "t1"),
        keys.room_image(room, "i1"),
    ]
    for key in kept:
        assert durable.room_of(key) == room, key
    not_kept = [
        keys.room_in(room),
        keys.room_ctl(room),
        keys.room_events(room),
        keys.room_tap(room, 48000),
        keys.room_tap(room, 48000, "solo"),
        keys.room_checkpoint(room),
        keys.room_occupancy(room),
        keys.room_stats(room),
        keys.room_lease(room),
        keys.room_reclease(room),
        keys.room_guesses(room),
        keys.room_guesser(room, "10.0.0.1"),
        keys.ROOMS,
        keys.ACTIVE_ROOMS,
        keys.IDLE_ROOMS,
        keys.mixer_heartbeat("m"),
        keys.client_guesses("10.0.0.1"),
        durable.MARKER,
    ]
    for key in not_kept:
        assert durable.room_of(key) is None, key
    # Every fixed room key is one or the other, and the listed ones are classified.
    assert {k for k in keys.room_keys(room) if durable.room_of(k)} == set(kept[:5])
    assert durable.is_meta(keys.room_meta(room)) and not durable.is_meta(keys.room_song(room))


def test_keyspace_channels_and_notification_classes() -> None:
    meta = keys.room_meta("r")
    assert durable.key_of_channel(f"__keyspace@0__:{meta}") == meta
    assert durable.key_of_channel(f"__keyspace@0__:{keys.room_in('r')}") is None
    assert durable.key_of_channel(f"__keyevent@0__:{meta}") is None
    assert all(p.startswith("__keyspace@*__:bb:{*}:") for p in durable.patterns())
    # Classes already set are kept; streams (the audio) are not asked for.
    assert set(durable.merged_classes("")) == set("Kg$hx")
    assert set(durable.merged_classes("Ex")) == set("EKg$hx")
    assert "t" not in durable.merged_classes("") and "A" not in durable.merged_classes("")
    assert set(durable.merged_classes("AE")) == set("AEK")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Redis, Redis]]:
    main, state = LocalRedis(), LocalRedis()
    main.start()
    state.start()
    a, b = Redis(port=main.port), Redis(port=state.port)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()
        main.stop()
        state.stop()


async def test_copy_sync_and_restore_keep_values_and_time_to_live(
    pair: tuple[Redis, Redis],
) -> None:
    main, store = pair
    meta, members, track = keys.room_meta("a"), keys.room_members("a"), keys.room_track("a", "t")
    await main.hset(meta, mapping={"password_hash": "pbkdf2$x", "capacity": "10"})
    await main.hset(members, mapping={"s1": "ann", "s2": "bob"})
    await main.set(track, b"OggS" * 100, px=600_000)
    await main.xadd(keys.room_in("a"), {"d": b"audio"})
    await store.hset(keys.room_meta("gone"), "capacity", "5")  # deleted while away

    done = await copier.sync(main, store)
    assert (done.written, done.deleted) == (3, 1)
    assert sorted(await store.keys("*")) == sorted(k.encode() for k in (meta, members, track))
    assert 0 < await store.pttl(track) <= 600_000
    # A key deleted in the audio Redis is deleted from the copy.
    await main.delete(members)
    assert (await copier.copy(main, store, [members])).deleted == 1
    assert not await store.exists(members)
    await main.hset(members, "s1", "ann")
    await copier.copy(main, store, [members])

    # The audio Redis restarts empty; before the restore a gateway re-creates the room
    # by name without a password, and a mixer writes its members back.
    await main.flushall()
    await main.hset(meta, mapping={"password_hash": "", "capacity": "99"})
    await main.hset(members, "s3", "cat")
    restored = await copier.restore(store, main)
    assert (restored.keys, restored.kept, restored.rooms) == (1, 2, 1)
    assert await main.hget(meta, "password_hash") == b"pbkdf2$x"  # the stored one wins
    assert await main.hgetall(members) == {b"s3": b"cat"}  # written meanwhile: kept
    assert await main.get(track) == b"OggS" * 100 and 0 < await main.pttl(track) <= 600_000
    assert await main.smembers(keys.ROOMS) == {b"a"}
    assert await main.zscore(keys.IDLE_ROOMS, "a") is not None
    assert not await main.exists(keys.room_in("a"))


def test_check_wants_a_live_keeper_and_the_marker_and_says_both(output_dir: Path) -> None:
    """``brigade keeper --check`` used to look at the marker only, which outlives the
    keeper: a stopped keeper was reported healthy."""
    main, state = LocalRedis(), LocalRedis()
    main.start()
    state.start()
    client = redis.Redis(port=main.port)
    env = {"REDIS_URL": main.url, "BB_STATE_REDIS_URL": state.url, "BB_KEEPER_ID": "kc"}

    def check() -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "brigade", "keeper", "--check"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=REPO,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout

    try:
        with processes(output_dir) as started:
            keeper = Process(["keeper"], env, output_dir, "keeper")
            started.append(keeper)
            wait_for(lambda: client.exists(durable.MARKER), 20, "the keeper's marker")
            wait_for(lambda: client.exists(keys.keeper_heartbeat("kc")), 20, "its heartbeat")
            code, said = check()
            assert code == 0 and said.startswith("healthy: keeper kc"), said
            assert f"({durable.MARKER} marker present)" in said
            assert keeper.stop() == 0
        assert "keeper kc stopping:" in keeper.log()
        # Stopped: its heartbeat is gone at once, the marker stays.
        assert client.exists(durable.MARKER) and not client.exists(keys.keeper_heartbeat("kc"))
        code, said = check()
        assert code == 1, said
        assert said.startswith("unhealthy: no heartbeat from keeper kc;"), said
        assert f"({durable.MARKER} marker present)" in said
    finally:
        client.close()
        main.stop()
        state.stop()
