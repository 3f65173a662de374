"""Capacity: how many singers this machine carries (``python -m bench.capacity``).

Starts the whole stack as separate processes, exactly as an operator would:
a private redis-server, one ``brigade mixer`` and G ``brigade gateway``
processes, then drives it with ``brigade load`` (P worker processes on the
same machine) in a ramp: each step adds singers, lets them settle, and
measures a window while everyone sings.  A step **fails** when more than
0.1 % of the downstream frames expected in it were late or missing, when
the mixer overran a tick, or when a singer could not join or was
disconnected; the ramp stops at the first failure (a failure while other
processes used more than 0.15 cores is *inconclusive*: noted, and the ramp
goes on).  Two scenarios: one room
(6 buckets, a leader, the others spread by the server) with the singers
spread over the gateways, and several rooms of 50 with each room on one
gateway.

Three stacks (``--stack``, comma-separated):

- **deployment** (the default): what compose.yaml runs. The audio Redis
  keeps no file; a ``brigade keeper`` copies the rooms' durable keys to a
  state Redis that keeps its append-only file (AOF, fsync every second) in
  a fresh directory; a ``brigade recorder`` records every room's songs; the
  mixer writes its failover checkpoints (on by default).
- **aof**: the deployment before the keeper: the one Redis keeps its AOF
  (what ``brigade up --redis-dir`` did), a recorder, checkpoints; no keeper.
- **bare**: the stack the first measurements used: Redis in memory only, no
  recorder (checkpoints on, as the mixer's default).

``--stack deployment,bare`` runs both, one after the other, each scenario on
a fresh stack, and prints them side by side.  Besides CPU, every step
records the bytes the Redis servers and the recorder wrote to disk
(``write_bytes`` of ``/proc/PID/io``, and the growth of the AOF directory)
per singer-second.

Run as root, it puts the mixer and Redis in the real-time scheduling class
(``--realtime 10``; ``--realtime 0`` for the normal scheduler): the mixer's
tick has a 100 ms deadline, and with the gateways and the generator sharing
two cores it otherwise misses ticks waiting for a CPU well before the
machine is saturated (docs/performance.md).

For every step it records each component's CPU (utime + stime from
/proc/PID/stat) in ms per singer-second, and writes
``bench-results/capacity.json`` with ``max_singers``: the last step that
passed, in the worse of the two scenarios.  docs/performance.md explains
the method and records the results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.procstat import CLK_TCK, cpu_s
from bench.results import results_dir, write_results
from common.aio import EVENT_LOOPS
from loadgen.cli import prepare
from loadgen.run import LoadConfig, LoadRun, WindowResult
from tests.support import Process, RedisServer, free_port, wait_for

STACKS: Final = ("deployment", "aof", "bare")
"""``deployment``: a keeper and a state Redis with its AOF, a recorder (compose.yaml);
``aof``: the one Redis with its AOF and a recorder; ``bare``: Redis only in memory."""

MAX_BAD_FRACTION: Final = 0.001
"""A step fails with more than 0.1 % of its frames late or missing."""

DISTURBED_CORES: Final = 0.15
"""A step during which other processes used more CPU than this is flagged as disturbed."""
DEFAULT_RT_PRIORITY: Final = 10
"""The mixer's tick has a deadline; see docs/performance.md for why it runs real-time."""
DEFAULT_STEPS: Final = (200, 300, 400, 500, 600, 700, 800)


def speed_probe_ms() -> float:
    """CPU time (ms) of a fixed pure-Python loop: higher means a slower CPU right now.

    On a virtual machine the host's other tenants (and the sibling hyperthread)
    change how much work a CPU-second buys; comparing this to an idle
    baseline says how much of a step's cost per singer is the machine's mood.
    """
    started = time.process_time()
    total = 0
    for i in range(300_000):
        total += i * i % 7
    return (time.process_time() - started) * 1000


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, from /proc/stat), in seconds."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 (False while nothing listens yet)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for_quiet(limit_s: float, busy_cores: float = 0.2) -> float:
    """Wait (at most ``limit_s``) until the machine is nearly idle; returns the last busy figure.

    ``limit_s`` of 0 or less returns 0.0 at once, without measuring.

    On a shared machine other people's test runs would otherwise be counted
    against the stack (the mixer misses ticks when it cannot get a core).
    """
    if limit_s <= 0:
        return 0.0  # not asked to wait: nothing measured
    deadline = time.monotonic() + limit_s
    while True:
        before, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(2.0)
        busy = (machine_busy_seconds() - before) / (time.monotonic() - t0)
        if busy < busy_cores or time.monotonic() > deadline:
            return busy
        print(f"waiting for a quiet machine: {busy:.2f} cores busy", flush=True)


def io_write_bytes(pid: int) -> int:
    """Bytes a process caused to be written to storage (``write_bytes`` of /proc/PID/io)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def dir_bytes(path: Path | None) -> int:
    """Total size of the files under ``path`` (0: none or no path)."""
    if path is None or not path.exists():
        return 0
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file():
                total += item.stat().st_size
        except OSError:
            continue
    return total


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


@dataclass
class Stack:
    """redis-server, one mixer and the gateways, as child processes; for ``kind``
    ``deployment`` also a keeper with its state Redis (AOF) and a recorder, for
    ``aof`` Redis with its AOF and a recorder (:data:`STACKS`)."""

    gateways: int
    log_dir: Path
    kind: str = "bare"
    nice: int = 0
    """Nice value for the mixer and Redis (0: as started; negative: favoured)."""
    realtime: int = 0
    """SCHED_FIFO priority for the mixer and Redis (0: the normal scheduler)."""
    event_loop: str = "uvloop"
    """The mixer's and the gateways' event loop (``BB_EVENT_LOOP``)."""
    redis: RedisServer = field(init=False)
    mixer: Process = field(init=False)
    gateway_procs: list[Process] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    recorder: Process | None = None
    keeper: Process | None = None
    state_redis: RedisServer | None = None
    data_dir: Path | None = None
    """The AOF's directory and the recordings, removed on stop."""

    @property
    def deployment(self) -> bool:
        return self.kind != "bare"

    def start(self) -> None:
        if self.deployment:
            self.data_dir = Path(tempfile.mkdtemp(prefix="capacity-", dir=self.log_dir))
        if self.kind == "aof":
            assert self.data_dir is not None
            self.redis = RedisServer(persist_dir=str(self.data_dir / "redis"))
        else:
            self.redis = RedisServer()
        self.redis.start()
        env = {
            "REDIS_URL": self.redis.url,
            "BB_LOG_LEVEL": "WARNING",
            "BB_EVENT_LOOP": self.event_loop,
            # One load generator creates every room from one address.
            "BB_ROOMS_PER_MIN": "100000",
        }
        if self.kind == "deployment":
            assert self.data_dir is not None
            self.state_redis = RedisServer(persist_dir=str(self.data_dir / "redis"))
            self.state_redis.start()
            self.keeper = Process(
                ["keeper"],
                {**env, "BB_KEEPER_ID": "keeper-cap", "BB_STATE_REDIS_URL": self.state_redis.url},
                self.log_dir,
                "keeper",
            )
            client = self.redis.client()
            try:
                # The rooms are back before anyone can create one (compose: depends_on).
                wait_for(lambda: client.exists("bb:keeper:keeper-cap"), 15, "keeper heartbeat")
            finally:
                client.close()
        self.mixer = Process(["mixer"], {**env, "BB_MIXER_ID": "mixer-cap"}, self.log_dir, "mixer")
        if self.data_dir is not None:
            self.recorder = Process(
                ["recorder"],
                {
                    **env,
                    "BB_RECORDER_ID": "recorder-cap",
                    "BB_RECORDINGS_DIR": str(self.data_dir / "recordings"),
                },
                self.log_dir,
                "recorder",
            )
        for i in range(self.gateways):
            port = free_port()
            self.gateway_procs.append(
                Process(
                    ["gateway"],
                    {**env, "BB_GATEWAY_ID": f"gateway-cap-{i}", "BB_PORT": str(port)},
                    self.log_dir,
                    f"gateway-{i}",
                )
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        client = self.redis.client()
        if self.realtime:
            # The mixer's tick has a deadline and Redis is on its path: the real-time
            # class lets them run as soon as they are runnable (as JACK does for audio).
            # Both use a fraction of a core; the kernel still caps RT tasks at 95 %.
            for pid in (self.redis.proc.pid if self.redis.proc else 0, self.mixer.proc.pid):
                if pid:
                    os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(self.realtime))
        if self.nice:
            # What an operator can do (systemd Nice=, docker --cpu-shares): favour the
            # processes with a deadline (the mixer's tick, Redis on its path) over the
            # throughput-bound gateways.
            for pid in (self.redis.proc.pid if self.redis.proc else 0, self.mixer.proc.pid):
                if pid:
                    os.setpriority(os.PRIO_PROCESS, pid, self.nice)
        try:
            wait_for(lambda: client.exists("bb:mixer:mixer-cap"), 15, "the mixer's heartbeat")
            for i in range(self.gateways):
                wait_for(
                    lambda i=i: client.exists(f"bb:gateway:gateway-cap-{i}"),
                    15,
                    f"gateway {i}'s heartbeat",
                )
            if self.recorder is not None:
                wait_for(
                    lambda: client.exists("bb:recorder:recorder-cap"), 15, "recorder heartbeat"
                )
            # A gateway's heartbeat starts before its HTTP site listens: the generator's
            # preflight needs the page, so wait for each one's /healthz as well.
            for url in self.urls:
                wait_for(lambda url=url: _answers(url + "/healthz"), 15, f"{url}/healthz")
        finally:
            client.close()

    def pids(self) -> dict[str, int]:
        assert self.redis.proc is not None
        pids = {"redis": self.redis.proc.pid, "mixer": self.mixer.proc.pid}
        for i, proc in enumerate(self.gateway_procs):
            pids[f"gateway-{i}"] = proc.proc.pid
        if self.recorder is not None:
            pids["recorder"] = self.recorder.proc.pid
        if self.keeper is not None:
            pids["keeper"] = self.keeper.proc.pid
        if self.state_redis is not None and self.state_redis.proc is not None:
            pids["stateredis"] = self.state_redis.proc.pid
        return pids

    def aof_dir(self) -> Path | None:
        return self.data_dir / "redis" if self.data_dir is not None else None

    def stop(self) -> None:
        for proc in reversed(self.gateway_procs):
            proc.stop()
        if self.recorder is not None:
            self.recorder.stop()
        self.mixer.stop()
        if self.keeper is not None:
            self.keeper.stop()
        self.redis.stop()
        if self.state_redis is not None:
            self.state_redis.stop()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class Scenario:
    name: str
    room_size: int | None
    """None: one room for everyone."""
    affinity: str


class Ramp:
    """Runs one scenario's ramp and judges its steps."""

    def __init__(
        self,
        stack: Stack,
        scenario: Scenario,
        args: argparse.Namespace,
        baseline_probe_ms: float,
    ) -> None:
        self.stack = stack
        self.scenario = scenario
        self.args = args
        steps = tuple(args.steps)
        self.config = LoadConfig(
            urls=tuple(stack.urls),
            steps=steps,
            room_size=scenario.room_size or steps[-1],
            room_prefix=f"cap-{scenario.name}",
            measure_s=args.measure_s,
            warmup_s=args.warmup_s,
            settle_s=args.settle_s,
            connect_rate=args.connect_rate,
            affinity=scenario.affinity,
            procs=args.procs,
            redis_url=stack.redis.url,
            event_loop=args.event_loop,
        )
        self.run: LoadRun | None = None
        self.cpu: dict[tuple[int, str], dict[str, float]] = {}
        self.steps: list[dict[str, Any]] = []
        self.profiles: list[subprocess.Popen[bytes]] = []
        self.baseline_probe_ms = baseline_probe_ms

    def _pids(self) -> dict[str, int]:
        assert self.run is not None
        pids = self.stack.pids()
        for i, pid in enumerate(self.run.pids):
            pids[f"generator-{i}"] = pid
        pids["generator-parent"] = os.getpid()
        return pids

    async def on_edge(self, index: int, edge: str) -> None:
        self.cpu[(index, edge)] = {name: cpu_s(pid) for name, pid in self._pids().items()}
        self.cpu[(index, edge)]["machine"] = machine_busy_seconds()
        self.cpu[(index, edge)]["probe_ms"] = speed_probe_ms()
        self.cpu[(index, edge)]["time"] = time.monotonic()
        for name, pid in self.stack.pids().items():
            if name in {"redis", "stateredis", "recorder"}:
                self.cpu[(index, edge)][f"disk:{name}"] = io_write_bytes(pid)
        self.cpu[(index, edge)]["disk:aof"] = dir_bytes(self.stack.aof_dir())
        if edge == "start" and self.args.profile:
            self._profile(index)

    def _profile(self, index: int) -> None:
        """py-spy the mixer and the gateways during this step (rate 100 Hz, raw output)."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = results_dir() / "profiles"
        out.mkdir(parents=True, exist_ok=True)
        for name, pid in self.stack.pids().items():
            if name in {"redis", "stateredis"}:
                continue
            stack = self.stack.kind
            path = out / f"{stack}-{self.scenario.name}-step{index + 1}-{name}.txt"
            self.profiles.append(
                subprocess.Popen(
                    [spy, "record", "-p", str(pid), "-d", str(int(self.args.measure_s) - 2),
                     "-r", "250", "-f", "raw", "-o", str(path), "--nonblocking"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip

    async def on_window(self, window: WindowResult) -> bool:
        start, end = self.cpu.get((window.index, "start")), self.cpu.get((window.index, "end"))
        step = judge(window, start, end)
        if start is not None and end is not None:
            probe = (start["probe_ms"] + end["probe_ms"]) / 2
            step["cpu_slowdown"] = probe / self.baseline_probe_ms
        # A failure while other processes took a good share of the CPU says more
        # about them than about the stack: note it and go on to the next step.
        step["inconclusive"] = not step["passed"] and step["disturbed"]
        self.steps.append(step)
        print(format_step(self.scenario.name, step), flush=True)
        return bool(step["passed"] or step["inconclusive"])

    async def go(self) -> dict[str, Any]:
        plan = await prepare(self.config)
        self.run = LoadRun(
            self.config,
            plan,
            on_edge=self.on_edge,
            on_window=self.on_window,
            on_progress=None,
        )
        await self.run.run()
        for proc in self.profiles:
            proc.wait(timeout=30)
        return {
            "scenario": self.scenario.name,
            "room_size": self.config.room_size,
            "gateways": len(self.stack.urls),
            "affinity": self.scenario.affinity,
            "max_singers": max_singers(self.steps),
            "first_failure": next(
                (s for s in self.steps if not s["passed"] and not s["inconclusive"]), None
            ),
            "steps": self.steps,
        }


def max_singers(steps: Sequence[dict[str, Any]]) -> int:
    """The last step that passed before the first conclusive failure (0: none passed)."""
    best = 0
    for step in steps:
        if step["passed"]:
            best = step["singers"]
        elif not step["inconclusive"]:
            break
    return best


def judge(
    window: WindowResult, start: dict[str, float] | None, end: dict[str, float] | None
) -> dict[str, Any]:
    """Pass or fail a step, with its reasons and every component's CPU."""
    frames = window.frames
    server = window.server or {}
    reasons: list[str] = []
    if frames.expected == 0:
        reasons.append("no frames expected")
    if frames.bad_fraction > MAX_BAD_FRACTION:
        reasons.append(
            f"{100 * frames.bad_fraction:.3f} % of frames late or missing "
            f"({frames.late} late, {frames.missing} missing)"
        )
    overruns = server.get("tick_overruns")
    if overruns is None:
        reasons.append("no mixer counters")
    elif overruns > 0:
        reasons.append(f"{overruns} mixer tick overruns")
    if window.failed or window.joined < window.singers:
        reasons.append(f"{window.singers - window.joined} singers not connected")
    cpu: dict[str, dict[str, float]] = {}
    if start is not None and end is not None:
        seconds = end["time"] - start["time"]
        disk: dict[str, float] = {}
        for name in start:
            if name.startswith("disk:") and name in end:
                disk[name[5:]] = (end[name] - start[name]) / seconds / max(1, window.singers)
        for name in start:
            if name in {"time", "machine", "probe_ms"} or name.startswith("disk:"):
                continue
            if name not in end:
                continue
            used = end[name] - start[name]
            cpu[name] = {
                "cores": used / seconds,
                "ms_per_singer_second": 1000 * used / seconds / max(1, window.singers),
            }
        groups: dict[str, float] = {}
        for name, figures in cpu.items():
            group = "generator" if name.startswith("generator") else name.split("-")[0]
            groups[group] = groups.get(group, 0.0) + figures["cores"]
        cpu["total"] = {
            "cores": sum(groups.values()),
            "ms_per_singer_second": 1000 * sum(groups.values()) / max(1, window.singers),
        }
        for group, cores in groups.items():
            cpu[f"all-{group}"] = {
                "cores": cores,
                "ms_per_singer_second": 1000 * cores / max(1, window.singers),
            }
        # Anything else that ran meanwhile (other people's tests on a shared machine).
        other = (end["machine"] - start["machine"]) / seconds - sum(groups.values())
        cpu["other"] = {"cores": max(0.0, other), "ms_per_singer_second": 0.0}
    else:
        disk = {}
    other = cpu.get("other", {}).get("cores", 0.0)
    return {
        "singers": window.singers,
        "passed": not reasons,
        "reasons": reasons,
        "disturbed": other > DISTURBED_CORES,
        "window": window.to_json(),
        "cpu": cpu,
        "disk_bytes_per_singer_second": disk,
    }


def format_step(scenario: str, step: dict[str, Any]) -> str:
    cpu = step["cpu"]

    def ms(group: str) -> str:
        return f"{cpu[group]['ms_per_singer_second']:.2f}" if group in cpu else "-"

    verdict = "pass" if step["passed"] else "FAIL: " + "; ".join(step["reasons"])
    if step.get("inconclusive"):
        verdict = "inconclusive (disturbed): " + "; ".join(step["reasons"])
    w = step["window"]
    disk = step.get("disk_bytes_per_singer_second", {})
    return (
        f"{scenario:>10} {step['singers']:>5} singers  bad {100 * w['bad_fraction']:.3f} %  "
        f"overruns {w['server'].get('tick_overruns', '-') if w['server'] else '-'}  "
        f"ms/singer-s: gateways {ms('all-gateway')} mixer {ms('all-mixer')} "
        f"recorder {ms('all-recorder')} redis {ms('all-redis')} keeper {ms('all-keeper')} "
        f"state redis {ms('all-stateredis')} generator {ms('all-generator')} "
        f"disk B/singer-s: redis {disk.get('redis', 0):.0f} "
        f"state redis {disk.get('stateredis', 0):.0f} "
        f"recorder {disk.get('recorder', 0):.0f} "
        f"= {cpu.get('total', {}).get('cores', 0):.2f} cores "
        f"(+{cpu.get('other', {}).get('cores', 0):.2f} other, "
        f"CPU x{step.get('cpu_slowdown', 0):.2f} slower than idle)  {verdict}"
    )


def table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        "stack", "scenario", "singers", "result", "late %", "missing %", "overruns", "gateways",
        "mixer", "recorder", "redis", "keeper", "state redis", "generator", "total cores",
        "other", "slowdown", "redis disk B/singer-s", "state redis disk", "AOF growth",
        "recorder disk",
    )  # fmt: skip
    rows = [list(header)]
    for scenario in results:
        for step in scenario["steps"]:
            disk = step.get("disk_bytes_per_singer_second", {})
            frames = step["window"]["frames"]
            expected = max(1, step["window"]["expected_frames"])
            cpu = step["cpu"]

            def ms(group: str, cpu: dict[str, Any] = cpu) -> str:
                return f"{cpu[group]['ms_per_singer_second']:.2f}" if group in cpu else "-"

            rows.append(
                [
                    scenario.get("stack", "-"),
                    scenario["scenario"],
                    str(step["singers"]),
                    "pass" if step["passed"] else "n/a" if step.get("inconclusive") else "FAIL",
                    f"{100 * frames['late'] / expected:.3f}",
                    f"{100 * frames['missing'] / expected:.3f}",
                    str((step["window"]["server"] or {}).get("tick_overruns", "-")),
                    ms("all-gateway"),
                    ms("all-mixer"),
                    ms("all-recorder"),
                    ms("all-redis"),
                    ms("all-keeper"),
                    ms("all-stateredis"),
                    ms("all-generator"),
                    f"{cpu.get('total', {}).get('cores', 0):.2f}",
                    f"{cpu.get('other', {}).get('cores', 0):.2f}"
                    + (" (disturbed)" if step.get("disturbed") else ""),
                    f"x{step.get('cpu_slowdown', 0):.2f}",
                    f"{disk.get('redis', 0):.0f}",
                    f"{disk.get('stateredis', 0):.0f}",
                    f"{disk.get('aof', 0):.0f}",
                    f"{disk.get('recorder', 0):.0f}",
                ]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return (
        "\n".join(lines) + "\n(CPU in ms per singer-second; late/missing in % of expected frames; "
        "other: cores used by processes outside the benchmark; slowdown: a fixed loop's CPU "
        "time at the step's edges over its idle time; disk in bytes per singer-second: "
        "write_bytes of /proc/PID/io, and the AOF directory's growth, which a rewrite can make "
        "negative)"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.capacity", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--steps", type=lambda s: [int(x) for x in s.split(",")], default=list(DEFAULT_STEPS),
        help="singers per step (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--gateways", type=int, default=2, help="gateway processes (default 2)")
    p.add_argument("--procs", type=int, default=1, help="generator processes (default 1)")
    p.add_argument("--measure-s", type=float, default=15.0, help="seconds measured per step")
    p.add_argument("--warmup-s", type=float, default=15.0, help="before the first step")
    p.add_argument("--settle-s", type=float, default=5.0, help="before each later step")
    p.add_argument("--connect-rate", type=float, default=100.0, help="joins per second")
    p.add_argument("--room-size", type=int, default=50, help="the several-rooms scenario")
    p.add_argument(
        "--scenarios", default="one-room,rooms",
        help="comma-separated: one-room, rooms (default both)",
    )  # fmt: skip
    p.add_argument(
        "--stack", default="deployment",
        help="comma-separated: deployment (a keeper and its state Redis with an AOF, a "
        "recorder: what compose runs), aof (one Redis with its AOF, a recorder), bare (Redis "
        "in memory, no recorder); default %(default)s",
    )  # fmt: skip
    p.add_argument("--profile", action="store_true", help="py-spy the servers at every step")
    p.add_argument(
        "--realtime", type=int, default=DEFAULT_RT_PRIORITY if os.geteuid() == 0 else 0,
        metavar="PRIORITY",
        help="SCHED_FIFO priority for the mixer and Redis, 0 for the normal scheduler "
        "(default %(default)s: the recommended deployment when root, else 0)",
    )  # fmt: skip
    p.add_argument(
        "--nice", type=int, default=0,
        help="nice value for the mixer and Redis, e.g. -5 to favour them (default 0)",
    )  # fmt: skip
    p.add_argument(
        "--quiet-wait-s", type=float, default=120.0,
        help="wait up to this long for other processes to go quiet before a scenario",
    )  # fmt: skip
    p.add_argument(
        "--event-loop", choices=EVENT_LOOPS, default="uvloop",
        help="event loop of the generator, the mixer and the gateways (default uvloop)",
    )  # fmt: skip
    p.add_argument("--name", default="capacity", help="results file name (default capacity)")
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    scenarios = {
        "one-room": Scenario("one-room", None, "round"),
        "rooms": Scenario(f"rooms-of-{args.room_size}", args.room_size, "room"),
    }
    chosen = [scenarios[name.strip()] for name in args.scenarios.split(",") if name.strip()]
    stacks = [name.strip() for name in args.stack.split(",") if name.strip()]
    for name in stacks:
        if name not in STACKS:
            raise SystemExit(f"unknown stack {name!r}: choose from {', '.join(STACKS)}")
    log_dir = results_dir() / "capacity-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    wait_for_quiet(args.quiet_wait_s)
    baseline = sorted(speed_probe_ms() for _ in range(7))[3]
    results: list[dict[str, Any]] = []
    for scenario in chosen:
        for stack_name in stacks:
            busy = wait_for_quiet(args.quiet_wait_s)
            if busy >= 0.2:
                print(f"warning: starting with {busy:.2f} cores used by others", flush=True)
            print(f"--- {stack_name} stack, {scenario.name}", flush=True)
            stack = Stack(
                args.gateways,
                log_dir,
                kind=stack_name,
                nice=args.nice,
                realtime=args.realtime,
                event_loop=args.event_loop,
            )
            stack.start()
            try:
                result = asyncio.run(Ramp(stack, scenario, args, baseline).go())
            finally:
                stack.stop()
            results.append({"stack": stack_name, **result})
    by_stack = {
        name: min(r["max_singers"] for r in results if r["stack"] == name) for name in stacks
    }
    summary: dict[str, Any] = {
        "max_singers": by_stack[stacks[0]],
        "max_singers_by_stack": by_stack,
        "scenarios": results,
        "fail_rule": {
            "max_late_or_missing_fraction": MAX_BAD_FRACTION,
            "max_tick_overruns": 0,
            "all_singers_connected": True,
        },
        "settings": {
            "gateways": args.gateways,
            "generator_procs": args.procs,
            "event_loop": args.event_loop,
            "mixer_and_redis_nice": args.nice,
            "mixer_and_redis_sched_fifo": args.realtime,
            "mixers": 1,
            "measure_s": args.measure_s,
            "warmup_s": args.warmup_s,
            "settle_s": args.settle_s,
            "connect_rate": args.connect_rate,
            "steps": args.steps,
            "stacks": stacks,
        },
        "machine": {**machine(), "idle_speed_probe_ms": baseline},
        "runtime_s": round(time.time() - started, 1),
    }
    print()
    print(table(results))
    for r in results:
        print(f"{r['stack']} {r['scenario']}: max_singers = {r['max_singers']}")
    print(
        f"max_singers = {summary['max_singers']} ({stacks[0]} stack; "
        + ", ".join(f"{k} {v}" for k, v in by_stack.items())
        + f"; runtime {summary['runtime_s']:.0f} s)"
    )
    path = write_results(args.name, summary)
    print(f"results written to {path}")
    return summary


if __name__ == "__main__":
    main()
