"""Gateway CPU per second of one singer's audio, with 100 singers over real WebSockets.

Run with ``python -m bench.gateway [--singers N] [--seconds S] [--room-size K]``;
prints a table and writes ``bench-results/gateway.json``.

The set-up is the real topology on this machine: a private redis-server, one
``brigade mixer`` and one ``brigade gateway`` process.  This process plays
the browsers: N singers join one room (or rooms of ``--room-size``), the
first of each room leads and starts a song,
and every singer streams real Opus (10 packets = 200 ms per message, as the browser does, at
real-time pace, on their own positions) while reading its tap's frames.

``cpu_ms_per_singer_second`` is the gateway process's CPU time (user +
system, all threads, from /proc) over the measurement window, divided by the
singer-seconds of audio it decoded and pushed to Redis in that window (its
``chunks_pushed_total`` counter; ``backlog_growth_singer_seconds`` is how
much more it accepted than it pushed, non-zero when it fell behind).  It
covers receiving, decoding, pushing to Redis and the gateway's share of tap
encoding and fan-out.  Beside it,
``opus_decode_ms_per_singer_second`` is the raw libopus decode cost of the
same traffic (the same packets, streams and pace), measured by a child
process over the same seconds (bench/decode_floor.py): the floor any
gateway pays, under the same machine load.  ``gateway_over_decode`` is the
ratio of the two in each run (issue 23's goal: 1.3 at most).
``ping_rtt_ms_p50/p99`` are WebSocket ping round trips measured while
loaded: they show whether codec work stalls the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.decode_floor import DecodeFloor, bench_packets, ms_per_singer_second
from bench.procstat import cpu_s
from bench.results import print_table, results_dir, write_results
from common import protocol as p
from common.clock import now_samples
from common.codec import OpusDecoder
from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE, UPSTREAM_FRAMES_PER_MESSAGE
from tests.support import Process, RedisServer, free_port, wait_for

TARGET_MS = 2.5
TARGET_OVER_DECODE = 1.3
"""Issue 23 item 5: the gateway within 1.3x the raw Opus decode of the same packets."""
ORIGINAL_MS = 8.7
MAX_BACKLOG_GROWTH = 0.05
"""A run whose gateway accepted more than 5 % more audio than it pushed (or caught up
by as much) fell behind: the machine was overloaded and its ratio is not comparable."""
PACKETS_PER_MESSAGE = UPSTREAM_FRAMES_PER_MESSAGE
"""What the browser client sends (200 ms, served as ``frames_per_message``)."""
LOGS = "gateway-logs"
"""The runs' mixer and gateway logs, beside the results (replaced by the next invocation)."""
SHORT_MESSAGE = 5
"""The low end of the protocol's intended 100-200 ms, measured beside it."""
ROOM = "bench"


def decode_ms_per_second(packets: list[bytes], seconds: int = 20) -> float:
    """Raw libopus decode cost per second of audio, in one short loop in this process.

    The way the floor was measured before :mod:`bench.decode_floor`: kept
    beside it in the results to show how much one short loop after the run
    drifts from the floor measured during the run.
    """
    decoder = OpusDecoder()
    out = np.empty(OPUS_FRAME_SAMPLES, np.float32)
    for packet in packets:  # warm-up
        decoder.decode_into(packet, out)
    frames = seconds * SAMPLE_RATE // OPUS_FRAME_SAMPLES
    cycle = itertools.cycle(packets)
    start = time.process_time()
    for _ in range(frames):
        decoder.decode_into(next(cycle), out)
    return (time.process_time() - start) * 1000 / seconds


@dataclass
class SimSinger:
    """One simulated browser: streams pre-encoded Opus, reads (and discards) its tap."""

    http: aiohttp.ClientSession
    url: str
    name: str
    packets: list[bytes]
    per_message: int = PACKETS_PER_MESSAGE
    room: str = ROOM
    ws: aiohttp.ClientWebSocketResponse | None = None
    singer: str = ""
    delay: int = 0
    frames_in: int = 0
    rtts_ms: list[float] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    _replies: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _req: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def join(self) -> None:
        self.ws = await self.http.ws_connect(self.url, max_msg_size=0)
        await self.ws.send_json(p.hello_message(self.room, self.name))
        welcome = await self.ws.receive_json(timeout=30)
        while welcome.get("type") == "material":  # the room's material comes before welcome
            welcome = await self.ws.receive_json(timeout=30)
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"{self.name} could not join: {welcome}")
        self.singer = welcome["singer"]

    async def read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.frames_in += int.from_bytes(msg.data[2:4], "little")
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            event = msg.json()
            kind = event.get("type")
            if kind == "state":
                for member in event["state"]["members"]:
                    if member["singer_id"] == self.singer:
                        self.delay = member["delay"]
            elif kind == "pong":
                self.rtts_ms.append((time.perf_counter() * 1000) - event["t"])
            elif kind in {"ack", "error"} and event.get("req") in self._replies:
                self._replies.pop(event["req"]).set_result(event)
            elif kind == "error":
                self.errors.append(event)

    async def request(self, kind: str, **fields: object) -> dict[str, Any]:
        assert self.ws is not None
        req = next(self._req)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[req] = future
        await self.ws.send_json({"type": kind, "req": req, **fields})
        return await asyncio.wait_for(future, 30)

    async def sing(self, offset: int) -> None:
        """Send 100 ms messages at real-time pace (message phase ``offset``).

        Each singer starts with what they sing now (position now - delay), as
        a browser that joins a running song does.
        """
        assert self.ws is not None
        seq = 0
        chunk = self.per_message * OPUS_FRAME_SAMPLES
        period_s = chunk / SAMPLE_RATE
        pos = now_samples() - self.delay - chunk - 2400
        cycle = len(self.packets) - self.per_message
        await asyncio.sleep(offset % 100 * period_s / 100)  # spread the singers over a period
        while True:
            while pos + chunk + self.delay + 2400 <= now_samples():
                k = (seq * self.per_message) % cycle
                packets = self.packets[k : k + self.per_message]
                await self.ws.send_bytes(p.encode_upstream_opus(1, seq, pos, packets))
                pos += chunk
                seq += 1
            await asyncio.sleep(period_s)

    async def ping(self) -> None:
        assert self.ws is not None
        for i in itertools.count():
            await self.ws.send_json({"type": "ping", "id": i, "t": time.perf_counter() * 1000})
            await asyncio.sleep(0.5)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def _metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(base + "/metrics") as response:
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def _drive(
    base: str,
    gateway_pid: int,
    singers: int,
    warmup_s: float,
    seconds: float,
    floor: DecodeFloor,
    per_message: int = PACKETS_PER_MESSAGE,
    room_size: int = 0,
) -> dict[str, object]:
    packets = bench_packets()
    url = base.replace("http://", "ws://") + "/ws"
    connector = aiohttp.TCPConnector(limit=0)
    size = room_size if room_size > 0 else max(1, singers)
    rooms = [ROOM] if size >= singers else [f"{ROOM}-{k}" for k in range(-(-singers // size))]
    async with aiohttp.ClientSession(connector=connector) as http:
        for room in rooms:
            async with http.post(base + "/api/rooms", json={"room": room, "capacity": 1000}) as r:
                assert r.status in {201, 409}, r.status
        sims = [
            SimSinger(http, url, f"Singer {i}", packets, per_message, rooms[i // size])
            for i in range(singers)
        ]
        for batch in range(0, singers, 20):
            await asyncio.gather(*(s.join() for s in sims[batch : batch + 20]))
        readers = [asyncio.create_task(s.read()) for s in sims]
        for leader in sims[::size]:  # the first singer of each room
            for command in ("lead", "start"):
                reply = await leader.request(command)
                assert reply["type"] == "ack", reply
        for room in rooms:
            await _wait_state(http, base, room)
        await _until(lambda: all(s.delay for s in sims), "every singer's delay")
        tasks = [asyncio.create_task(s.sing(i)) for i, s in enumerate(sims)]
        tasks += [asyncio.create_task(s.ping()) for s in sims[:10]]
        await asyncio.sleep(warmup_s)
        for s in sims:
            s.rtts_ms.clear()
        m0, c0, t0 = await _metrics(http, base), cpu_s(gateway_pid), time.monotonic()
        f0, frames0 = floor.reading(), sum(s.frames_in for s in sims)
        await asyncio.sleep(seconds)
        m1, c1, t1 = await _metrics(http, base), cpu_s(gateway_pid), time.monotonic()
        f1, frames1 = floor.reading(), sum(s.frames_in for s in sims)
        for task in tasks + readers:
            task.cancel()
        await asyncio.gather(*tasks, *readers, return_exceptions=True)
        for s in sims:
            if s.ws is not None:
                await s.ws.close()

    def delta(name: str) -> float:
        return m1.get(name, 0.0) - m0.get(name, 0.0)

    # Audio decoded and pushed in the window, not merely accepted: on a loaded machine
    # the gateway can fall behind, and work queued in the window is paid after it.
    singer_seconds = delta("bb_gateway_chunks_pushed_total") * per_message * OPUS_FRAME_SAMPLES
    singer_seconds /= SAMPLE_RATE
    accepted_s = delta("bb_gateway_samples_in_total") / SAMPLE_RATE
    cpu_ms = (c1 - c0) * 1000
    rtts = sorted(r for s in sims for r in s.rtts_ms)
    results: dict[str, object] = {
        "singers": singers,
        "rooms": len(rooms),
        "packets_per_message": per_message,
        "window_s": round(t1 - t0, 2),
        "singer_seconds": round(singer_seconds, 1),
        "backlog_growth_singer_seconds": round(accepted_s - singer_seconds, 1),
        "gateway_cpu_ms": round(cpu_ms, 1),
        "gateway_cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 1),
        "cpu_ms_per_singer_second": round(cpu_ms / singer_seconds, 3) if singer_seconds else None,
        "frames_out_per_singer_second": round(
            delta("bb_gateway_frames_out_total") / singer_seconds, 1
        )
        if singer_seconds
        else None,
        "frames_received_by_clients": frames1 - frames0,
        "frames_dropped": delta("bb_gateway_frames_dropped_total"),
        "decode_errors": delta("bb_gateway_decode_errors_total"),
        "drops": sum(v for k, v in m1.items() if k.startswith("bb_gateway_drops_total"))
        - sum(v for k, v in m0.items() if k.startswith("bb_gateway_drops_total")),
        "client_errors": sum(len(s.errors) for s in sims),
        "taps": m1.get("bb_gateway_taps"),
        "ping_rtt_ms_p50": round(statistics.median(rtts), 2) if rtts else None,
        "ping_rtt_ms_p99": round(rtts[int(0.99 * (len(rtts) - 1))], 2) if rtts else None,
        "opus_decode_ms_per_singer_second": _round(ms_per_singer_second(f0, f1)),
        "opus_decode_ms_per_singer_second_after_run": round(decode_ms_per_second(packets), 3),
    }
    # The yardstick (issue 23 item 5): the gateway against the raw decode of the
    # same traffic, both measured over the same seconds (the VM's speed drifts by a third
    # within minutes, so a floor measured before or after the window is not comparable).
    gateway_ms, decode_ms = (
        results["cpu_ms_per_singer_second"],
        results["opus_decode_ms_per_singer_second"],
    )
    results["gateway_over_decode"] = (
        round(float(gateway_ms) / float(decode_ms), 3)  # type: ignore[arg-type]
        if gateway_ms and decode_ms
        else None
    )
    results["overloaded"] = abs(accepted_s - singer_seconds) > MAX_BACKLOG_GROWTH * max(
        singer_seconds, 1.0
    )
    return results


_BARE_SERVER = """
import sys
from aiohttp import web

async def ws(request):
    socket = web.WebSocketResponse(compress=False, max_msg_size=1 << 17, heartbeat=20)
    await socket.prepare(request)
    async for _ in socket:
        pass
    return socket

app = web.Application()
app.router.add_get("/ws", ws)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _floor(port: int, pid: int, singers: int, per_message: int, seconds: float) -> float:
    """CPU (ms per singer-second) of a bare aiohttp server that only receives."""
    packets = bench_packets()[:per_message]
    period_s = per_message * OPUS_FRAME_SAMPLES / SAMPLE_RATE
    data = p.encode_upstream_opus(1, 0, now_samples(), packets)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = [await http.ws_connect(f"http://127.0.0.1:{port}/ws") for _ in range(singers)]

        async def send(index: int, socket: aiohttp.ClientWebSocketResponse) -> None:
            await asyncio.sleep(index % 100 * period_s / 100)
            while True:
                await socket.send_bytes(data)
                await asyncio.sleep(period_s)

        tasks = [asyncio.create_task(send(i, s)) for i, s in enumerate(sockets)]
        await asyncio.sleep(2)
        c0 = cpu_s(pid)
        await asyncio.sleep(seconds)
        c1 = cpu_s(pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for socket in sockets:
            await socket.close()
    return (c1 - c0) * 1000 / (singers * seconds)


def receive_floor(singers: int, per_message: int, seconds: float) -> float:
    """The aiohttp receive floor: the same message pattern into a server doing nothing."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _BARE_SERVER, str(port)])
    try:
        wait_for(lambda: _listening(port), 20, "the bare aiohttp server")
        return asyncio.run(_floor(port, server.pid, singers, per_message, seconds))
    finally:
        server.terminate()
        server.wait(10)


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


async def _wait_state(http: aiohttp.ClientSession, base: str, room: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        async with http.get(f"{base}/api/rooms/{room}") as response:
            state: dict[str, Any] = await response.json()
        if state["song"]["running"]:
            return state
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the song did not start in room {room}")


async def _until(predicate: Any, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def run(
    singers: int = 100,
    seconds: float = 10.0,
    warmup_s: float = 3.0,
    per_message: int = PACKETS_PER_MESSAGE,
    gateway_args: Sequence[str] = ("gateway",),
    services_from: Path | None = None,
    room_size: int = 0,
) -> dict[str, object]:
    """Start Redis, a mixer and a gateway; drive ``singers``; return the measurements.

    ``services_from``: a checkout whose code the mixer and gateway run (an older
    commit's worktree, to compare it with this one under the same bench).
    """
    logs = results_dir() / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="run-", dir=logs))
    redis_server = RedisServer()
    redis_server.start()
    port = free_port()
    # Rooms of --room-size are all created by this one address: no creation limit.
    env = {"REDIS_URL": redis_server.url, "BB_LOG_LEVEL": "WARNING", "BB_ROOMS_PER_MIN": "100000"}
    if services_from is not None:
        # -m would put the working directory (this checkout) first on sys.path.
        env |= {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(services_from.resolve())}
    procs = [Process(["mixer"], {**env, "BB_MIXER_ID": "bench-mixer"}, log_dir, "mixer")]
    gateway = Process(
        list(gateway_args),
        {**env, "BB_GATEWAY_ID": "bench-gateway", "BB_PORT": str(port)},
        log_dir,
        "gateway",
    )
    procs.append(gateway)
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                return bool(response.status == 200)

        wait_for(healthy, 20, "the gateway")
        floor = DecodeFloor(singers, per_message)
        try:
            results = asyncio.run(
                _drive(
                    base,
                    gateway.proc.pid,
                    singers,
                    warmup_s,
                    seconds,
                    floor,
                    per_message,
                    room_size,
                )
            )
        finally:
            floor.close()
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                proc.stop()
        redis_server.stop()
    results["logs"] = str(log_dir)
    return results


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Measure, print a table, write bench-results/gateway.json and return the results.

    The headline is the median of ``--repeat`` runs with the browser
    client's messages (10 packets, 200 ms); one more run measures 5-packet
    (100 ms, the intended range's low end) messages, and the receive floor
    of a bare aiohttp server is measured for both.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--singers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--room-size",
        type=int,
        default=0,
        help="singers per room (default 0: all in one room), each room with its own song",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs at the browser's message size (median)"
    )
    parser.add_argument(
        "--services-from",
        type=Path,
        default=None,
        help="run the mixer and gateway from this checkout (e.g. a worktree of an older commit)",
    )
    args = parser.parse_args(list(argv) if argv is not None else [])
    # Each run's mixer and gateway logs are kept until the next invocation.
    shutil.rmtree(results_dir() / LOGS, ignore_errors=True)
    # This VM's CPU speed drifts by up to a third over minutes: the headline is
    # the median of several runs, each beside the libopus decode floor measured
    # over the same seconds (bench/decode_floor.py).
    # A run in which the gateway fell behind (``overloaded``) is shown but replaced,
    # up to as many extra runs as asked for.
    every: list[dict[str, object]] = []
    while len(every) < 2 * max(1, args.repeat):
        every.append(
            run(
                args.singers,
                args.seconds,
                services_from=args.services_from,
                room_size=args.room_size,
            )
        )
        if sum(not r["overloaded"] for r in every) >= max(1, args.repeat):
            break
    runs = [r for r in every if not r["overloaded"]] or every
    runs.sort(key=lambda r: float(r["cpu_ms_per_singer_second"] or 0))  # type: ignore[arg-type]
    results = dict(runs[len(runs) // 2])
    short = run(
        args.singers,
        args.seconds,
        per_message=SHORT_MESSAGE,
        services_from=args.services_from,
        room_size=args.room_size,
    )
    results.update(
        cpu_ms_per_singer_second_runs=[r["cpu_ms_per_singer_second"] for r in runs],
        opus_decode_ms_per_singer_second_runs=[r["opus_decode_ms_per_singer_second"] for r in runs],
        opus_decode_ms_per_singer_second_after_run_runs=[
            r["opus_decode_ms_per_singer_second_after_run"] for r in runs
        ],
        gateway_over_decode_runs=[r["gateway_over_decode"] for r in runs],
        gateway_over_decode_overloaded_runs=[
            r["gateway_over_decode"] for r in every if r["overloaded"]
        ],
        gateway_over_decode_median=statistics.median(
            float(r["gateway_over_decode"] or 0)  # type: ignore[arg-type]
            for r in runs
        ),
        cpu_ms_per_singer_second_100ms_messages=short["cpu_ms_per_singer_second"],
        aiohttp_receive_floor_ms_per_singer_second=round(
            receive_floor(args.singers, PACKETS_PER_MESSAGE, args.seconds), 3
        ),
        aiohttp_receive_floor_ms_per_singer_second_100ms_messages=round(
            receive_floor(args.singers, SHORT_MESSAGE, args.seconds), 3
        ),
        target_cpu_ms_per_singer_second=TARGET_MS,
        original_cpu_ms_per_singer_second=ORIGINAL_MS,
        python=platform.python_version(),
        machine=platform.machine(),
        cpus=os.cpu_count(),
    )
    write_results("gateway", results)
    print_table(
        f"Gateway: {results['singers']} singers in {results['rooms']} room(s) "
        f"over real WebSockets, {results['window_s']} s measured",
        [
            (
                f"cpu_ms_per_singer_second ({PACKETS_PER_MESSAGE * 20} ms msgs, median)",
                str(results["cpu_ms_per_singer_second"]),
                f"<= {TARGET_MS} (original ~{ORIGINAL_MS})",
            ),
            (
                "  each run",
                " / ".join(str(x) for x in results["cpu_ms_per_singer_second_runs"]),  # type: ignore[attr-defined]
                "",
            ),
            (
                f"  same, {SHORT_MESSAGE * 20} ms messages",
                str(results["cpu_ms_per_singer_second_100ms_messages"]),
                "protocol's low end",
            ),
            (
                "opus_decode_ms_per_singer_second (each run)",
                " / ".join(str(x) for x in results["opus_decode_ms_per_singer_second_runs"]),  # type: ignore[attr-defined]
                "raw libopus, same traffic, same seconds",
            ),
            (
                "  one short loop after each run",
                " / ".join(
                    str(x)
                    for x in results["opus_decode_ms_per_singer_second_after_run_runs"]  # type: ignore[attr-defined]
                ),
                "the old way: drifts",
            ),
            (
                "gateway / raw decode (each run)",
                " / ".join(str(x) for x in results["gateway_over_decode_runs"]),  # type: ignore[attr-defined]
                f"<= {TARGET_OVER_DECODE}",
            ),
            (
                "  median",
                str(results["gateway_over_decode_median"]),
                f"<= {TARGET_OVER_DECODE}",
            ),
            (
                "  runs left out (gateway fell behind)",
                " / ".join(str(x) for x in results["gateway_over_decode_overloaded_runs"])  # type: ignore[attr-defined]
                or "none",
                "machine overloaded",
            ),
            (
                f"aiohttp receive floor ({PACKETS_PER_MESSAGE * 20} / {SHORT_MESSAGE * 20} ms)",
                f"{results['aiohttp_receive_floor_ms_per_singer_second']} / "
                f"{results['aiohttp_receive_floor_ms_per_singer_second_100ms_messages']}",
                "bare server, same traffic",
            ),
            ("gateway_cpu_percent", str(results["gateway_cpu_percent"]), "of one core"),
            (
                "ping_rtt_ms_p50 / p99",
                f"{results['ping_rtt_ms_p50']} / {results['ping_rtt_ms_p99']}",
                "under load",
            ),
            ("frames_dropped", str(results["frames_dropped"]), "0"),
            ("decode_errors, drops", f"{results['decode_errors']}, {results['drops']}", "0, 0"),
        ],
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
