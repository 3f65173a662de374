"""Plan and run a load test: who joins where and when, the windows, the workers.

:func:`build_plan` lays out the singers (rooms, gateways, join times) and
the measurement windows of a run, or of a ramp: each step adds singers,
lets them settle, then measures a window while everyone sings.
:class:`LoadRun` runs the plan on worker processes (or in this process),
takes the servers' counters at every window's edges, merges the workers'
window reports and singer reports, and calls the caller's hooks, which may
end a ramp early.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from redis.asyncio import Redis

from common import redisclient
from common.constants import SAMPLE_RATE, UPSTREAM_FRAMES_PER_MESSAGE
from loadgen.client import SingerSpec
from loadgen.listener import ListenerSpec, ListenerWindow
from loadgen.server import Snapshot, member_records, snapshot, upstream_delta
from loadgen.stats import FrameCounts, WindowStats
from loadgen.worker import Event, WorkerPlan, run_worker

log = logging.getLogger(__name__)

WORKER_START_S: Final = 3.0
"""Time for worker processes to start and pre-encode before the first join."""
LEADER_HEAD_START_S: Final = 1.0
"""Time between the last new leader's join and the next singer's (lead + start take ~0.3 s)."""
_EVENT_LINE_LIMIT: Final = 256 * 1024 * 1024


@dataclass(frozen=True)
class LoadConfig:
    """One run (or ramp) of the load generator."""

    urls: tuple[str, ...]
    steps: tuple[int, ...]
    """Total singers in each step; one step is a plain run."""
    room_size: int
    """Singers per room (the first of each room leads and starts a song)."""
    room_prefix: str
    measure_s: float = 30.0
    warmup_s: float = 15.0
    """Before the first window: joins, clock sync, every bucket's audio in the song."""
    settle_s: float = 5.0
    """Before each later window, after that step's singers joined."""
    connect_rate: float = 50.0
    affinity: str = "round"
    """``round``: singer i on gateway i mod G; ``room``: room r on gateway r mod G."""
    latency_ms: float = 100.0
    frames_per_message: int | None = None
    """Packets per upstream message; None: what the gateway serves (``prepare``)."""
    clock_skew_ms: float = 0.0
    horizon_s: float = 2.0
    procs: int = 1
    leave: bool = True
    verify: bool = False
    password: str | None = None
    bucket: int | None = None
    """Every singer but the leaders moves to this bucket; None: the server spreads them."""
    progress_s: float = 1.0
    redis_url: str | None = None
    event_loop: str = "uvloop"
    """The workers' event loop (common/aio.py)."""
    listeners: tuple[int, ...] = ()
    """Listeners (listen-only, no members) of the first room in each step; () none."""
    listener_sample: int = 100
    """Listeners that also sync their clock and measure lateness (the rest only count)."""
    listener_rate: float = 500.0
    """Listener connections opened per second."""
    listener_procs: int = 0
    """Worker processes of their own for the listeners that only count (0: they share the
    singers' workers). The sampled ones, which judge lateness, stay with the singers."""


@dataclass(frozen=True)
class Plan:
    singers: list[SingerSpec]
    windows: list[tuple[int, int]]
    """Play-time intervals (room-clock samples)."""
    stop_at: float
    frames_per_message: int = UPSTREAM_FRAMES_PER_MESSAGE
    listeners: list[ListenerSpec] = field(default_factory=list)

    @property
    def rooms(self) -> list[str]:
        return sorted({s.room for s in self.singers})

    def window_wall(self, index: int) -> tuple[float, float]:
        lo, hi = self.windows[index]
        return lo / SAMPLE_RATE, hi / SAMPLE_RATE

    def singers_at(self, index: int) -> int:
        lo = self.windows[index][0] / SAMPLE_RATE
        return sum(1 for s in self.singers if s.join_at <= lo)


def build_plan(config: LoadConfig, t0: float) -> Plan:
    """Singers, windows and the end of the run, starting at wall time ``t0``."""
    if not config.steps or list(config.steps) != sorted(config.steps) or config.steps[0] < 1:
        raise ValueError(f"steps must be non-decreasing positive counts, got {config.steps}")
    if config.listeners and (
        len(config.listeners) != len(config.steps)
        or list(config.listeners) != sorted(config.listeners)
        or config.listeners[0] < 0
    ):
        raise ValueError(
            f"listeners must be one non-decreasing count per step, got {config.listeners}"
        )
    urls = config.urls
    singers: list[SingerSpec] = []
    listeners: list[ListenerSpec] = []
    heard = 0
    windows: list[tuple[int, int]] = []
    t = t0
    previous = 0
    for step, total in enumerate(config.steps):
        # Leaders of new rooms first, so that the others find a leader and a song
        # (a singer who joins before the lead gets a new delay when it comes).
        new = sorted(range(previous, total), key=lambda i: i % config.room_size != 0)
        at = t
        for j, index in enumerate(new):
            room = index // config.room_size
            gateway = index if config.affinity == "round" else room
            leader = index % config.room_size == 0
            if j and not leader and new[j - 1] % config.room_size == 0:
                at += LEADER_HEAD_START_S
            singers.append(
                SingerSpec(
                    index=index,
                    room=f"{config.room_prefix}-{room}",
                    url=urls[gateway % len(urls)],
                    leader=leader,
                    join_at=at,
                    password=config.password,
                    bucket=None if leader else config.bucket,
                )
            )
            at += 1 / config.connect_rate
        joined = at
        if config.listeners:
            # After this step's singers: the first room's listeners, some measuring lateness.
            every = max(1, config.listeners[-1] // max(1, config.listener_sample))
            for index in range(heard, config.listeners[step]):
                listeners.append(
                    ListenerSpec(
                        index=index,
                        room=f"{config.room_prefix}-0",
                        url=urls[index % len(urls)],
                        join_at=at,
                        full=index % every == 0,
                        password=config.password,
                    )
                )
                at += 1 / config.listener_rate
            heard = config.listeners[step]
            joined = at
        lo = joined + (config.warmup_s if step == 0 else config.settle_s)
        hi = lo + config.measure_s
        windows.append((round(lo * SAMPLE_RATE), round(hi * SAMPLE_RATE)))
        t = hi
        previous = total
    stop_at = windows[-1][1] / SAMPLE_RATE + config.horizon_s + 0.5
    frames = config.frames_per_message or UPSTREAM_FRAMES_PER_MESSAGE
    return Plan(singers, windows, stop_at, frames, listeners)


@dataclass
class WindowResult:
    """One window, merged over workers, with the servers' view of it."""

    index: int
    singers: int
    stats: WindowStats = field(default_factory=WindowStats)
    joined: int = 0
    failed: int = 0
    reports: int = 0
    server: dict[str, Any] | None = None
    listeners: ListenerWindow = field(default_factory=ListenerWindow)
    extra: dict[str, Any] = field(default_factory=dict)
    """Whatever the caller's hooks add (the capacity benchmark: CPU per process)."""

    @property
    def frames(self) -> FrameCounts:
        return self.stats.frames

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "index": self.index,
            "singers": self.singers,
            "joined": self.joined,
            "failed": self.failed,
            "frames": s.frames.to_json(),
            "expected_frames": s.frames.expected,
            "bad_fraction": s.frames.bad_fraction,
            "margin_ms": {
                "min": s.margin_ms.min,
                "p01": s.margin_ms.quantile(0.01),
                "p50": s.margin_ms.quantile(0.5),
            },
            "upstream_sent": s.up_messages,
            "send_lag_ms": {"p99": s.send_lag_ms.quantile(0.99), "max": s.send_lag_ms.max},
            "errors": dict(sorted(s.errors.items())),
            "server": self.server,
            "listeners": self.listeners.to_json(),
            **self.extra,
        }


Hook = Callable[[int, str], Awaitable[None]]
"""Called at each window's ``"start"`` and ``"end"`` (wall clock), before the snapshot."""
WindowHook = Callable[[WindowResult], Awaitable[bool]]
"""Called with each complete window; return False to end the run early."""
ProgressHook = Callable[[dict[str, Any]], None]


class LoadRun:
    """Runs a :class:`Plan` on ``config.procs`` workers and collects the results."""

    def __init__(
        self,
        config: LoadConfig,
        plan: Plan,
        *,
        on_edge: Hook | None = None,
        on_window: WindowHook | None = None,
        on_progress: ProgressHook | None = None,
    ) -> None:
        self.config = config
        self.plan = plan
        self.on_edge = on_edge
        self.on_window = on_window
        self.on_progress = on_progress
        self.singer_procs = max(1, min(config.procs, len(plan.singers)))
        self.listener_procs = max(0, config.listener_procs) if plan.listeners else 0
        self.procs = self.singer_procs + self.listener_procs
        self.pids: list[int] = []
        self.windows = [WindowResult(i, plan.singers_at(i)) for i in range(len(plan.windows))]
        self.singers: list[dict[str, Any]] = []
        self.progress: dict[int, dict[str, Any]] = {}
        self.stopped_early = False
        self.snapshots: dict[tuple[int, str], Snapshot] = {}
        self.members: dict[str, dict[str, Any]] = {}
        self._done = 0
        self._stop = asyncio.Event()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._workers: list[asyncio.subprocess.Process] = []

    def worker_plans(self) -> list[WorkerPlan]:
        c = self.config
        # The last singer of the first room hears the others (the leader hears nobody).
        verify_index = min(c.room_size, c.steps[0]) - 1 if c.verify else None
        listeners = self.plan.listeners
        counted: list[ListenerSpec] = []
        if self.listener_procs:
            # Listeners that only count get processes of their own: thousands of sockets
            # must not delay the singers, nor the sampled listeners that judge lateness.
            counted = [x for x in listeners if not x.full]
            listeners = [x for x in listeners if x.full]
        plans = [
            WorkerPlan(
                worker=w,
                singers=self.plan.singers[w :: self.singer_procs],
                windows=self.plan.windows,
                stop_at=self.plan.stop_at,
                latency_ms=c.latency_ms,
                frames_per_message=self.plan.frames_per_message,
                clock_skew_ms=c.clock_skew_ms,
                leave=c.leave,
                horizon_s=c.horizon_s,
                verify_index=verify_index,
                progress_s=c.progress_s,
                event_loop=c.event_loop,
                listeners=listeners[w :: self.singer_procs],
            )
            for w in range(self.singer_procs)
        ]
        for w in range(self.listener_procs):
            plans.append(
                WorkerPlan(
                    worker=self.singer_procs + w,
                    singers=[],
                    windows=self.plan.windows,
                    stop_at=self.plan.stop_at,
                    horizon_s=c.horizon_s,
                    progress_s=c.progress_s,
                    event_loop=c.event_loop,
                    listeners=counted[w :: self.listener_procs],
                )
            )
        return plans

    async def run(self) -> None:
        """Run to the end (or until a window hook says stop)."""
        plans = self.worker_plans()
        redis = redisclient.async_client(self.config.redis_url) if self.config.redis_url else None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            runners = [asyncio.create_task(self._start(p)) for p in plans]
            watcher = asyncio.create_task(self._watch_edges(http, redis))
            try:
                while self._done < len(plans):
                    event = await self._events.get()
                    await self._on_event(event)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                await asyncio.gather(*runners, return_exceptions=True)
                if redis is not None:
                    await redis.aclose()
        for singer in self.singers:
            record = self.members.get(str(singer.get("singer")))
            if record is not None:
                singer["server"] = record
        self.singers.sort(key=lambda s: int(s["index"]))

    def stop(self) -> None:
        """End the run early: singers settle, leave and report."""
        self.stopped_early = True
        self._stop.set()
        for proc in self._workers:
            if proc.stdin is not None and not proc.stdin.is_closing():
                with contextlib.suppress(ConnectionError, RuntimeError):
                    proc.stdin.write(b"stop\n")

    # --- workers --------------------------------------------------------------------

    async def _start(self, plan: WorkerPlan) -> None:
        if self.procs == 1:
            await run_worker(plan, self._events.put_nowait, self._stop)
            return
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "brigade",
            "load",
            "--worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_EVENT_LINE_LIMIT,
        )
        self._workers.append(proc)
        self.pids.append(proc.pid)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(plan.to_json()).encode() + b"\n")
        await proc.stdin.drain()
        if self._stop.is_set():
            proc.stdin.write(b"stop\n")
        done = False
        while line := await proc.stdout.readline():
            event = json.loads(line)
            done = done or event.get("type") == "done"
            self._events.put_nowait(event)
        code = await proc.wait()
        if not done:
            log.error("load worker %d exited with code %d before reporting", plan.worker, code)
            self._events.put_nowait({"type": "done", "worker": plan.worker, "singers": []})

    async def _on_event(self, event: Event) -> None:
        kind = event.get("type")
        if kind == "progress":
            self.progress[int(event["worker"])] = event
            if self.on_progress is not None:
                self.on_progress(self.merged_progress())
        elif kind == "window":
            window = self.windows[int(event["index"])]
            window.stats.merge(WindowStats.from_json(event["stats"]))
            window.joined += int(event["joined"])
            window.failed += int(event["failed"])
            if "listeners" in event:
                window.listeners.merge(event["listeners"])
            window.reports += 1
            await self._maybe_finish(window)
        elif kind == "done":
            self._done += 1
            self.singers.extend(event["singers"])

    def merged_progress(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for event in self.progress.values():
            for key, value in event.items():
                if isinstance(value, int | float) and key not in {"worker", "time"}:
                    merged[key] = merged.get(key, 0) + value
        merged["time"] = time.time()
        return merged

    # --- windows and server counters -----------------------------------------------

    async def _watch_edges(self, http: aiohttp.ClientSession, redis: Redis | None) -> None:
        edges = sorted(
            [(self.plan.window_wall(i)[0], i, "start") for i in range(len(self.windows))]
            + [(self.plan.window_wall(i)[1], i, "end") for i in range(len(self.windows))]
        )
        for at, index, edge in edges:
            await asyncio.sleep(max(0.0, at - time.time()))
            if self._stop.is_set():
                return
            if self.on_edge is not None:
                await self.on_edge(index, edge)
            self.snapshots[(index, edge)] = await snapshot(http, self.config.urls, redis)
            if edge == "end":
                await self._maybe_finish(self.windows[index])
        if redis is not None:
            # Member records vanish when singers leave: read them before the end.
            await asyncio.sleep(max(0.0, self.plan.stop_at - 0.6 - time.time()))
            with contextlib.suppress(Exception):
                self.members = await member_records(redis, self.plan.rooms)

    async def _maybe_finish(self, window: WindowResult) -> None:
        end = self.snapshots.get((window.index, "end"))
        if window.reports < self.procs or end is None or window.server is not None:
            return
        start = self.snapshots[(window.index, "start")]
        window.server = upstream_delta(start, end)
        window.server["snapshot_errors"] = start.errors + end.errors
        if self.on_window is not None and not await self.on_window(window):
            self.stop()

    def completed(self) -> Sequence[WindowResult]:
        return [w for w in self.windows if w.server is not None and w.reports >= self.procs]
