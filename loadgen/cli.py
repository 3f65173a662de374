"""``brigade load``: simulated singers over real WebSockets (docs/performance.md).

Each singer behaves like the browser client (loadgen/client.py): joins a
room, syncs its clock, sends pre-encoded Opus at real-time pace and accounts
every downstream frame as on time, late or missing.  The first singer of
each room leads and starts a song; the others are spread over the buckets by
the server.  Prints a progress line while running and a summary per
measurement window at the end, and writes everything as JSON.

Examples::

    brigade load --singers 50 --duration 30
    brigade load --url http://127.0.0.1:8080 --url http://127.0.0.1:8081 \\
        --singers 400 --room-size 50 --procs 2 --redis-url redis://127.0.0.1:6379/0
    brigade load --ramp 100,200,300 --step-s 20 --json ramp.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from common import aio
from common.constants import (
    OPUS_FRAME_SAMPLES,
    PROTOCOL_VERSION,
    SAMPLE_RATE,
    UPSTREAM_FRAMES_PER_MESSAGE,
)
from loadgen.run import (
    WORKER_START_S,
    LoadConfig,
    LoadRun,
    Plan,
    WindowResult,
    build_plan,
)
from loadgen.worker import worker_main

log = logging.getLogger(__name__)

MAX_ROOM_CAPACITY = 1000


class LoadError(Exception):
    """A condition that stops the run before it starts (printed as one line)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brigade load",
        description="Simulate singers over real WebSockets and account every frame.",
    )
    p.add_argument(
        "--url",
        action="append",
        help="a gateway's base URL; repeat to spread singers (default http://127.0.0.1:8080)",
    )
    p.add_argument("--singers", type=int, default=10, help="singers in total (default 10)")
    p.add_argument(
        "--ramp",
        help="comma-separated singer counts: each step adds singers, settles, then measures",
    )
    p.add_argument("--room-size", type=int, help="singers per room (default: everyone in one room)")
    p.add_argument("--room-prefix", help="room names are PREFIX-0, PREFIX-1, ... (default random)")
    p.add_argument("--password", help="room password (rooms are created with it)")
    p.add_argument(
        "--bucket", type=int,
        help="every singer but the leaders joins this bucket (default: spread by the server)",
    )  # fmt: skip
    p.add_argument(
        "--duration", "--step-s", dest="measure_s", type=float, default=30.0, metavar="S",
        help="seconds measured (per step with --ramp; default 30)",
    )  # fmt: skip
    p.add_argument(
        "--warmup", dest="warmup_s", type=float, default=15.0, metavar="S",
        help="seconds before the first measurement (default 15: the last bucket's audio "
        "reaches the song 12 s after it starts)",
    )  # fmt: skip
    p.add_argument(
        "--settle", dest="settle_s", type=float, default=5.0, metavar="S",
        help="seconds between a ramp step's last join and its measurement (default 5)",
    )  # fmt: skip
    p.add_argument("--connect-rate", type=float, default=50.0, help="joins per second (default 50)")
    p.add_argument(
        "--affinity", choices=("round", "room"), default="round",
        help="spread singers over gateways one by one (round) or by room (room)",
    )  # fmt: skip
    p.add_argument(
        "--latency-ms", type=float, default=100.0,
        help="simulated output->input latency subtracted from positions (default 100)",
    )  # fmt: skip
    p.add_argument(
        "--frames-per-message",
        type=int,
        default=None,
        help="20 ms packets per message (default: what the gateway serves, like the browser)",
    )
    p.add_argument(
        "--clock-skew-ms", type=float, default=0.0,
        help="offset the singers' local clocks by this much (clock sync must undo it)",
    )  # fmt: skip
    p.add_argument("--procs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--listeners", default="",
        help="listeners (listen-only, no members) of the first room: N, or one count per "
        "--ramp step (N1,N2,...; with a single singer count the singers stay)",
    )  # fmt: skip
    p.add_argument(
        "--listener-sample", type=int, default=100,
        help="listeners that sync their clock and measure lateness (default 100)",
    )  # fmt: skip
    p.add_argument(
        "--listener-rate", type=float, default=500.0,
        help="listener connections per second (default 500)",
    )  # fmt: skip
    p.add_argument(
        "--listener-procs", type=int, default=0,
        help="worker processes of their own for the listeners that only count (default 0: "
        "with the singers)",
    )  # fmt: skip
    p.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="read mixer counters and per-singer upstream figures here (env REDIS_URL)",
    )
    p.add_argument("--json", type=Path, help="write the full results here")
    p.add_argument("--verify", action="store_true", help="one singer decodes its audio")
    p.add_argument("--no-leave", action="store_true", help="close without sending leave")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "--event-loop", choices=aio.EVENT_LOOPS, default="uvloop",
        help="the generator's event loop (default uvloop: cheaper per message)",
    )  # fmt: skip
    p.add_argument("--log-level", default=os.environ.get("BB_LOG_LEVEL", "WARNING"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    steps = (
        tuple(int(x) for x in args.ramp.split(",") if x.strip()) if args.ramp else (args.singers,)
    )
    if not steps or steps[0] < 1 or list(steps) != sorted(set(steps)):
        raise LoadError(f"singer counts must be positive and increasing, got {steps}")
    listeners = tuple(int(x) for x in args.listeners.split(",") if x.strip())
    if listeners and len(steps) == 1:
        steps = steps * len(listeners)  # the same singers through every listener step
    if listeners and (
        len(listeners) != len(steps) or listeners[0] < 0 or list(listeners) != sorted(listeners)
    ):
        raise LoadError(
            f"--listeners: one non-decreasing count per step ({len(steps)}), got {listeners}"
        )
    if args.listener_rate <= 0 or args.listener_sample < 0:
        raise LoadError("--listener-rate must be positive and --listener-sample not negative")
    if args.measure_s <= 0 or args.warmup_s < 0 or args.settle_s < 0 or args.connect_rate <= 0:
        raise LoadError("durations must be positive (warm-up and settle may be 0)")
    if args.frames_per_message is not None and not 1 <= args.frames_per_message <= 50:
        raise LoadError("--frames-per-message must be 1-50 (the protocol's limit)")
    room_size = args.room_size or steps[-1]
    if not 1 <= room_size <= MAX_ROOM_CAPACITY:
        raise LoadError(f"--room-size must be 1-{MAX_ROOM_CAPACITY}")
    urls = tuple(u.rstrip("/") for u in (args.url or ["http://127.0.0.1:8080"]))
    return LoadConfig(
        urls=urls,
        steps=steps,
        room_size=room_size,
        room_prefix=args.room_prefix or f"load-{secrets.token_hex(3)}",
        measure_s=args.measure_s,
        warmup_s=args.warmup_s,
        settle_s=args.settle_s,
        connect_rate=args.connect_rate,
        affinity=args.affinity,
        latency_ms=args.latency_ms,
        frames_per_message=args.frames_per_message,
        clock_skew_ms=args.clock_skew_ms,
        procs=max(1, args.procs),
        leave=not args.no_leave,
        verify=args.verify,
        password=args.password,
        bucket=args.bucket,
        redis_url=args.redis_url,
        event_loop=args.event_loop,
        listeners=listeners,
        listener_sample=args.listener_sample,
        listener_rate=args.listener_rate,
        listener_procs=max(0, args.listener_procs),
    )


# --- before the run -----------------------------------------------------------------


async def preflight(config: LoadConfig, rooms: Sequence[str]) -> int:
    """Check every gateway speaks our protocol; create the rooms big enough.

    Returns the packets per upstream message that the (first) gateway asks
    clients to send, as the browser client reads it from ``/api/constants``.
    """
    served: int | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for url in config.urls:
            try:
                async with http.get(f"{url}/api/constants") as response:
                    response.raise_for_status()
                    constants = await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise LoadError(
                    f"gateway {url} is unreachable: {exc or type(exc).__name__}"
                ) from None
            wanted = {
                "sample_rate": SAMPLE_RATE,
                "opus_frame_samples": OPUS_FRAME_SAMPLES,
                "protocol_version": PROTOCOL_VERSION,
            }
            for key, value in wanted.items():
                if constants.get(key) != value:
                    raise LoadError(f"gateway {url} has {key}={constants.get(key)}, we use {value}")
            frames = constants.get("frames_per_message", UPSTREAM_FRAMES_PER_MESSAGE)
            if not isinstance(frames, int) or not 1 <= frames <= 50:
                raise LoadError(f"gateway {url} serves frames_per_message={frames!r}, not 1-50")
            served = frames if served is None else served
        capacity = min(MAX_ROOM_CAPACITY, max(config.room_size, 1))
        for room in rooms:
            body: dict[str, Any] = {"room": room, "capacity": capacity}
            if config.listeners:
                body["listeners"] = max(1, config.listeners[-1])
            if config.password:
                body["password"] = config.password
            while True:
                async with http.post(f"{config.urls[0]}/api/rooms", json=body) as response:
                    if response.status == 429:
                        # The gateway's per-address creation limit (BB_ROOMS_PER_MIN): wait.
                        wait_s = min(60.0, float(response.headers.get("Retry-After", "5")))
                        print(f"room creation rate-limited; waiting {wait_s:g} s", file=sys.stderr)
                        await asyncio.sleep(wait_s)
                        continue
                    if response.status not in (201, 409):
                        text = (await response.text())[:200]
                        raise LoadError(f"creating room {room} failed: {response.status} {text}")
                    break
    return served or UPSTREAM_FRAMES_PER_MESSAGE


# --- display ------------------------------------------------------------------------


class Progress:
    """One line every few seconds on stderr: joins, rates, late and missing so far."""

    def __init__(self, run: LoadRun, every_s: float = 2.0) -> None:
        self.run = run
        self.every_s = every_s
        self.started = time.time()
        self._last: dict[str, Any] | None = None
        self._last_print = 0.0

    def __call__(self, totals: dict[str, Any]) -> None:
        now = float(totals["time"])
        if now - self._last_print < self.every_s:
            return
        last = self._last or {k: 0 for k in totals} | {"time": self.started}
        dt = max(1e-6, now - float(last["time"]))

        def rate(key: str) -> float:
            return float(totals.get(key, 0) - last.get(key, 0)) / dt

        print(
            f"[{now - self.started:6.1f}s] {self._phase(now)} | singers "
            f"{totals.get('joined', 0)}/{len(self.run.plan.singers)}"
            f" ({totals.get('failed', 0)} failed) | up {rate('up_messages'):.0f} msg/s"
            f" | down {rate('frames'):.0f} frames/s, late {totals.get('late', 0)},"
            f" missing {totals.get('missing', 0)} | errors {totals.get('errors', 0)}"
            + (
                f" | listeners {totals.get('listeners', 0)}/{len(self.run.plan.listeners)}"
                f" ({totals.get('listener_failed', 0)} failed),"
                f" {rate('listener_frames'):.0f} frames/s, late {totals.get('listener_late', 0)}"
                if self.run.plan.listeners
                else ""
            ),
            file=sys.stderr,
            flush=True,
        )
        self._last, self._last_print = dict(totals), now

    def _phase(self, now: float) -> str:
        plan = self.run.plan
        for i in range(len(plan.windows)):
            lo, hi = plan.window_wall(i)
            if now < lo:
                return f"step {i + 1}/{len(plan.windows)} joining"
            if now < hi:
                return f"step {i + 1}/{len(plan.windows)} measuring"
        return "finishing"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def summary_rows(windows: Sequence[WindowResult]) -> list[list[str]]:
    rows = [
        [
            "step", "singers", "frames", "late", "missing", "bad %", "margin p1/p50 ms",
            "up sent", "accepted", "rejected", "late up", "overruns",
            "listeners", "l. missing %", "l. late %",
        ]
    ]  # fmt: skip
    for w in windows:
        s, server = w.stats, w.server or {}
        rows.append(
            [
                str(w.index + 1),
                f"{w.joined}/{w.singers}",
                str(s.frames.expected),
                str(s.frames.late),
                str(s.frames.missing),
                f"{100 * s.frames.bad_fraction:.3f}",
                f"{_ms(s.margin_ms.quantile(0.01))}/{_ms(s.margin_ms.quantile(0.5))}",
                str(s.up_messages),
                str(server.get("accepted", "-")),
                str(server.get("rejected", "-")),
                str(server.get("late", "-")),
                str(server.get("tick_overruns", "-")),
                f"{w.listeners.connected}/{w.listeners.listeners}",
                f"{100 * w.listeners.to_json()['missing_fraction']:.3f}",
                f"{100 * w.listeners.to_json()['late_fraction']:.3f}",
            ]
        )
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def clock_summary(singers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    errors = sorted(
        abs(float(s["clock"]["offset_error_ms"])) for s in singers if s["clock"]["pongs"]
    )
    worst = [float(s["clock"]["max_offset_error_ms"]) for s in singers if s["clock"]["pongs"]]
    if not errors:
        return {"singers": 0}
    return {
        "singers": len(errors),
        "mean_abs_error_ms": sum(errors) / len(errors),
        "p95_abs_error_ms": errors[min(len(errors) - 1, int(0.95 * len(errors)))],
        "max_abs_error_ms": errors[-1],
        "max_abs_error_during_windows_ms": max(worst),
    }


def results_json(config: LoadConfig, run: LoadRun) -> dict[str, Any]:
    failed = [s for s in run.singers if s.get("error")]
    return {
        "config": {
            **config.__dict__,
            "urls": list(config.urls),
            "steps": list(config.steps),
            "frames_per_message": run.plan.frames_per_message,
        },
        "windows": [w.to_json() for w in run.windows],
        "completed_windows": len(run.completed()),
        "stopped_early": run.stopped_early,
        "clock": clock_summary(run.singers),
        "failed_singers": len(failed),
        "failures": sorted({str(s["error"]) for s in failed})[:20],
        "worker_pids": run.pids,
        "singers": run.singers,
    }


def print_summary(config: LoadConfig, run: LoadRun, results: dict[str, Any]) -> None:
    print(format_table(summary_rows(run.completed())))
    clock = results["clock"]
    if clock.get("singers"):
        print(
            f"clock offset error: mean {clock['mean_abs_error_ms']:.2f} ms, "
            f"p95 {clock['p95_abs_error_ms']:.2f} ms, max {clock['max_abs_error_ms']:.2f} ms "
            f"({clock['singers']} singers)"
        )
    if results["failed_singers"]:
        print(f"{results['failed_singers']} singers failed: {'; '.join(results['failures'][:3])}")
    verified = [s["verify"] for s in run.singers if "verify" in s]
    for v in verified:
        print(
            f"verify: {v['decoded']} frames decoded, {v['audible']} audible, {v['errors']} errors"
        )


# --- entry points -------------------------------------------------------------------


async def prepare(config: LoadConfig) -> Plan:
    """Check the gateways, create the rooms, and plan the run to start shortly."""
    start = WORKER_START_S if config.procs > 1 else 1.0
    plan = build_plan(config, time.time() + start + 0.5)
    served = await preflight(config, plan.rooms)
    if plan.singers[0].join_at < time.time() + start:
        plan = build_plan(config, time.time() + start)
    if config.frames_per_message is None:
        plan = dataclasses.replace(plan, frames_per_message=served)
    return plan


async def run_load(config: LoadConfig, *, quiet: bool = False) -> tuple[LoadRun, dict[str, Any]]:
    """Prepare and run; returns the run and its results as JSON."""
    run = LoadRun(config, await prepare(config))
    if not quiet:
        run.on_progress = Progress(run)
    await run.run()
    return run, results_json(config, run)


def main(argv: Sequence[str]) -> int:
    """``brigade load ...``; returns the exit code."""
    args = parser().parse_args(list(argv))
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.worker:
        return worker_main()
    try:
        config = config_from_args(args)
        run, results = aio.run(run_load(config, quiet=args.quiet), config.event_loop)
    except LoadError as exc:
        print(f"brigade load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("brigade load: interrupted", file=sys.stderr)
        return 130
    print_summary(config, run, results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    return 0
