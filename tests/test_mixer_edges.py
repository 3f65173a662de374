"""The mixer at its edges: Prometheus metrics from a real process, Redis quirks."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from common import keys, process
from common.commands import SetDelay
from common.heartbeat import Heartbeat
from common.settings import MixerSettings
from mixer.service import MixerService
from tests.simgateway import SimGateway
from tests.support import Process, free_port, processes, wait_for


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_a_mixer_serves_prometheus_metrics(redis_url: str, output_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    sim = SimGateway(client)
    port = free_port()
    with processes(output_dir) as started:
        env = {"REDIS_URL": redis_url, "BB_MIXER_ID": "mm", "BB_METRICS_PORT": str(port)}
        started.append(Process(["mixer"], env, output_dir, "mm"))
        sim.create_room("metered")
        wait_for(lambda: sim.owner("metered") == "mm", 10, "the mixer to own the room")
        assert sim.join("metered", "ann", "Ann").ok
        wait_for(lambda: scrape(port).get('bb_mixer_rooms{mixer="mm"}') == 1, 10, "metrics")
        values = scrape(port)
        assert values['bb_mixer_commands_total{mixer="mm"}'] >= 1
        assert values['bb_mixer_room_members{mixer="mm",room="metered"}'] == 1
        assert 'bb_mixer_chunks_in_total{mixer="mm"}' in values
    client.close()


class _ClosingRedis:
    """Stands in for redis-py under uvloop against a server that accepts and closes:
    every call raises a bare RuntimeError (see ECOSYSTEM.md)."""

    def __init__(self) -> None:
        self.calls = 0
        self.retried = asyncio.Event()
        """Set once asked three times: the caller retried rather than gave up."""

    async def exists(self, *_args: Any) -> None:
        self.calls += 1
        if self.calls >= 3:
            self.retried.set()
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    def register_script(self, _script: str) -> object:
        return object()


async def test_a_runtime_error_from_redis_is_retried_not_fatal() -> None:
    who = Heartbeat.mixer("quirk", 3000)
    stop = asyncio.Event()
    closing = _ClosingRedis()
    waiting = asyncio.create_task(process.claim_id(closing, who, stop))  # type: ignore[arg-type]
    await asyncio.wait_for(closing.retried.wait(), 10)
    assert not waiting.done(), "the runtime gave up instead of retrying"
    stop.set()
    assert await asyncio.wait_for(waiting, 5) == 0  # stopped while waiting: a clean exit


@pytest.mark.parametrize("failures", [1, 4, 20])
def test_the_mixer_backs_off_with_jitter_inside_the_shared_curve(failures: int) -> None:
    service = MixerService(MixerSettings(mixer_id="curve"), _ClosingRedis())  # type: ignore[arg-type]
    nominal = service.health.backoff.nominal_s(failures)
    pauses = {service.health.backoff.compute(failures) for _ in range(50)}
    assert all(nominal / 2 <= p <= nominal for p in pauses)
    assert len(pauses) > 1  # jittered: processes that failed together spread out


def test_short_lived_taps_do_not_leak_streams(redis_url: str, output_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    sim = SimGateway(client)
    with processes(output_dir) as started:
        env = {"REDIS_URL": redis_url, "BB_MIXER_ID": "mt", "BB_TAP_TTL_MS": "1500"}
        started.append(Process(["mixer"], env, output_dir, "mt"))
        sim.create_room("fidget")
        wait_for(lambda: sim.owner("fidget") == "mt", 10, "the mixer to own the room")
        assert sim.join("fidget", "ann", "Ann").ok
        # A new delay every ~120 ms: each tap lives about one tick, less than a publish
        # period, so only a TTL set with its first window makes its stream expire.
        for i in range(25):
            assert sim.command("fidget", "ann", SetDelay(delay_s=5.0 + i * 0.25)).ok
            time.sleep(0.12)
        final = sim.member_delay("fidget", "ann")
        time.sleep(3.0)
        left = sorted(
            bytes(k).decode() for k in client.scan_iter(match=keys.room_tap("fidget", 0)[:-1] + "*")
        )
        assert left == [keys.room_tap("fidget", final)], left
    client.close()


def test_a_room_the_mixer_cannot_run_as_stored_runs_on_the_defaults(
    redis_url: str, output_dir: Path
) -> None:
    """A meta record that reads but gives a room this mixer cannot run (buckets closer
    than its lead allows, or more of them than its ring holds) is bad input: the room
    runs on the defaults, and the mixer goes on serving the others."""
    client = redis.Redis.from_url(redis_url)
    sim = SimGateway(client)
    with processes(output_dir) as started:
        mixer = Process(["mixer"], {"REDIS_URL": redis_url, "BB_MIXER_ID": "mb"}, output_dir, "mb")
        started.append(mixer)
        sim.create_room("tight", bucket_spacing_s=0.1)
        sim.create_room("long", bucket_spacing_s=30.0, n_buckets=8)
        sim.create_room("fine")
        for room in ("tight", "long", "fine"):
            wait_for(lambda r=room: sim.owner(r) == "mb", 10, f"the mixer to own {room}")
        for room in ("tight", "long", "fine"):
            assert sim.join(room, "ann", "Ann").ok
            assert sim.member_delay(room, "ann") > 0
        assert mixer.proc.poll() is None
    assert "bad meta" in (output_dir / "mb.log").read_text()
    client.close()
