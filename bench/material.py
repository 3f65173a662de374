"""Song material at scale: 50 rooms given tracks and an image, then abandoned.

Run with ``python -m bench.material [--rooms N] [--track-s S]``; prints a
table and writes ``bench-results/material.json``.

A private redis-server, one ``brigade mixer`` and one ``brigade gateway``
(``BB_MATERIAL_TTL_S=6``). For each room a leader joins over the WebSocket,
leads and uploads a stereo 44.1 kHz FLAC track of ``--track-s`` seconds
twice (the gateway decodes, resamples and encodes it to Ogg Opus) and a PNG;
the leaders stay (their rooms are in use, so the mixer keeps renewing the
TTL) until every room is filled, then all leave at once. Reported: the
upload time per track (the HTTP round trip, decoding included) and the
gateway's own decode time, Redis ``used_memory`` and the number of
track/image keys before, while held and after the TTL; after it
the memory must be back near where it started (the script exits 1 if not).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import redis

from bench.results import print_table, write_results
from common import protocol as p
from tests.support import Process, RedisServer, free_port, wait_for
from tests.uploadfiles import encode, png_bytes

TTL_S = 6.0


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
        return bool(response.status == 200)


def material_keys(client: redis.Redis) -> int:
    return sum(
        1
        for pattern in ("bb:{*}:track:*", "bb:{*}:image:*")
        for _ in client.scan_iter(match=pattern, count=1000)
    )


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _msg in ws:
        pass


drains: list[asyncio.Task[None]] = []


async def fill_room(
    http: aiohttp.ClientSession, base: str, room: str, track: bytes, image: bytes
) -> tuple[aiohttp.ClientWebSocketResponse, list[tuple[float, float]]]:
    """Join, lead, upload two tracks and an image; the socket and (round trip s, decode ms)."""
    ws = await http.ws_connect(base.replace("http://", "ws://") + "/ws")
    await ws.send_json(p.hello_message(room, "Lead"))
    welcome: dict[str, Any] = {}
    while welcome.get("type") != "welcome":
        welcome = await ws.receive_json(timeout=10)
    await ws.send_json({"type": "lead", "req": 1})
    while True:
        msg = await ws.receive_json(timeout=10)
        if msg.get("req") == 1:
            break
    headers = {"X-BB-Singer": welcome["singer"], "X-BB-Token": welcome["token"]}
    # Keep reading (state events, pings) so that the gateway keeps the socket open.
    drains.append(asyncio.create_task(_drain(ws)))
    timings = []
    for _ in range(2):
        began = time.perf_counter()
        async with http.post(f"{base}/api/rooms/{room}/tracks", data=track, headers=headers) as r:
            body = await r.json()
            assert r.status == 201, body
        timings.append((time.perf_counter() - began, float(body["decode_ms"])))
    async with http.post(f"{base}/api/rooms/{room}/image", data=image, headers=headers) as r:
        assert r.status == 201, await r.text()
    return ws, timings


async def run(
    rooms: int, track_s: float, base: str, client: redis.Redis
) -> tuple[list[tuple[float, float]], int, int]:
    """Fill the rooms, then leave them all; the timings, memory and keys while held."""
    t = np.arange(round(track_s * 44_100)) / 44_100
    signal = (0.3 * np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(t))).astype(np.float32)
    track = encode(signal, 44_100, "flac", channels=2)
    image = png_bytes(64, 64) + bytes(200_000)
    timings: list[tuple[float, float]] = []
    sockets = []
    async with aiohttp.ClientSession() as http:
        for index in range(rooms):
            ws, took = await fill_room(http, base, f"bench-material-{index}", track, image)
            sockets.append(ws)
            timings += took
        held = int(client.info("memory")["used_memory"])
        held_keys = material_keys(client)
        for ws in sockets:
            await ws.send_json({"type": "leave"})
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*drains, return_exceptions=True)
    return timings, held, held_keys


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--track-s", type=float, default=30.0)
    parser.add_argument("--keys", action="store_true", help="list the largest keys at the end")
    args = parser.parse_args(argv if argv is not None else [])
    server = RedisServer()
    server.start()
    client = redis.Redis(port=server.port)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-material-"))
    env = {"REDIS_URL": server.url, "BB_MATERIAL_TTL_S": str(TTL_S), "BB_LOG_LEVEL": "WARNING"}
    port = free_port()
    # Every room comes from this one address: lift the guard's per-address room
    # creation limit (10 a minute by default) above what the benchmark creates.
    gateway_env = {**env, "BB_PORT": str(port), "BB_ROOMS_PER_MIN": str(max(10, 2 * args.rooms))}
    procs = [
        Process(["mixer"], env, log_dir, "mixer"),
        Process(["gateway"], gateway_env, log_dir, "gateway"),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(base), 20, "the gateway")
        before = int(client.info("memory")["used_memory"])
        began = time.perf_counter()
        timings, held, held_keys = asyncio.run(run(args.rooms, args.track_s, base, client))
        fill_s = time.perf_counter() - began
        wait_for(lambda: material_keys(client) == 0, 4 * TTL_S, "the material to expire")
        # The rooms' tap streams (about 1 MB each) expire 10 s after their last window:
        # wait for them too, so that what is compared is what stays for good.
        wait_for(
            lambda: not any(client.scan_iter(match="bb:{*}:tap:*", count=1000)), 30, "the taps"
        )
        after = int(client.info("memory")["used_memory"])
        if args.keys:
            sizes = [(client.memory_usage(k) or 0, k) for k in client.scan_iter(count=1000)]
            for size, key in sorted(sizes, reverse=True)[:15]:
                print(size, key)
    finally:
        for proc in reversed(procs):
            proc.stop()
        client.close()
        server.stop()
    round_trips = [rt * 1000 for rt, _ in timings]
    decodes = [d for _, d in timings]
    results: dict[str, object] = {
        "rooms": args.rooms,
        "track_s": args.track_s,
        "uploads": len(timings),
        "upload_ms_p50": round(statistics.median(round_trips), 1),
        "upload_ms_max": round(max(round_trips), 1),
        "decode_ms_p50": round(statistics.median(decodes), 1),
        "fill_s": round(fill_s, 1),
        "keys_held": held_keys,
        "used_memory_before": before,
        "used_memory_held": held,
        "used_memory_after": after,
    }
    print_table(
        f"Song material: {args.rooms} rooms, 2 tracks of {args.track_s:g} s + 1 image each",
        [
            ("upload round trip p50", f"{results['upload_ms_p50']} ms", "per track, decode incl."),
            ("gateway decode p50", f"{results['decode_ms_p50']} ms", "FLAC -> 48 kHz Opus"),
            ("keys while held", str(held_keys), f"{3 * args.rooms} expected"),
            ("Redis memory held", f"{(held - before) / 1e6:.1f} MB", "above the start"),
            ("Redis memory after TTL", f"{(after - before) / 1e6:.2f} MB", "above the start"),
        ],
    )
    write_results("material", results)
    # What stays is the rooms' small records (members, song, streams), not the material.
    if held_keys != 3 * args.rooms or after - before > (held - before) / 5:
        print("FAIL: the abandoned rooms' material did not go away", file=sys.stderr)
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
