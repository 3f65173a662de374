"""Password guessing under a flood from many addresses: what is checked, who gets in.

Run with ``python -m bench.guessing [--addresses N] [--seconds S]``; prints a
table and writes ``bench-results/guessing.json``.

A private redis-server, one ``brigade mixer`` and one ``brigade gateway``
process; a password room with one member.  N guessers, each bound to its own
loopback address (tests/guessers.py), send wrong passwords one after another
for S seconds (after a refusal each waits ``--pause-s`` and tries again, as a
determined guesser would).  Every ``--probe-s`` seconds a newcomer from a fresh
address tries the right password and the member resumes with its token.

``checked_per_min`` counts the guesses the gateway checked (answered
``bad_password``: each cost one PBKDF2), per minute of flood, for the one
room; ``refused_per_min`` those refused (``rate_limited``: locked, or pushed
out of the queue of checks).  The
gateway's CPU over the flood (from /proc) is the cost of all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.procstat import cpu_s
from bench.results import print_table, write_results
from common.protocol import Resume
from tests.guessers import PASSWORD, ROOM, address, flood, join, outcome
from tests.support import RedisServer, running_stack


async def _flood(
    base: str, gateway_pid: int, addresses: int, seconds: float, pause_s: float, probe_s: float
) -> dict[str, object]:
    ws_url = base + "/ws"
    async with aiohttp.ClientSession() as http:
        body = {"room": ROOM, "password": PASSWORD}
        async with http.post(base + "/api/rooms", json=body) as response:
            assert response.status == 201, response.status
    welcome = await join(ws_url, address(60_000))
    assert outcome(welcome) == "welcome", welcome
    seat = Resume(welcome["singer"], welcome["token"])
    cpu0, t0 = cpu_s(gateway_pid), time.monotonic()
    guessers = flood(ws_url, [address(n) for n in range(addresses)], pause_s)
    tally = guessers.tally
    newcomers: list[str] = []
    resumes: list[str] = []

    async def probe(outcomes: list[str], who: str) -> None:
        # Each on its own clock: a newcomer kept waiting must not keep the member
        # away past the reconnect grace (30 s), which would give its seat up.
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(probe_s)
            if who == "member":
                answer = await join(ws_url, address(60_000), seat)
            else:
                answer = await join(ws_url, address(61_000 + len(outcomes)))
            outcomes.append(outcome(answer))
            if outcomes[-1] != "welcome":
                print(f"{who}: {answer.get('message')}", flush=True)

    try:
        await asyncio.gather(probe(newcomers, "newcomer"), probe(resumes, "member"))
    finally:
        await guessers.stop()
    elapsed_s = time.monotonic() - t0
    cpu = cpu_s(gateway_pid) - cpu0
    minutes = elapsed_s / 60
    return {
        "addresses": addresses,
        "seconds": round(elapsed_s, 1),
        "checked": tally.total("bad_password"),
        "checked_per_min": round(tally.total("bad_password") / minutes, 1),
        "refused_per_min": round(tally.total("rate_limited") / minutes, 1),
        "first_minute_checked": sum(t - t0 < 60 for t in tally.checked_at),
        "newcomers_in": f"{newcomers.count('welcome')}/{len(newcomers)}",
        "resumes_in": f"{resumes.count('welcome')}/{len(resumes)}",
        "newcomer_outcomes": sorted(set(newcomers)),
        "resume_outcomes": sorted(set(resumes)),
        "gateway_cpu_per_s": round(cpu / elapsed_s, 3),
    }


def run(addresses: int, seconds: float, pause_s: float, probe_s: float) -> dict[str, object]:
    """Start Redis, a mixer and a gateway; flood them; return the measurements."""
    log_dir = Path(tempfile.mkdtemp(prefix="bb-bench-guessing-"))
    redis_server = RedisServer()
    redis_server.start()
    env = {"BB_LOG_LEVEL": "WARNING"}
    try:
        with running_stack(redis_server.url, log_dir, env=env) as stack:
            gateway_pid = stack.gateway_procs[0].proc.pid
            results = asyncio.run(
                _flood(stack.base, gateway_pid, addresses, seconds, pause_s, probe_s)
            )
    finally:
        redis_server.stop()
    results["logs"] = str(log_dir)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pause-s", type=float, default=0.2)
    parser.add_argument("--probe-s", type=float, default=5.0)
    args = parser.parse_args()
    results = run(args.addresses, args.seconds, args.pause_s, args.probe_s)
    print_table(
        f"Password guessing: {args.addresses} addresses for {args.seconds:.0f} s, one room",
        [(key, str(value), "") for key, value in results.items() if key != "logs"],
    )
    print(write_results("guessing", results))


if __name__ == "__main__":
    main()
