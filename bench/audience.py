"""A concert's audience: how many listeners one room carries (``python -m bench.audience``).

Starts the stack as bench/capacity.py does (a private redis-server, one
``brigade mixer``, G ``brigade gateway`` processes), puts 50 singers in one
room (a leader, the others spread by the server), and then adds listeners
to that room in steps (default 0, 1 000, 2 500, 5 000, 10 000): listen-only
connections (``role: "listener"``) that are no members of the room.  Each
step measures a window in which everyone sings and reports

- the singers' late and missing downstream frames (% of expected), the
  mixer's tick overruns: the singers must not notice the audience;
- the listeners' missing frames (% of expected, over all of them) and late
  frames (% of those received by the sampled ones);
- the CPU of the gateways, the mixer, Redis and the load generator (cores),
  and the gateways' ms per listener-second above the step without listeners.

The load generator shares the machine's cores with the stack, so its
listeners are cheap (loadgen/listener.py): each is a bare asyncio protocol
that does the WebSocket handshake itself and, for every chunk its socket
delivers, walks the frame headers, reads each audio message's 16-byte header
(to count its frames by play time) and skips the payload without copying it;
no aiohttp, no per-message task or object.  Only a sample (``--sample``,
100) also sync their clocks with pings and judge every frame late or not;
they run in the singers' generator process, and the thousands that only
count run in processes of their own (``--listener-procs``, 2), so that
their sockets delay neither the singers nor the lateness measurement.

Every listener is a socket in the generator and one in a gateway: the bench
raises its own open-files limit (``RLIMIT_NOFILE``) to the hard limit, which
the processes it starts inherit; an operator does the same for the gateways
(docs/operations.md).  A step passes with at most 0.1 % of the singers'
frames late or missing, no tick overrun, and at most 0.1 % of the listeners'
frames late or missing.  Writes ``bench-results/audience.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.capacity import DEFAULT_RT_PRIORITY, Stack, machine, machine_busy_seconds
from bench.procstat import cpu_s
from bench.results import print_grid, write_results
from loadgen.cli import prepare
from loadgen.run import LoadConfig, LoadRun, WindowResult

MAX_BAD_FRACTION: Final = 0.001
DEFAULT_LISTENERS: Final = (0, 1000, 2500, 5000, 10_000)


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft open-files limit toward ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Audience:
    """One ramp of listeners beside a room of singers, with CPU per step."""

    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        steps = tuple(args.listeners)
        self.config = LoadConfig(
            urls=tuple(stack.urls),
            steps=(args.singers,) * len(steps),
            room_size=args.singers,
            room_prefix="audience",
            measure_s=args.measure_s,
            warmup_s=args.warmup_s,
            settle_s=args.settle_s,
            connect_rate=args.connect_rate,
            affinity="round",
            procs=args.procs,
            redis_url=stack.redis.url,
            listeners=steps,
            listener_sample=args.sample,
            listener_rate=args.listener_rate,
            listener_procs=args.listener_procs,
        )
        self.run: LoadRun | None = None
        self.cpu: dict[tuple[int, str], dict[str, float]] = {}
        self.steps: list[dict[str, Any]] = []

    def _pids(self) -> dict[str, int]:
        assert self.run is not None
        pids = self.stack.pids()
        for i, pid in enumerate(self.run.pids):
            pids[f"generator-{i}"] = pid
        return pids

    async def on_edge(self, index: int, edge: str) -> None:
        figures = {name: cpu_s(pid) for name, pid in self._pids().items()}
        figures["machine"] = machine_busy_seconds()
        figures["time"] = time.monotonic()
        self.cpu[(index, edge)] = figures

    async def on_window(self, window: WindowResult) -> bool:
        start, end = self.cpu.get((window.index, "start")), self.cpu.get((window.index, "end"))
        step = judge(window, start, end, self.config.listeners[window.index])
        if self.steps and "gateway_cores" in self.steps[0] and step["listeners"]:
            # What the listeners add to the gateways, per listener-second.
            extra = step["gateway_cores"] - self.steps[0]["gateway_cores"]
            step["gateway_ms_per_listener_s"] = 1000 * extra / step["listeners"]
        self.steps.append(step)
        print(format_step(step), flush=True)
        return bool(step["passed"]) or self.args.keep_going

    async def go(self) -> dict[str, Any]:
        plan = await prepare(self.config)
        self.run = LoadRun(self.config, plan, on_edge=self.on_edge, on_window=self.on_window)
        await self.run.run()
        return {
            "singers": self.args.singers,
            "gateways": len(self.stack.urls),
            "max_listeners": max_listeners(self.steps),
            "steps": self.steps,
        }


def judge(
    window: WindowResult,
    start: dict[str, float] | None,
    end: dict[str, float] | None,
    listeners: int,
) -> dict[str, Any]:
    """One step's figures and verdict."""
    frames = window.stats.frames
    heard = window.listeners.to_json()
    server = window.server or {}
    overruns = int(server.get("tick_overruns", 0) or 0)
    singers_bad = frames.bad_fraction
    listeners_bad = heard["missing_fraction"] + heard["late_fraction"]
    step: dict[str, Any] = {
        "step": window.index + 1,
        "listeners": listeners,
        "listeners_connected": heard["connected"],
        "singers": window.singers,
        "singers_joined": window.joined,
        "singers_late_pct": 100 * frames.late / frames.expected if frames.expected else 0.0,
        "singers_missing_pct": 100 * frames.missing / frames.expected if frames.expected else 0.0,
        "tick_overruns": overruns,
        "listeners_missing_pct": 100 * heard["missing_fraction"],
        "listeners_late_pct": 100 * heard["late_fraction"],
        "listener_frames_expected": heard["expected"],
        "listener_errors": heard["errors"],
        "sampled_listeners": heard["full"],
        # How far ahead of their play time the singers' frames arrived (p1, ms), and how
        # late the generator sent (max, ms): a starved generator shows in the latter.
        "singers_margin_ms_p01": window.stats.margin_ms.quantile(0.01),
        "singers_send_lag_ms_max": window.stats.send_lag_ms.max,
    }
    if start is not None and end is not None:
        seconds = end["time"] - start["time"]

        def cores(prefix: str) -> float:
            names = [n for n in start if n.startswith(prefix) and n in end]
            return sum(end[n] - start[n] for n in names) / seconds

        step["gateway_cores"] = cores("gateway")
        step["mixer_cores"] = cores("mixer")
        step["redis_cores"] = cores("redis")
        step["generator_cores"] = cores("generator")
        step["machine_cores"] = (end["machine"] - start["machine"]) / seconds
    step["passed"] = (
        singers_bad <= MAX_BAD_FRACTION
        and overruns == 0
        and window.joined == window.singers
        and listeners_bad <= MAX_BAD_FRACTION
        and heard["connected"] == listeners
    )
    return step


def max_listeners(steps: Sequence[dict[str, Any]]) -> int:
    best = 0
    for step in steps:
        if not step["passed"]:
            break
        best = int(step["listeners"])
    return best


def format_step(step: dict[str, Any]) -> str:
    return (
        f"listeners {step['listeners_connected']}/{step['listeners']}: singers late "
        f"{step['singers_late_pct']:.3f} % missing {step['singers_missing_pct']:.3f} %, "
        f"overruns {step['tick_overruns']}; listeners missing {step['listeners_missing_pct']:.3f} "
        f"% late {step['listeners_late_pct']:.3f} % | cores: gateways "
        f"{step.get('gateway_cores', 0):.2f} mixer {step.get('mixer_cores', 0):.2f} redis "
        f"{step.get('redis_cores', 0):.2f} generator {step.get('generator_cores', 0):.2f} "
        f"machine {step.get('machine_cores', 0):.2f} -> {'pass' if step['passed'] else 'FAIL'}"
    )


def table(steps: Sequence[dict[str, Any]]) -> None:
    header = [
        "listeners", "singers late %", "singers missing %", "overruns", "listeners missing %",
        "listeners late %", "gateways", "mixer", "redis", "generator", "gw ms/listener-s",
    ]  # fmt: skip
    rows = [
        [
            f"{s['listeners_connected']}/{s['listeners']}",
            f"{s['singers_late_pct']:.3f}",
            f"{s['singers_missing_pct']:.3f}",
            str(s["tick_overruns"]),
            f"{s['listeners_missing_pct']:.3f}",
            f"{s['listeners_late_pct']:.3f}",
            f"{s.get('gateway_cores', 0):.2f}",
            f"{s.get('mixer_cores', 0):.2f}",
            f"{s.get('redis_cores', 0):.2f}",
            f"{s.get('generator_cores', 0):.2f}",
            f"{s['gateway_ms_per_listener_s']:.4f}" if "gateway_ms_per_listener_s" in s else "-",
        ]
        for s in steps
    ]
    print_grid("audience (cores = CPU seconds per second)", header, rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--listeners", type=lambda s: [int(x) for x in s.split(",")],
        default=list(DEFAULT_LISTENERS), help="listeners per step (default 0,1000,2500,5000,10000)",
    )  # fmt: skip
    p.add_argument("--singers", type=int, default=50, help="singers in the room (default 50)")
    p.add_argument("--gateways", type=int, default=2)
    p.add_argument(
        "--procs", type=int, default=1,
        help="generator processes for the singers and the sampled listeners (default 1)",
    )  # fmt: skip
    p.add_argument(
        "--listener-procs", type=int, default=2,
        help="generator processes for the listeners that only count (default 2)",
    )  # fmt: skip
    p.add_argument("--sample", type=int, default=100, help="listeners measuring lateness")
    p.add_argument("--measure-s", type=float, default=20.0)
    p.add_argument("--warmup-s", type=float, default=15.0)
    p.add_argument(
        "--settle-s", type=float, default=15.0,
        help="after a step's joins, before its window (default 15: thousands of joins)",
    )  # fmt: skip
    p.add_argument("--connect-rate", type=float, default=50.0, help="singer joins per second")
    p.add_argument("--listener-rate", type=float, default=300.0, help="listener joins per second")
    p.add_argument(
        "--realtime", type=int, default=None,
        help="SCHED_FIFO priority of the mixer and Redis (default: 10 as root, else 0)",
    )  # fmt: skip
    p.add_argument("--keep-going", action="store_true", help="go on after a failed step")
    p.add_argument("--output", default="audience", help="bench-results/<name>.json")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # A socket per listener in the generator and one in a gateway, plus Redis's.
    limit = raise_open_files(2 * max(args.listeners) + 4096)
    with tempfile.TemporaryDirectory(prefix="bench-audience-") as log_dir:
        realtime = args.realtime
        if realtime is None:
            realtime = DEFAULT_RT_PRIORITY if os.geteuid() == 0 else 0
        stack = Stack(gateways=args.gateways, log_dir=Path(log_dir), realtime=realtime)
        stack.start()
        try:
            result = asyncio.run(Audience(stack, args).go())
        finally:
            stack.stop()
    results = {
        "machine": machine(),
        "open_files_limit": limit,
        "realtime": realtime,
        **result,
    }
    table(result["steps"])
    print(f"listeners carried: {result['max_listeners']}", flush=True)
    path = write_results(args.output, results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
