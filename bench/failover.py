"""How long rooms are unowned when a mixer dies: ``python -m bench.failover``.

Two mixers share eight rooms; the owner of some is SIGKILLed, and the time
until the other owns all of them is measured (the lease TTL plus the
survivor's claim delay).  Repeated a few times; prints a table and writes
``bench-results/failover.json``.  tests/test_mixer_service.py checks that the
takeover happens; this script says how fast.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import redis

from bench.results import print_table, results_dir, write_results
from common import keys
from tests.simgateway import SimGateway
from tests.support import Process, RedisServer, wait_for

ROUNDS = 3
ROOMS = 8


def owner(client: redis.Redis, room: str) -> str | None:
    raw = client.get(keys.room_lease(room))
    return bytes(raw).decode() if raw is not None else None  # type: ignore[arg-type]


def one_round(server: RedisServer, log_dir: Path, index: int) -> float:
    client = server.client()
    client.flushall()
    sim = SimGateway(client)
    env = {"REDIS_URL": server.url, "BB_LOG_LEVEL": "WARNING"}
    ids = (f"bench-a{index}", f"bench-b{index}")
    mixers = [Process(["mixer"], {**env, "BB_MIXER_ID": i}, log_dir, i) for i in ids]
    try:
        wait_for(lambda: client.zcard(keys.MIXERS) == 2, 20, "both mixers")
        rooms = [f"room{i}" for i in range(ROOMS)]
        for room in rooms:
            sim.create_room(room)
        wait_for(lambda: all(owner(client, r) for r in rooms), 20, "every room owned")
        victim = owner(client, rooms[0])
        survivor = ids[1] if victim == ids[0] else ids[0]
        mixers[ids.index(str(victim))].kill()
        killed = time.monotonic()
        wait_for(
            lambda: all(owner(client, r) == survivor for r in rooms),
            60,
            "the survivor to own every room",
            interval_s=0.01,
        )
        return time.monotonic() - killed
    finally:
        for mixer in mixers:
            mixer.stop()
        client.close()


def main() -> dict[str, object]:
    server = RedisServer()
    server.start()
    results_dir().mkdir(parents=True, exist_ok=True)
    try:
        takeovers = [one_round(server, results_dir(), i) for i in range(ROUNDS)]
    finally:
        server.stop()
    results: dict[str, object] = {
        "takeover_s": takeovers,
        "median_takeover_s": statistics.median(takeovers),
        "max_takeover_s": max(takeovers),
        "target_max_takeover_s": 5.0,
    }
    print_table(
        f"Failover: SIGKILL of a mixer owning some of {ROOMS} rooms ({ROUNDS} rounds)",
        [
            (
                "median takeover, s",
                f"{results['median_takeover_s']:.2f}",
                "lease TTL 1.5 s + <= 0.5 s",
            ),
            ("worst takeover, s", f"{max(takeovers):.2f}", "< 5"),
        ],
    )
    print(f"JSON: {write_results('failover', results)}")
    return results


if __name__ == "__main__":
    main()
