"""Clock sync and mixer tick health under a small load: ``python -m bench.clocksync``.

A local stack (Redis, a mixer, a gateway) and four simulated singers whose
clocks are 7 s off; prints how far their clock estimates ended from the truth
(ms) and how many mixer ticks overran, and writes
``bench-results/clocksync.json``.  tests/test_load.py checks that sync undoes
the skew and that frames are accounted; these are the figures.
"""

from __future__ import annotations

import asyncio

from bench.capacity import Stack
from bench.results import print_table, results_dir, write_results
from loadgen.cli import prepare, results_json
from loadgen.run import LoadConfig, LoadRun


async def measure(url: str, redis_url: str) -> dict[str, object]:
    config = LoadConfig(
        urls=(url,),
        steps=(4,),
        room_size=4,
        room_prefix="clock",
        measure_s=6.0,
        warmup_s=2.0,
        connect_rate=20.0,
        clock_skew_ms=-7_000.0,
        redis_url=redis_url,
    )
    run = LoadRun(config, await prepare(config))
    await run.run()
    results = results_json(config, run)
    (window,) = run.windows
    server = window.server or {}
    return {
        "clock": results["clock"],
        "tick_overruns": server.get("tick_overruns"),
        "late_frames": window.frames.late,
        "missing_frames": window.frames.missing,
    }


def main() -> dict[str, object]:
    results_dir().mkdir(parents=True, exist_ok=True)
    stack = Stack(gateways=1, log_dir=results_dir())
    stack.start()
    try:
        results = asyncio.run(measure(stack.urls[0], stack.redis.url))
    finally:
        stack.stop()
    clock = results["clock"]
    assert isinstance(clock, dict)
    print_table(
        "Clock sync (4 singers, clocks 7 s off) and mixer ticks",
        [
            ("max clock error, ms", f"{clock.get('max_abs_error_ms', float('nan')):.2f}", "< 5"),
            ("mean clock error, ms", f"{clock.get('mean_abs_error_ms', float('nan')):.2f}", ""),
            ("mixer tick overruns", str(results["tick_overruns"]), "0"),
            ("late frames", str(results["late_frames"]), "0"),
            ("missing frames", str(results["missing_frames"]), "0"),
        ],
    )
    print(f"JSON: {write_results('clocksync', results)}")
    return results


if __name__ == "__main__":
    main()
