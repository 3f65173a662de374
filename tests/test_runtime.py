"""The process runtime (common/process.py): the id claim's pure core, then the claim
against a real Redis, in-process and with two real mixer processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import redis
from redis.asyncio import Redis

from common import keys, process, records
from common.heartbeat import Heartbeat, mixer_statuses
from common.idclaim import GRACE_S, Free, IdClaim, InUse, Wait
from common.records import MixerStatus
from common.settings import MixerSettings
from tests.support import REPO, Process, free_port, processes, wait_until


def _claim(ttl_s: float = 3.0) -> IdClaim:
    return IdClaim("mixer", "m1", ttl_s, lambda failures: 0.1 * failures)


# --- the pure core -----------------------------------------------------------------------


def test_a_free_id_starts_at_once() -> None:
    assert _claim().observe(0.0, held=False) == Free()


def test_a_held_id_is_waited_for_until_it_expires() -> None:
    claim = _claim()
    first = claim.observe(100.0, held=True)
    assert isinstance(first, Wait) and "held" in first.reason
    second = claim.observe(102.0, held=True)
    assert isinstance(second, Wait) and second.pause_s > first.pause_s  # backs off
    assert claim.observe(103.5, held=False) == Free()
    assert claim.failures == 0


def test_a_heartbeat_that_outlives_its_ttl_belongs_to_a_live_process() -> None:
    claim = _claim(ttl_s=3.0)
    assert isinstance(claim.observe(10.0, held=True), Wait)
    assert isinstance(claim.observe(10.0 + 3.0 + GRACE_S, held=True), Wait)  # not yet past
    verdict = claim.observe(10.0 + 3.0 + GRACE_S + 0.01, held=True)
    assert isinstance(verdict, InUse)
    assert "'m1' is in use by a live mixer" in verdict.message
    assert "BB_MIXER_ID" in verdict.message


def test_an_unreachable_redis_is_waited_for_without_a_bound() -> None:
    claim = _claim(ttl_s=1.0)
    verdicts = [claim.observe(float(t), held=None) for t in range(0, 3600, 60)]
    assert all(isinstance(v, Wait) and "unreachable" in v.reason for v in verdicts)
    assert claim.held_since is None  # Redis errors never start the in-use clock
    assert claim.observe(3600.0, held=False) == Free()


def test_the_in_use_clock_starts_when_the_key_is_first_seen_held() -> None:
    claim = _claim(ttl_s=1.0)
    claim.observe(0.0, held=None)
    claim.observe(50.0, held=None)
    assert isinstance(claim.observe(100.0, held=True), Wait)
    assert isinstance(claim.observe(101.0 + GRACE_S, held=True), Wait)
    assert isinstance(claim.observe(101.1 + GRACE_S, held=True), InUse)


# --- against a real Redis ----------------------------------------------------------------


def _who(ident: str, ttl_ms: int) -> Heartbeat:
    return Heartbeat.mixer(ident, ttl_ms)


async def test_the_claim_waits_for_a_dead_predecessors_heartbeat(redis_url: str) -> None:
    client = process.connect(MixerSettings(redis_url=redis_url))
    try:
        await client.set(keys.mixer_heartbeat("late"), b"old", px=600)
        result = await process.claim_id(client, _who("late", 3000), asyncio.Event())
        assert result is None
        assert not await client.exists(keys.mixer_heartbeat("late"))
    finally:
        await client.aclose()


async def test_the_claim_refuses_an_id_a_live_process_keeps(redis_url: str) -> None:
    client: Redis = process.connect(MixerSettings(redis_url=redis_url))
    try:
        await client.set(keys.mixer_heartbeat("kept"), b"alive")  # refreshed forever
        assert await process.claim_id(client, _who("kept", 200), asyncio.Event()) == 1
    finally:
        await client.aclose()


def _twin_env(kind: str, redis_url: str, output_dir: Path) -> dict[str, str]:
    env = {"REDIS_URL": redis_url, f"BB_{kind.upper()}_ID": "twin", "BB_HEARTBEAT_TTL_MS": "1000"}
    if kind == "gateway":
        env["BB_PORT"] = str(free_port())
    if kind == "recorder":
        env["BB_RECORDINGS_DIR"] = str(output_dir / "recordings")
    if kind == "keeper":  # its copy in another database of the same server (no rooms here)
        env["BB_STATE_REDIS_URL"] = redis_url.rsplit("/", 1)[0] + "/15"
    return env


@pytest.mark.parametrize("kind", ["mixer", "gateway", "recorder", "keeper"])
def test_a_second_process_with_a_live_ones_id_exits_non_zero(
    kind: str, redis_url: str, output_dir: Path
) -> None:
    """Every kind runs through the one runtime: the id claim, the heartbeat it reads,
    the summary at SIGTERM and the heartbeat dropped then (the gateway used to log
    its own line and keep its client apart)."""
    client = redis.Redis.from_url(redis_url)
    beat = {
        "mixer": Heartbeat.mixer,
        "gateway": Heartbeat.gateway,
        "recorder": Heartbeat.recorder,
        "keeper": Heartbeat.keeper,
    }[kind]("twin", 1000)
    with processes(output_dir) as started:
        first = Process([kind], _twin_env(kind, redis_url, output_dir), output_dir, "first")
        started.append(first)
        wait_until(lambda: bool(client.exists(beat.key)), 15, f"the first {kind}'s heartbeat")
        second = Process([kind], _twin_env(kind, redis_url, output_dir), output_dir, "second")
        started.append(second)
        assert second.proc.wait(30) == 1
        assert f"'twin' is in use by a live {kind}" in second.log()
        assert "Traceback" not in second.log()
        assert first.alive() and client.exists(beat.key)
        if kind == "mixer":
            raw = client.get(beat.key)
            assert records.decode(raw, MixerStatus).pid == first.proc.pid
        assert first.stop() == 0
    assert f"{kind} twin stopping:" in first.log()  # one counter summary on SIGTERM
    assert not client.exists(beat.key)  # dropped: the id is free at once
    if beat.registry is not None:
        assert client.zscore(beat.registry, "twin") is None


def test_a_recorder_started_before_redis_waits_for_it(output_dir: Path) -> None:
    """It used to die with a traceback on the id check's first Redis error."""
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "BB_RECORDER_ID": "early",
        "BB_RECORDINGS_DIR": str(output_dir / "recordings"),
    }
    with processes(output_dir) as started:
        recorder = Process(["recorder"], env, output_dir, "early")
        started.append(recorder)
        wait_until(lambda: "Redis unreachable" in recorder.log(), 15, "the wait to be logged")
        assert recorder.alive()
        assert recorder.stop() == 0
    assert "Traceback" not in recorder.log()


@pytest.mark.parametrize("kind", ["gateway", "recorder", "keeper"])
def test_every_kind_answers_check_through_the_runtime(kind: str, redis_url: str) -> None:
    """``--check`` with nothing running: exit 1, no traceback, for every kind."""
    done = subprocess.run(
        [sys.executable, "-m", "brigade", kind, "--check"],
        env={"REDIS_URL": redis_url, "BB_PORT": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("unhealthy")
    assert "Traceback" not in done.stderr


def test_mixer_statuses_leave_out_gone_and_unreadable_heartbeats() -> None:
    beat = MixerStatus(
        id="m1", nonce="n", pid=1, started=0.0, rooms=["a", "b"], counters={}, max_rooms=7
    )
    statuses = mixer_statuses(["m1", "m2", "m3"], [records.encode(beat), None, b"\xc1 not msgpack"])
    assert statuses == {"m1": beat}
    # A heartbeat of an older mixer, without max_rooms, reads as 0 (it takes no handed room).
    old = msgspec.msgpack.encode(
        {"id": "m4", "nonce": "n", "pid": 1, "started": 0.0, "rooms": [], "counters": {}}
    )
    assert mixer_statuses(["m4"], [old])["m4"].max_rooms == 0
