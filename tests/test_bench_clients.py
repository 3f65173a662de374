"""The benchmarks' clients still run: each main benchmark, as small as it goes.

``make bench`` and ``make capacity`` are run by hand, so a benchmark whose client
falls behind the protocol (``bench.gateway``'s join once failed on the
``material`` message that now comes before ``welcome``) broke unnoticed. Here
each runs as an operator runs it (``python -m bench.X`` in a process of its own,
on real redis-server, mixer and gateway processes where it starts them) with
the smallest parameters it takes, and the test checks that it exits 0, prints
its table and writes its JSON with the headline figures present and numeric.

Their values are not checked: on a shared two-core machine a one-second window
says nothing about the durations, CPU, ratios, overruns or latencies measured
(docs/performance.md has the real runs). The JSON goes to a temporary
directory (``BB_BENCH_RESULTS_DIR``, bench/results.py), never to the
repository's ``bench-results/``; so do the benchmarks' temporary files (``TMPDIR``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.results import DEFAULT_RESULTS_DIR, RESULTS_DIR_ENV
from tests.support import REPO

RUN_TIMEOUT_S = 240.0
"""Only against a hung benchmark (its process group is killed); no duration is checked."""

pytestmark = pytest.mark.timeout(RUN_TIMEOUT_S + 60)


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.exists() else None


def run_bench(tmp_path: Path, module: str, name: str, *args: str) -> tuple[str, dict[str, Any]]:
    """Run ``python -m module args``; return its output and the JSON it wrote as ``name``."""
    out = tmp_path / "results"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    in_repo = DEFAULT_RESULTS_DIR / f"{name}.json"
    before = _mtime(in_repo)
    env = {**os.environ, RESULTS_DIR_ENV: str(out), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its group is killed if it hangs: its servers too
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{module} hung\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-5000:]}")
    assert proc.returncode == 0, (
        f"{module} {' '.join(args)} exited {proc.returncode}\n"
        f"--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-5000:]}"
    )
    written = out / f"{name}.json"
    assert written.is_file(), f"{module} wrote no {written}; it wrote {sorted(out.glob('*'))}"
    assert _mtime(in_repo) == before, f"{module} wrote the repository's {in_repo}"
    results: dict[str, Any] = json.loads(written.read_text(encoding="utf-8"))
    return stdout, results


def numeric(results: dict[str, Any], *path: str) -> float:
    """The figure at ``path`` in ``results``: present, a number (not a bool), finite."""
    value: Any = results
    for i, key in enumerate(path):
        where = ".".join(path[: i + 1])
        assert isinstance(value, dict), f"{where}: {value!r} is no mapping"
        assert key in value, f"no {where} in the results, only {sorted(value)}"
        value = value[key]
    assert isinstance(value, int | float) and not isinstance(value, bool), (
        f"{'.'.join(path)} is {value!r}, not a number"
    )
    assert math.isfinite(value), f"{'.'.join(path)} is {value}"
    return float(value)


def test_gateway_bench_runs(tmp_path: Path) -> None:
    stdout, results = run_bench(
        tmp_path, "bench.gateway", "gateway", "--singers", "3", "--seconds", "1", "--repeat", "1",
        "--room-size", "2",
    )  # fmt: skip
    assert "Gateway: 3 singers in 2 room(s) over real WebSockets" in stdout, stdout
    assert "gateway / raw decode (each run)" in stdout, stdout
    assert numeric(results, "singers") == 3
    assert numeric(results, "rooms") == 2
    for key in (
        "cpu_ms_per_singer_second",
        "opus_decode_ms_per_singer_second",
        "gateway_over_decode_median",
        "cpu_ms_per_singer_second_100ms_messages",
        "aiohttp_receive_floor_ms_per_singer_second",
        "aiohttp_receive_floor_ms_per_singer_second_100ms_messages",
        "gateway_cpu_percent",
        "singer_seconds",
        "frames_dropped",
        "decode_errors",
    ):
        numeric(results, key)
    # The singers got the room's audio back through their taps.
    assert numeric(results, "frames_received_by_clients") > 0
    assert numeric(results, "client_errors") == 0
    # Its processes' logs are kept beside the results, one folder per run.
    logs = Path(results["logs"])
    assert logs.parent == tmp_path / "results" / "gateway-logs", logs
    assert sorted(p.name for p in logs.iterdir()) == ["gateway.log", "mixer.log"], logs


def test_mixer_rooms_bench_runs(tmp_path: Path) -> None:
    stdout, results = run_bench(
        tmp_path, "bench.mixer_rooms", "mixer_rooms",
        "--singers", "2", "--room-size", "1", "--warmup-s", "0.5", "--measure-s", "0.5",
        "--rounds", "1",
    )  # fmt: skip
    assert "rooms of 1 / one room of 2 (median of 1)" in stdout, stdout
    for layout in ("one-room", "rooms-of-1"):
        assert f"{layout:>12}: mixer " in stdout, stdout
        for key in (
            "mixer_ms_per_singer_second",
            "redis_ms_per_singer_second",
            "redis_disk_bytes_per_singer_second",
            "tick_overruns",
        ):
            numeric(results, "medians", layout, key)
        assert len(results["runs"][layout]) == 1
    for key in ("mixer_ms_per_singer_second", "redis_ms_per_singer_second"):
        numeric(results, "ratio_rooms_to_one_room", key)


def test_audience_bench_runs(tmp_path: Path) -> None:
    stdout, results = run_bench(
        tmp_path, "bench.audience", "audience",
        "--listeners", "0,2", "--singers", "2", "--gateways", "1", "--listener-procs", "1",
        "--sample", "1", "--warmup-s", "2", "--measure-s", "1", "--settle-s", "1",
        "--realtime", "0", "--keep-going",
    )  # fmt: skip
    assert "audience (cores = CPU seconds per second)" in stdout, stdout
    assert "listeners carried:" in stdout, stdout
    numeric(results, "max_listeners")
    steps = results["steps"]
    assert [step["listeners"] for step in steps] == [0, 2]
    for step in steps:
        assert step["listeners_connected"] == step["listeners"], step
        assert step["singers_joined"] == 2, step
        for key in (
            "singers_late_pct",
            "singers_missing_pct",
            "tick_overruns",
            "listeners_missing_pct",
            "listeners_late_pct",
            "gateway_cores",
            "mixer_cores",
            "redis_cores",
            "generator_cores",
        ):
            numeric(step, key)
    numeric(steps[1], "gateway_ms_per_listener_s")


def test_capacity_bench_runs_on_both_stacks(tmp_path: Path) -> None:
    stdout, results = run_bench(
        tmp_path, "bench.capacity", "capacity",
        "--steps", "2", "--gateways", "1", "--warmup-s", "2", "--measure-s", "1",
        "--settle-s", "1", "--scenarios", "one-room,rooms", "--room-size", "1",
        "--stack", "deployment,bare", "--realtime", "0", "--quiet-wait-s", "0",
    )  # fmt: skip
    assert "max_singers = " in stdout, stdout
    for stack in ("deployment", "bare"):
        for scenario in ("one-room", "rooms-of-1"):
            assert f"{stack} {scenario}: max_singers = " in stdout, stdout
    numeric(results, "max_singers")
    for stack in ("deployment", "bare"):
        numeric(results, "max_singers_by_stack", stack)
    ran = [(s["stack"], s["scenario"]) for s in results["scenarios"]]
    assert sorted(ran) == sorted(
        (stack, scenario)
        for stack in ("deployment", "bare")
        for scenario in ("one-room", "rooms-of-1")
    )
    for scenario in results["scenarios"]:
        numeric(scenario, "max_singers")
        [step] = scenario["steps"]
        assert step["singers"] == 2
        for group in ("total", "all-gateway", "all-mixer", "all-redis", "all-generator"):
            numeric(step["cpu"], group, "ms_per_singer_second")
        numeric(step["window"], "bad_fraction")
    # The deployment stack's keeper and recorder were started and measured.
    deployment = [s for s in results["scenarios"] if s["stack"] == "deployment"]
    for scenario in deployment:
        for group in ("all-keeper", "all-recorder", "all-stateredis"):
            numeric(scenario["steps"][0]["cpu"], group, "ms_per_singer_second")


def test_statebytes_bench_runs(tmp_path: Path) -> None:
    stdout, results = run_bench(
        tmp_path, "bench.statebytes", "statebytes",
        "--members", "1", "--lyrics", "1", "--cues", "0", "--listeners", "0",
        "--cues-so-far", "0",
    )  # fmt: skip
    assert "One state change in a room of 1 members" in stdout, stdout
    assert "One lyric cue in that room with 0 cues so far" in stdout, stdout
    for key in (
        "state_bytes_before",
        "state_bytes_after",
        "material_message_bytes",
        "ratio",
        "per_change_bytes_before",
        "per_change_bytes_after",
    ):
        numeric(results, key)
    for key in ("per_page_before", "per_page_after", "cues_message_bytes", "ratio"):
        numeric(results, "cue", key)
