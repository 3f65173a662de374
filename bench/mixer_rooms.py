"""What a room costs the mixer beside its singers: ``python -m bench.mixer_rooms``.

The same number of singers in one room and in rooms of ``--room-size``, each
layout on a private redis-server of its own (in memory, as compose runs the
audio Redis beside the keeper; ``--aof`` for an append-only file) with a
:class:`mixer.service.MixerService` in this process, ticking every 100 ms on
the real clock as ``brigade mixer`` does: it reads the rooms' input, mixes,
writes the taps, events, stats and the failover checkpoint. Before each tick
the benchmark pushes every singer's 100 ms int16 chunk to ``bb:{R}:in`` as a
gateway does, and keeps the recorder's tap subscribed in every room (a
recorder records every song; ``--no-recorder`` for none); the mixer's other
settings come from ``BB_*`` variables. Only the ticks are timed
(``process_time`` around ``MixerService.tick``), after ``--warmup-s`` so that
every bucket's audio is in the ring; each Redis's CPU (``/proc``) and the bytes
it wrote to disk are measured over the same window.

The layouts run side by side, in turns within every tick period (who goes
first alternates), so the machine's drift falls on both alike and the ratio
holds even on a busy machine; ``--rounds`` repeats the whole run. The headline
is the ratio of the medians, rooms / one room. Writes
``bench-results/mixer_rooms.json``.
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
from common import aio, keys
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


class Layout:
    """``singers`` in rooms of ``room_size`` on a private redis-server, with a mixer."""

    def __init__(
        self, singers: int, room_size: int, recorder: bool, aof: bool, checkpoint_ms: int
    ) -> None:
        self.singers, self.room_size, self.recorder = singers, room_size, recorder
        self.data = tempfile.mkdtemp(prefix="mixer-rooms-")
        self.server = RedisServer(persist_dir=self.data if aof else None)
        self.checkpoint_ms = checkpoint_ms
        self.used = self.redis_cpu = self.disk = 0.0

    async def start(self, now: int) -> None:
        self.server.start()
        self.client = redis.Redis.from_url(self.server.url)
        self.aclient = AsyncRedis.from_url(self.server.url)
        settings = MixerSettings.from_env(
            {
                **{k: v for k, v in os.environ.items() if k.startswith("BB_")},
                "REDIS_URL": self.server.url,
                "BB_MIXER_ID": "bench",
                "BB_CHECKPOINT_MS": str(self.checkpoint_ms),
            }
        )
        self.service = MixerService(settings, self.aclient)
        sizes = [
            min(self.room_size, self.singers - i) for i in range(0, self.singers, self.room_size)
        ]
        self.names = [f"room{i}" for i in range(len(sizes))]
        async with self.aclient.pipeline(transaction=False) as pipe:
            for name, size in zip(self.names, sizes, strict=True):
                store.queue_persist(pipe, name, _room_state(size, now), b"0-0", set())
            await pipe.execute()
        for name in self.names:
            await self.service._claim(name)
        self.start_pos = self.service.rooms[self.names[0]].state.song.start_pos or now

    def push(self, k: int, pcm: np.ndarray[Any, Any]) -> None:
        """Every singer's chunk for tick ``k`` (and the recorder's tap, once a second)."""
        clock = now_samples()
        with self.client.pipeline(transaction=False) as pipe:
            for name in self.names:
                owned = self.service.rooms[name]
                members = list(owned.state.members.values())
                if self.recorder and k % 10 == 0:
                    delay = recording_delay(RoomMeta(), members)
                    owned.state.subscribe_tap("recorder", delay, "full", clock, 30 * SAMPLE_RATE)
                for m in members:
                    pos = clock - m.delay - LATENCY
                    pos -= (pos - self.start_pos) % CHUNK
                    pipe.xadd(
                        keys.room_in(name),
                        {"d": encode_chunk(name, m.singer_id, 1, k, pos, pcm)},
                    )
            pipe.execute()

    async def tick(self, measured: bool) -> None:
        began = time.process_time()
        await self.service.tick()
        if measured:
            self.used += time.process_time() - began

    def mark(self, sign: float) -> None:
        """Redis's CPU and disk at the measurement's start (-1) or end (+1)."""
        pid = self.server.proc.pid if self.server.proc else 0
        self.redis_cpu += sign * cpu_s(pid)
        self.disk += sign * io_write_bytes(pid)

    def figures(self, seconds: float) -> dict[str, float]:
        singer_s = self.singers * seconds
        return {
            "mixer_ms_per_singer_second": 1000 * self.used / singer_s,
            "redis_ms_per_singer_second": 1000 * self.redis_cpu / singer_s,
            "redis_disk_bytes_per_singer_second": self.disk / singer_s,
            "tick_overruns": float(self.service.counters.tick_overruns),
        }

    async def stop(self) -> None:
        self.client.close()
        await self.aclient.aclose()
        self.server.stop()
        shutil.rmtree(self.data, ignore_errors=True)


async def run(
    singers: int,
    sizes: Sequence[int],
    warmup_s: float,
    measure_s: float,
    recorder: bool,
    aof: bool,
    checkpoint_ms: int = 1000,
) -> list[dict[str, float]]:
    """Mixer and Redis CPU, ms per singer-second, for ``singers`` in rooms of each size.

    The layouts run side by side, each with its own Redis and mixer: in every tick
    period each gets its chunks and then its tick, in turns, so whatever the machine
    does meanwhile falls on all of them alike.
    """
    layouts = [Layout(singers, size, recorder, aof, checkpoint_ms) for size in sizes]
    try:
        now = now_samples()
        for layout in layouts:
            await layout.start(now)
        t = np.arange(CHUNK, dtype=np.float64) / SAMPLE_RATE
        pcm = (np.sin(2 * np.pi * 220.0 * t) * 8000).astype(np.int16)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        ticks_warm = round(warmup_s / TICK_S)
        ticks = round(measure_s / TICK_S)
        for k in range(ticks_warm + ticks):
            if k == ticks_warm:
                for layout in layouts:
                    layout.mark(-1)
            turn = layouts[k % 2 :] + layouts[: k % 2]  # who goes first alternates
            for layout in turn:
                layout.push(k, pcm)
                await layout.tick(k >= ticks_warm)
            next_at += TICK_S
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        for layout in layouts:
            layout.mark(+1)
        return [layout.figures(ticks * TICK_S) for layout in layouts]
    finally:
        for layout in layouts:
            await layout.stop()


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
    p.add_argument("--aof", action="store_true", help="Redis with an append-only file")
    p.add_argument("--checkpoint-ms", type=int, default=1000, help="0: no checkpoints")
    p.add_argument(
        "--layouts", default="one-room,rooms", help="comma-separated: one-room, rooms (both)"
    )
    p.add_argument("--name", default="mixer_rooms")
    args = p.parse_args(list(argv))
    if args.measure_s < TICK_S:
        p.error(f"--measure-s must cover at least one tick ({TICK_S} s)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(sys.argv[1:] if argv is None else argv)
    recorder, aof = not args.no_recorder, args.aof
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
        # On the event loop `brigade mixer` runs (uvloop unless BB_EVENT_LOOP says
        # otherwise), with its gc.freeze: asyncio's own loop costs more per command.
        together = aio.run(
            run(
                args.singers,
                list(layouts.values()),
                args.warmup_s,
                args.measure_s,
                recorder,
                aof,
                args.checkpoint_ms,
            ),
            os.environ.get("BB_EVENT_LOOP", "uvloop"),
        )
        for name, figures in zip(layouts, together, strict=True):
            runs[name].append(figures)
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
