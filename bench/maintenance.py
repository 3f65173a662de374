"""The mixer's maintenance round against a real redis-server: ``python -m bench.maintenance``.

One in-process :class:`mixer.service.MixerService` owns ``OWNED`` rooms
while ``OTHERS`` more are active and held by another mixer; the wall time
of one ``maintain()`` round (heartbeat, lease renewal, the planner, the
free-room check) and the CPU time it takes in this process are measured over
``ROUNDS`` rounds. Prints a table and
writes ``bench-results/maintenance.json``. Run it against two versions of
the code in one sitting to compare them; the figure is a cost, not a target.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Final

from redis.asyncio import Redis

from bench.results import print_table, write_results
from common import keys
from common.settings import MixerSettings
from mixer.service import MixerService
from tests.support import RedisServer

OWNED: Final = 200
OTHERS: Final = 800
ROUNDS: Final = 200


async def measure(url: str) -> tuple[list[float], list[float]]:
    """Per round: (wall ms, this process's CPU ms); Redis's own time is only in the wall."""
    redis = Redis.from_url(url)
    try:
        await redis.flushall()
        owned = [f"own{i}" for i in range(OWNED)]
        others = [f"other{i}" for i in range(OTHERS)]
        await redis.sadd(keys.ACTIVE_ROOMS, *owned, *others)
        for room in others:
            await redis.set(keys.room_lease(room), "elsewhere", px=600_000)
        service = MixerService(MixerSettings(mixer_id="bench-m", max_rooms=OWNED), redis)
        while len(service.rooms) < OWNED:
            await service.maintain()
        rounds: list[float] = []
        cpu: list[float] = []
        for _ in range(ROUNDS):
            t0, c0 = time.perf_counter(), time.process_time()
            await service.maintain()
            cpu.append((time.process_time() - c0) * 1000)
            rounds.append((time.perf_counter() - t0) * 1000)
        return rounds, cpu
    finally:
        await redis.aclose()


def main() -> dict[str, object]:
    server = RedisServer()
    server.start()
    try:
        rounds, cpu = asyncio.run(measure(server.url))
    finally:
        server.stop()
    rounds.sort()
    results: dict[str, object] = {
        "owned_rooms": OWNED,
        "other_active_rooms": OTHERS,
        "rounds": ROUNDS,
        "median_round_ms": statistics.median(rounds),
        "p90_round_ms": rounds[int(0.9 * len(rounds))],
        "min_round_ms": rounds[0],
        "median_round_cpu_ms": statistics.median(cpu),
        "total_cpu_ms": sum(cpu),
    }
    print_table(
        f"Maintenance: one round, {OWNED} rooms owned, {OTHERS} held elsewhere ({ROUNDS} rounds)",
        [
            ("median round, ms", f"{results['median_round_ms']:.2f}", ""),
            ("p90 round, ms", f"{results['p90_round_ms']:.2f}", ""),
            ("fastest round, ms", f"{results['min_round_ms']:.2f}", ""),
            ("median round, CPU ms (this process)", f"{results['median_round_cpu_ms']:.2f}", ""),
            (f"CPU of all {ROUNDS} rounds, ms", f"{results['total_cpu_ms']:.1f}", ""),
        ],
    )
    print(f"JSON: {write_results('maintenance', results)}")
    return results


if __name__ == "__main__":
    main()
