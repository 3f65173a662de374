"""What a room costs the mixer beside its singers: ``python -m bench.mixer_rooms``.

The same number of singers in one room and in rooms of ``--room-size``,
each run on a fresh private redis-server (with its append-only file, as
compose runs it; ``--no-aof`` for none) and a :class:`mixer.service.MixerService`
in this process, ticking every 100 ms on the real clock as ``brigade mixer``
does: it reads the rooms' input, mixes, writes the taps, events, stats and the
failover checkpoint. Between ticks the benchmark pushes every singer's 100 ms
int16 chunk to ``bb:{R}:in`` as a gateway does, and keeps the recorder's tap
subscribed in every room (a recorder records every song; ``--no-recorder``
for none); the mixer's other settings come from ``BB_*`` variables. Only the
ticks are timed (``process_time`` around ``MixerService.tick``, nothing else
runs meanwhile), after ``--warmup-s`` so
that every bucket's audio is in the ring; Redis's CPU (``/proc``) and the
bytes it wrote to disk are measured over the same window.

The two layouts alternate (``--rounds``), so the machine's drift shows as the
spread; the headline is the ratio of the medians, rooms / one room.
Writes ``bench-results/mixer_rooms.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import redis
from redis.asyncio import Redis as AsyncRedis

from bench.capacity import io_write_bytes
from bench.procstat import cpu_s
from bench.results import write_results
from common import keys
from common.clock import now_samples
from common.constants import SAMPLE_RATE
from common.records import RoomMeta
from common.settings import MixerSettings
from common.wire import encode_chunk
from mixer import store
from mixer.room import Role, RoomConfig, RoomState
from mixer.service import MixerService
from recorder.core import recording_delay
from tests.support import RedisServer

TICK_S: Final = 0.1
CHUNK: Final = SAMPLE_RATE // 10
LATENCY: Final = SAMPLE_RATE // 10


def _room_state(singers: int, now: int) -> RoomState:
    state = RoomState(RoomConfig(capacity=max(100, singers)))
    for i in range(singers):
        state.join(f"s{i}", f"Singer {i}", Role.SINGER, now - 10 * SAMPLE_RATE + i)
    state.request_lead("s0", now - 10 * SAMPLE_RATE)
    state.start_song("s0", now)
    return state


async def run(
    singers: int,
    room_size: int,
    warmup_s: float,
    measure_s: float,
    recorder: bool,
    aof: bool,
    checkpoint_ms: int = 1000,
) -> dict[str, float]:
    """Mixer and Redis CPU, ms per singer-second, for ``singers`` in rooms of ``room_size``."""
    data = tempfile.mkdtemp(prefix="mixer-rooms-")
    server = RedisServer(persist_dir=data if aof else None)
    server.start()
    client = redis.Redis.from_url(server.url)
    aclient = AsyncRedis.from_url(server.url)
    try:
        settings = MixerSettings.from_env(
            {
                **{k: v for k, v in os.environ.items() if k.startswith("BB_")},
                "REDIS_URL": server.url,
                "BB_MIXER_ID": "bench",
                "BB_CHECKPOINT_MS": str(checkpoint_ms),
            }
        )
        service = MixerService(settings, aclient)
        now = now_samples()
        sizes = [min(room_size, singers - i) for i in range(0, singers, room_size)]
        names = [f"room{i}" for i in range(len(sizes))]
        async with aclient.pipeline(transaction=False) as pipe:
            for name, size in zip(names, sizes, strict=True):
                store.queue_persist(pipe, name, _room_state(size, now), b"0-0", set())
            await pipe.execute()
        for name in names:
            await service._claim(name)
        t = np.arange(CHUNK, dtype=np.float64) / SAMPLE_RATE
        pcm = (np.sin(2 * np.pi * 220.0 * t) * 8000).astype(np.int16)
        start = service.rooms[names[0]].state.song.start_pos or now
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        ticks_warm = round(warmup_s / TICK_S)
        ticks = round(measure_s / TICK_S)
        used = 0.0
        redis_pid = server.proc.pid if server.proc else 0
        redis_cpu = disk = 0.0
        for k in range(ticks_warm + ticks):
            if k == ticks_warm:
                redis_cpu, disk = -cpu_s(redis_pid), -io_write_bytes(redis_pid)
            clock = now_samples()
            with client.pipeline(transaction=False) as pipe:
                for name in names:
                    owned = service.rooms[name]
                    members = list(owned.state.members.values())
                    if recorder and k % 10 == 0:
                        delay = recording_delay(RoomMeta(), members)
                        owned.state.subscribe_tap(
                            "recorder", delay, "full", clock, 30 * SAMPLE_RATE
                        )
                    for m in members:
                        pos = clock - m.delay - LATENCY
                        pos -= (pos - start) % CHUNK
                        pipe.xadd(
                            keys.room_in(name),
                            {"d": encode_chunk(name, m.singer_id, 1, k, pos, pcm)},
                        )
                pipe.execute()
            began = time.process_time()
            await service.tick()
            if k >= ticks_warm:
                used += time.process_time() - began
            next_at += TICK_S
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        redis_cpu += cpu_s(redis_pid)
        disk += io_write_bytes(redis_pid)
        seconds = ticks * TICK_S
        return {
            "mixer_ms_per_singer_second": 1000 * used / (singers * seconds),
            "redis_ms_per_singer_second": 1000 * redis_cpu / (singers * seconds),
            "redis_disk_bytes_per_singer_second": disk / (singers * seconds),
            "tick_overruns": float(service.counters.tick_overruns),
        }
    finally:
        client.close()
        await aclient.aclose()
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.mixer_rooms", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--singers", type=int, default=200)
    p.add_argument("--room-size", type=int, default=50)
    p.add_argument("--warmup-s", type=float, default=20.0, help="song before the measurement")
    p.add_argument("--measure-s", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-recorder", action="store_true", help="no recorder tap")
    p.add_argument("--no-aof", action="store_true", help="Redis without its append-only file")
    p.add_argument("--checkpoint-ms", type=int, default=1000, help="0: no checkpoints")
    p.add_argument(
        "--layouts", default="one-room,rooms", help="comma-separated: one-room, rooms (both)"
    )
    p.add_argument("--name", default="mixer_rooms")
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(sys.argv[1:] if argv is None else argv)
    recorder, aof = not args.no_recorder, not args.no_aof
    chosen = args.layouts.split(",")
    layouts = {
        name: size
        for key, name, size in (
            ("one-room", "one-room", args.singers),
            ("rooms", f"rooms-of-{args.room_size}", args.room_size),
        )
        if key in chosen
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in layouts}
    for _ in range(args.rounds):
        for name, size in layouts.items():
            runs[name].append(
                asyncio.run(run(args.singers, size, args.warmup_s, args.measure_s, recorder, aof))
            )
            figures = runs[name][-1]
            print(
                f"{name:>12}: mixer {figures['mixer_ms_per_singer_second']:.3f} "
                f"redis {figures['redis_ms_per_singer_second']:.3f} ms/singer-s, "
                f"redis disk {figures['redis_disk_bytes_per_singer_second']:.0f} B/singer-s",
                flush=True,
            )

    def median(name: str, key: str) -> float:
        return statistics.median(f[key] for f in runs[name])

    one, many = (*layouts, *layouts)[:2]
    ratio = {
        key: median(many, key) / max(1e-9, median(one, key))
        for key in ("mixer_ms_per_singer_second", "redis_ms_per_singer_second")
    }
    result: dict[str, Any] = {
        "singers": args.singers,
        "room_size": args.room_size,
        "recorder_tap": recorder,
        "aof": aof,
        "checkpoint_ms": args.checkpoint_ms,
        "medians": {name: {key: median(name, key) for key in runs[name][0]} for name in layouts},
        "ratio_rooms_to_one_room": ratio,
        "runs": runs,
    }
    print(
        f"rooms of {args.room_size} / one room of {args.singers} (median of {args.rounds}): "
        f"mixer x{ratio['mixer_ms_per_singer_second']:.2f}, "
        f"redis x{ratio['redis_ms_per_singer_second']:.2f} "
        f"(recorder tap {recorder}, AOF {aof})"
    )
    write_results(args.name, result)
    return result


if __name__ == "__main__":
    main()
