"""One load-generator process: many simulated singers on one event loop.

A worker runs the singers of a :class:`WorkerPlan` and reports through
``emit`` (JSON-ready dicts):

- ``progress`` every ``progress_s``: running totals for the display;
- ``window`` once per measurement window, ``horizon`` after it ends (when
  every frame of it has been settled): the window's stats merged over the
  worker's singers;
- ``done`` at the end: every singer's report.

``brigade load --procs N`` runs N of these as ``brigade load --worker``
subprocesses that read the plan as JSON on stdin (a line ``stop`` on stdin
ends the run early) and write the events as JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from common import aio
from common.constants import SAMPLE_RATE, UPSTREAM_FRAMES_PER_MESSAGE
from loadgen.client import (
    Behaviour,
    LocalClock,
    Singer,
    SingerSpec,
    UpstreamAudio,
    window_totals,
)
from loadgen.listener import Listener, ListenerSpec, run_listeners, window_report
from loadgen.stats import Windows

log = logging.getLogger(__name__)

Event = dict[str, Any]
Emit = Callable[[Event], None]


@dataclass(frozen=True)
class WorkerPlan:
    """Everything one worker needs; all times are wall-clock epoch seconds."""

    worker: int
    singers: list[SingerSpec]
    windows: list[tuple[int, int]]
    """Measurement windows: play-time intervals in room-clock samples."""
    stop_at: float
    latency_ms: float = 100.0
    frames_per_message: int = UPSTREAM_FRAMES_PER_MESSAGE
    clock_skew_ms: float = 0.0
    leave: bool = True
    horizon_s: float = 2.0
    verify_index: int | None = None
    """The singer (by index) that decodes its downstream audio; None: nobody."""
    progress_s: float = 1.0
    event_loop: str = "uvloop"
    listeners: list[ListenerSpec] = field(default_factory=list)
    """Listen-only connections (loadgen/listener.py), beside the singers."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["windows"] = [list(w) for w in self.windows]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerPlan:
        values = dict(data)
        values["singers"] = [SingerSpec(**s) for s in data["singers"]]
        values["listeners"] = [ListenerSpec(**s) for s in data.get("listeners", [])]
        values["windows"] = [(int(lo), int(hi)) for lo, hi in data["windows"]]
        return cls(**values)


def _progress(worker: int, singers: list[Singer], listeners: list[Listener]) -> Event:
    totals: dict[str, int] = {}
    for singer in singers:
        for name, value in singer.live.__dict__.items():
            totals[name] = totals.get(name, 0) + value
    missing = sum(w.frames.missing for s in singers for w in s.stats)
    return {
        "type": "progress",
        "worker": worker,
        "time": time.time(),
        "singers": len(singers),
        "joined": sum(1 for s in singers if s.joined and not s.closed_early),
        "failed": sum(1 for s in singers if s.error is not None),
        "missing": missing,
        **totals,
        "listeners": sum(1 for x in listeners if x.joined_at is not None and x.closed_at is None),
        "listener_frames": sum(x.frames for x in listeners),
        "listener_late": sum(x.late for x in listeners),
        "listener_failed": sum(1 for x in listeners if x.error is not None),
    }


async def run_worker(plan: WorkerPlan, emit: Emit, stop: asyncio.Event) -> None:
    """Run the plan's singers to the end (or until ``stop`` is set), emitting events."""
    windows = Windows(plan.windows)
    behaviour = Behaviour(
        windows=windows,
        stop_at=plan.stop_at,
        latency_samples=round(plan.latency_ms * SAMPLE_RATE / 1000),
        leave=plan.leave,
        horizon=round(plan.horizon_s * SAMPLE_RATE),
    )
    audio = UpstreamAudio(plan.frames_per_message)
    clock = LocalClock(plan.clock_skew_ms)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=15)
    ) as http:
        singers = [
            Singer(spec, behaviour, audio, http, clock, verify=spec.index == plan.verify_index)
            for spec in plan.singers
        ]
        tasks = [asyncio.create_task(s.run(), name=f"singer-{s.spec.index}") for s in singers]
        listeners: list[Listener] = []
        if plan.listeners:
            tasks.append(
                asyncio.create_task(
                    run_listeners(plan.listeners, windows, plan.stop_at, stop, listeners)
                )
            )
        reporter = asyncio.create_task(_report_windows(plan, singers, listeners, emit))
        progress = asyncio.create_task(_report_progress(plan, singers, listeners, emit))
        stopper: asyncio.Future[Any] = asyncio.create_task(stop.wait())
        everyone: asyncio.Future[list[Any]] = asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait([stopper, everyone], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            for singer in singers:
                singer.stop()
        results = await everyone
        for singer, result in zip(singers, results, strict=False):
            if isinstance(result, BaseException):
                log.error("singer %d crashed: %r", singer.spec.index, result)
                singer.error = singer.error or f"crashed: {result!r}"
        for result in results[len(singers) :]:
            if isinstance(result, BaseException):
                log.error("the listeners crashed: %r", result)
        if not stop.is_set():
            # A worker of listeners only is done right at stop_at: its last window's
            # report is due just before, but a loaded loop may not have sent it yet.
            await asyncio.wait([reporter], timeout=plan.horizon_s + 5)
        for task in (reporter, progress, stopper):
            task.cancel()
        await asyncio.gather(reporter, progress, stopper, return_exceptions=True)
    emit(_progress(plan.worker, singers, listeners))
    emit({"type": "done", "worker": plan.worker, "singers": [s.report() for s in singers]})


async def _report_progress(
    plan: WorkerPlan, singers: list[Singer], listeners: list[Listener], emit: Emit
) -> None:
    while True:
        await asyncio.sleep(plan.progress_s)
        emit(_progress(plan.worker, singers, listeners))


async def _report_windows(
    plan: WorkerPlan, singers: list[Singer], listeners: list[Listener], emit: Emit
) -> None:
    windows = Windows(plan.windows)
    for index, (_, hi) in enumerate(plan.windows):
        settled_at = hi / SAMPLE_RATE + plan.horizon_s + 0.25
        await asyncio.sleep(max(0.0, settled_at - time.time()))
        for singer in singers:
            singer.settle()
        stats = window_totals(singers, index)
        start, end = plan.windows[index][0] / SAMPLE_RATE, hi / SAMPLE_RATE
        planned = [s for s in singers if s.spec.join_at <= start]
        emit(
            {
                "type": "window",
                "worker": plan.worker,
                "index": index,
                "stats": stats.to_json(),
                "singers": len(planned),
                "joined": sum(1 for s in planned if s.connected_through(start, end)),
                "failed": sum(1 for s in planned if s.error is not None),
                "listeners": window_report(listeners, windows, index, start, end),
            }
        )


def worker_main() -> int:
    """``brigade load --worker``: plan on stdin, events as JSON lines on stdout."""
    plan = WorkerPlan.from_json(json.loads(sys.stdin.readline()))
    out = sys.stdout

    def emit(event: Event) -> None:
        out.write(json.dumps(event, separators=(",", ":")) + "\n")
        out.flush()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_stdin() -> None:
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                stop.set()
                loop.remove_reader(sys.stdin.fileno())

        with contextlib.suppress(NotImplementedError, ValueError, OSError):
            loop.add_reader(sys.stdin.fileno(), on_stdin)
        await run_worker(plan, emit, stop)

    aio.run(main(), plan.event_loop)
    return 0
