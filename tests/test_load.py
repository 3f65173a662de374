"""The load generator: its accounting alone, and against a real stack with injected faults.

The pure parts (frame ledger, clock estimator, plan, metric parsing) are
checked against hand-made arrivals and, for the ledger, against a naive
per-frame model.  The integration tests run a real redis-server, mixer and
gateway, and put a fault-injecting WebSocket relay between the generator and
the gateway: frames the relay drops must be counted missing, frames it
delays past their play time late, an upstream message it moves into the
future rejected, and upstream it holds back late at the mixer.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from hypothesis import given, settings
from hypothesis import strategies as st

from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE
from common.protocol import DOWNSTREAM_HEADER, KIND_DOWNSTREAM, KIND_UPSTREAM, UPSTREAM_HEADER
from loadgen.cli import prepare, results_json
from loadgen.client import member_delay
from loadgen.clock import ClockEstimator
from loadgen.run import LEADER_HEAD_START_S, LoadConfig, LoadRun, build_plan
from loadgen.server import Snapshot, parse_prometheus, upstream_delta
from loadgen.stats import FrameLedger, Histogram, Windows, WindowStats
from tests.support import REPO, Stack, free_port

pytestmark = pytest.mark.stack(env={"BB_LOG_LEVEL": "WARNING"})

F = OPUS_FRAME_SAMPLES
D = 3 * SAMPLE_RATE
K0 = 10**6
"""Frame index where the synthetic arrivals start (positions are absolute)."""


def play(k: int, delay: int = D) -> int:
    """Play time of frame ``k`` on tap ``delay``."""
    return k * F + delay


def ledger(*bounds: tuple[int, int], horizon_frames: int = 100) -> FrameLedger:
    windows = Windows(list(bounds))
    return FrameLedger(windows, [WindowStats() for _ in bounds], horizon=horizon_frames * F)


def counts(book: FrameLedger, index: int = 0) -> dict[str, int]:
    return book.stats[index].frames.to_json()


# --- the frame ledger -------------------------------------------------------------


def test_frames_arriving_before_their_play_time_are_on_time() -> None:
    book = ledger((play(K0), play(K0 + 50)))
    for k in range(K0 - 10, K0 + 60, 5):
        book.receive(D, k * F, 5, now=play(k) - SAMPLE_RATE)
    book.close()
    assert counts(book)["on_time"] == 50
    assert sum(counts(book).values()) == 50
    assert book.stats[0].margin_ms.min == 1000.0


def test_a_message_is_late_from_the_first_frame_whose_play_time_has_passed() -> None:
    book = ledger((play(K0), play(K0 + 10)))
    book.receive(D, K0 * F, 5, now=play(K0) - 1)
    # Arrives just after frame K0+7 started playing: frames K0+5..K0+7 late, K0+8, K0+9 on time.
    book.receive(D, (K0 + 5) * F, 5, now=play(K0 + 7) + 1)
    book.close()
    assert counts(book)["on_time"] == 5 + 2
    assert counts(book)["late"] == 3
    assert counts(book)["missing"] == 0


def test_arriving_exactly_at_play_time_is_on_time() -> None:
    book = ledger((play(K0), play(K0 + 1)))
    book.receive(D, K0 * F, 1, now=play(K0))
    book.close()
    assert (counts(book)["on_time"], counts(book)["late"]) == (1, 0)


def test_gaps_are_missing_and_so_is_a_tail_that_never_came() -> None:
    book = ledger((play(K0), play(K0 + 30)))
    book.receive(D, (K0 - 5) * F, 10, now=play(K0 - 5) - SAMPLE_RATE)  # K0-5 .. K0+4
    book.receive(D, (K0 + 10) * F, 10, now=play(K0 + 10) - SAMPLE_RATE)  # K0+10 .. K0+19
    book.close()
    assert counts(book)["on_time"] == 15
    assert counts(book)["missing"] == 5 + 10


def test_gaps_at_the_end_are_counted_only_after_the_horizon() -> None:
    book = ledger((play(K0), play(K0 + 100)), horizon_frames=50)
    book.receive(D, K0 * F, 10, now=play(K0) - SAMPLE_RATE)
    book.settle(play(K0 + 40))  # frames K0+10.. are not past the horizon yet
    assert counts(book)["missing"] == 0
    book.settle(play(K0 + 70))  # frames before K0+20 are now 50 frames past their play time
    assert counts(book)["missing"] == 10
    book.close()
    assert counts(book)["missing"] == 90


def test_duplicates_are_counted_once_and_reported() -> None:
    book = ledger((play(K0), play(K0 + 10)))
    for _ in range(2):
        book.receive(D, K0 * F, 10, now=play(K0) - SAMPLE_RATE)
    book.receive(D, (K0 + 5) * F, 10, now=play(K0) - SAMPLE_RATE)  # half duplicate, half outside
    book.close()
    assert counts(book)["on_time"] == 10
    assert counts(book)["duplicate"] == 10 + 5
    assert counts(book)["missing"] == 0


def test_a_delayed_message_overtaken_by_later_ones_is_late_not_missing() -> None:
    book = ledger((play(K0), play(K0 + 15)))
    book.receive(D, K0 * F, 5, now=play(K0) - SAMPLE_RATE)
    book.receive(D, (K0 + 10) * F, 5, now=play(K0 + 10) - SAMPLE_RATE)
    book.receive(D, (K0 + 5) * F, 5, now=play(K0 + 9) + 1)  # held back past its play time
    book.close()
    assert (counts(book)["on_time"], counts(book)["late"], counts(book)["missing"]) == (10, 5, 0)
    assert book.stats[0].margin_ms.min == pytest.approx(-4 * F * 1000 / SAMPLE_RATE, abs=0.1)


def test_frames_later_than_the_horizon_stay_missing_and_count_as_stale() -> None:
    book = ledger((play(K0), play(K0 + 20)), horizon_frames=10)
    book.receive(D, K0 * F, 5, now=play(K0) - SAMPLE_RATE)
    book.receive(D, (K0 + 10) * F, 5, now=play(K0 + 10) - SAMPLE_RATE)
    book.settle(play(K0 + 30))
    book.receive(D, (K0 + 5) * F, 5, now=play(K0 + 30))
    book.close()
    assert counts(book)["missing"] == 5 + 5
    assert counts(book)["stale"] == 5
    assert counts(book)["late"] == 0


def test_frames_are_accounted_in_the_window_of_their_play_time() -> None:
    book = ledger((play(K0), play(K0 + 10) + 17), (play(K0 + 20), play(K0 + 30)))
    book.receive(D, (K0 - 2) * F, 32, now=play(K0) - SAMPLE_RATE)
    book.close()
    # Frame K0+10 plays 17 samples before the first window ends: it belongs to it.
    assert counts(book, 0)["on_time"] == 11
    assert counts(book, 1)["on_time"] == 10


def test_a_new_delay_starts_a_new_account_and_old_frames_are_other_tap() -> None:
    new = 2 * D
    book = ledger((play(K0), play(K0 + 100)))
    book.receive(D, K0 * F, 20, now=play(K0) - SAMPLE_RATE)
    # The singer moves: the old tap's tail never comes (not missing), the new one starts.
    first_new = K0 + 40 - D // F  # plays at the old tap's frame K0 + 40
    book.receive(new, first_new * F, 5, now=play(first_new, new) - SAMPLE_RATE)
    book.receive(D, (K0 + 20) * F, 5, now=play(K0 + 20) - SAMPLE_RATE)  # in flight
    k = first_new + 5
    while play(k, new) < play(K0 + 100):
        book.receive(new, k * F, 5, now=play(k, new) - SAMPLE_RATE)
        k += 5
    book.close()
    new_frames = (play(K0 + 100) - play(first_new, new) + F - 1) // F
    assert counts(book)["other_tap"] == 5
    assert counts(book)["missing"] == 0
    assert new_frames == 60
    assert counts(book)["on_time"] == 20 + new_frames


def test_misaligned_and_absurd_headers_are_bad() -> None:
    book = ledger((play(K0), play(K0 + 10)))
    book.receive(D, K0 * F, 10, now=play(K0) - SAMPLE_RATE)
    book.receive(D, K0 * F + 7, 5, now=play(K0) - SAMPLE_RATE)
    book.receive(D, (K0 + 10**7) * F, 5, now=play(K0) - SAMPLE_RATE)
    book.close()
    assert counts(book)["bad"] == 5
    assert counts(book)["on_time"] == 10


@dataclass
class NaiveLedger:
    """The ledger's rules, frame by frame, with no cleverness."""

    windows: Windows
    horizon: int
    first: int | None = None
    settled_to: int | None = None
    seen: set[int] = field(default_factory=set)
    result: list[dict[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.result = [dict.fromkeys(("on_time", "late", "missing", "duplicate", "stale"), 0)]
        self.result = [dict(self.result[0]) for _ in range(len(self.windows))]

    def _add(self, k: int, key: str) -> None:
        w = self.windows.at(play(k))
        if w is not None:
            self.result[w][key] += 1

    def settle(self, now: int) -> None:
        if self.first is None:
            return
        end = math.ceil((now - self.horizon - D) / F)
        self._settle_to(end)

    def _settle_to(self, end: int) -> None:
        assert self.first is not None
        start = self.settled_to if self.settled_to is not None else self.first
        for k in range(start, end):
            if k not in self.seen:
                self._add(k, "missing")
        self.settled_to = max(start, end)

    def receive(self, k0: int, count: int, now: int) -> None:
        if self.first is None:
            self.first = k0
        base = self.settled_to if self.settled_to is not None else self.first
        for k in range(k0, k0 + count):
            if k < base:
                self._add(k, "stale")
            elif k in self.seen:
                self._add(k, "duplicate")
            else:
                self.seen.add(k)
                self._add(k, "late" if play(k) < now else "on_time")

    def close(self) -> None:
        if self.first is not None:
            self._settle_to(math.ceil((self.windows.end - D) / F))


arrivals = st.lists(
    st.tuples(
        st.integers(0, 80),  # first frame, relative to K0
        st.integers(1, 8),  # frames in the message
        st.integers(-60, 30),  # arrival, in frames relative to the first frame's play time
        st.integers(0, F - 1),  # jitter (samples)
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    messages=arrivals,
    horizon=st.integers(1, 40),
    cut=st.integers(1, 60),
    offset=st.integers(-500, 500),
)
def test_the_ledger_agrees_with_a_naive_per_frame_model(
    messages: list[tuple[int, int, int, int]], horizon: int, cut: int, offset: int
) -> None:
    windows = Windows([(play(K0 + 5) + offset, play(K0 + 5 + cut)), (play(K0 + 70), play(K0 + 90))])
    book = FrameLedger(windows, [WindowStats(), WindowStats()], horizon=horizon * F)
    naive = NaiveLedger(windows, horizon * F)
    for rel, count, arrival, jitter in messages:
        k0 = K0 + rel
        now = play(k0) + arrival * F + jitter
        for model in (book, naive):
            model.settle(now)
        book.receive(D, k0 * F, count, now)
        naive.receive(k0, count, now)
    book.close()
    naive.close()
    for w in range(2):
        got = book.stats[w].frames.to_json()
        assert {key: got[key] for key in naive.result[w]} == naive.result[w]


def test_window_stats_survive_json_and_merge() -> None:
    a, b = WindowStats(), WindowStats()
    a.frames.on_time, a.frames.late, a.up_messages = 90, 10, 5
    a.margin_ms.add(800)
    a.errors["audio_old"] = 1
    b.frames.missing, b.up_messages = 5, 7
    b.margin_ms.add(-30)
    b.errors["audio_old"] = 2
    merged = WindowStats.from_json(json.loads(json.dumps(a.to_json())))
    merged.merge(WindowStats.from_json(b.to_json()))
    assert merged.frames.expected == 105
    assert merged.frames.bad_fraction == pytest.approx(15 / 105)
    assert (merged.up_messages, merged.errors) == (12, {"audio_old": 3})
    assert (merged.margin_ms.min, merged.margin_ms.max) == (-30, 800)


def test_histogram_quantiles_are_upper_bounds_clamped_to_the_max() -> None:
    hist = Histogram([1, 10, 100])
    for value in [0.5] * 90 + [50] * 9 + [5000]:
        hist.add(value)
    assert hist.quantile(0.5) == 1
    assert hist.quantile(0.95) == 100
    assert hist.quantile(1.0) == 5000
    assert Histogram([1]).quantile(0.5) is None


# --- the clock ----------------------------------------------------------------------


def test_the_clock_estimate_uses_the_exchanges_with_the_lowest_round_trips() -> None:
    true_offset_ms = 12_345.678
    estimator = ClockEstimator()
    assert not estimator.ready
    for i in range(20):
        t_send = 1000.0 + 100 * i
        if i % 4 == 0:  # quick and symmetric
            up = down = 0.5
        else:  # slow and lopsided: the reply was queued behind audio
            up, down = 1.0, 40.0 + i
        server_ms = t_send + up + true_offset_ms
        estimator.add(t_send, t_send + up + down, round(server_ms * SAMPLE_RATE / 1000))
    assert estimator.offset_ms == pytest.approx(true_offset_ms, abs=0.05)
    assert estimator.rtt_ms == pytest.approx(1.0)
    room = estimator.room_clock(5000.0)
    assert room == pytest.approx((5000.0 + true_offset_ms) * 48, abs=2)
    assert estimator.local_ms(room) == pytest.approx(5000.0, abs=0.05)


def test_the_clock_refuses_a_pong_before_its_ping() -> None:
    with pytest.raises(ValueError, match="before its ping"):
        ClockEstimator().add(10.0, 9.0, 0)


# --- messages and metrics -------------------------------------------------------------


def test_member_delay_finds_the_singer_without_parsing_everyone() -> None:
    members = [
        {"singer_id": f"s-{i}", "name": 'odd "name" {x}', "role": "singer", "delay": 1000 * i}
        for i in range(50)
    ]
    text = json.dumps({"type": "state", "version": 3, "state": {"members": members}})
    compact = json.dumps(json.loads(text), separators=(",", ":"))
    assert member_delay(compact, "s-17") == 17_000
    assert member_delay(text, "s-17") == 17_000  # spaced JSON: the fallback path
    assert member_delay(compact, "s-99") is None
    assert member_delay("not json", "s-1") is None


def test_prometheus_text_and_upstream_deltas() -> None:
    text = (
        "# HELP bb_gateway_chunks_in_total x\n# TYPE bb_gateway_chunks_in_total counter\n"
        "bb_gateway_chunks_in_total 120\n"
        'bb_gateway_drops_total{reason="audio_future"} 2\n'
        'bb_gateway_drops_total{reason="bad_message"} 9\n'
    )
    assert parse_prometheus(text)['bb_gateway_drops_total{reason="audio_future"}'] == 2
    before = Snapshot(0.0, {"g": parse_prometheus(text)}, {"m": {"late": 1, "chunks_rejected": 0}})
    after = Snapshot(
        10.0,
        {"g": parse_prometheus(text.replace(" 120", " 220").replace("} 2", "} 5"))},
        {"m": {"late": 4, "chunks_rejected": 2, "tick_overruns": 1}},
    )
    delta = upstream_delta(before, after)
    assert delta["accepted"] == 100
    assert delta["gateway_drops"] == {"audio_future": 3}
    assert (delta["late"], delta["rejected"], delta["tick_overruns"]) == (3, 3 + 2, 1)


def test_the_plan_puts_leaders_first_and_windows_after_the_joins() -> None:
    config = LoadConfig(
        urls=("http://a", "http://b"),
        steps=(4, 10),
        room_size=5,
        room_prefix="t",
        measure_s=10,
        warmup_s=15,
        settle_s=5,
        connect_rate=10,
        affinity="room",
    )
    plan = build_plan(config, 1000.0)
    assert [s.index for s in plan.singers] == [0, 1, 2, 3, 5, 4, 6, 7, 8, 9]
    leaders = [s for s in plan.singers if s.leader]
    assert [(s.index, s.room, s.url) for s in leaders] == [
        (0, "t-0", "http://a"),
        (5, "t-1", "http://b"),
    ]
    by_index = {s.index: s for s in plan.singers}
    assert by_index[1].join_at == pytest.approx(1000.0 + 0.1 + LEADER_HEAD_START_S)
    assert by_index[4].join_at > by_index[5].join_at  # the new room's leader goes first
    (lo0, hi0), (lo1, hi1) = plan.windows
    assert lo0 / SAMPLE_RATE == pytest.approx(by_index[3].join_at + 0.1 + 15)
    assert hi0 - lo0 == 10 * SAMPLE_RATE
    assert lo1 / SAMPLE_RATE == pytest.approx(max(s.join_at for s in plan.singers) + 0.1 + 5)
    assert plan.singers_at(0) == 4 and plan.singers_at(1) == 10
    assert plan.stop_at > hi1 / SAMPLE_RATE


def test_an_unreachable_gateway_is_one_line_and_exit_code_1() -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "brigade", "load", "--url", f"http://127.0.0.1:{port}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert f"gateway http://127.0.0.1:{port} is unreachable" in done.stderr


# --- against a real stack, through a fault-injecting relay ----------------------------
# (the ``stack`` fixture of tests/conftest.py: a mixer and a gateway, logging warnings)


Fault = Callable[[int, int, int], Awaitable[bool]]


@dataclass
class Relay:
    """A WebSocket relay between the generator and the gateway that injects faults.

    Per singer (recognised by the name in its ``hello``) it may drop or delay
    downstream audio messages whose frames all play inside ``fault_window``,
    move one upstream message into the future, or hold upstream audio back for
    a while and then release it in order.  It counts what it did, by frame.
    """

    target: str
    fault_window: tuple[int, int] = (0, 0)
    drop_every: dict[str, int] = field(default_factory=dict)
    delay_every: dict[str, tuple[int, float]] = field(default_factory=dict)
    future_once: set[str] = field(default_factory=set)
    hold_upstream: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Name -> (start, duration) in wall-clock seconds."""
    dropped: dict[str, int] = field(default_factory=dict)
    delayed: dict[str, int] = field(default_factory=dict)
    moved: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self.websocket)
        app.router.add_route("*", "/{tail:.*}", self.http)
        return app

    async def http(self, request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method,
                self.target + request.path_qs,
                data=await request.read(),
                # The gateway creates rooms only from JSON bodies.
                headers={"Content-Type": request.headers.get("Content-Type", "")},
            ) as response,
        ):
            return web.Response(
                status=response.status,
                body=await response.read(),
                content_type=response.content_type,
            )

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse(max_msg_size=0)
        await client.prepare(request)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(self.target.replace("http", "ws") + "/ws", max_msg_size=0) as server,
        ):
            name: list[str] = [""]
            up = asyncio.create_task(self._upstream(client, server, name))
            try:
                await self._downstream(server, client, name)
            finally:
                up.cancel()
                await asyncio.gather(up, return_exceptions=True)
        return client

    async def _upstream(
        self,
        client: web.WebSocketResponse,
        server: aiohttp.ClientWebSocketResponse,
        name: list[str],
    ) -> None:
        held: list[bytes] = []
        async for msg in client:
            if msg.type is WSMsgType.TEXT:
                if not name[0]:
                    name[0] = str(json.loads(msg.data).get("name", ""))
                await server.send_str(msg.data)
                continue
            if msg.type is not WSMsgType.BINARY:
                break
            data = bytes(msg.data)
            who = name[0]
            if who in self.future_once and data[0] == KIND_UPSTREAM and self._in_fault_window():
                self.future_once.discard(who)
                fields = list(UPSTREAM_HEADER.unpack_from(data))
                fields[5] += 30 * SAMPLE_RATE
                data = UPSTREAM_HEADER.pack(*fields) + data[UPSTREAM_HEADER.size :]
                self.moved[who] = self.moved.get(who, 0) + 1
            hold = self.hold_upstream.get(who)
            if hold is not None and hold[0] <= _wall() < hold[0] + hold[1]:
                held.append(data)
                self.held[who] = self.held.get(who, 0) + 1
                continue
            for old in held:
                await server.send_bytes(old)
            held.clear()
            await server.send_bytes(data)

    async def _downstream(
        self,
        server: aiohttp.ClientWebSocketResponse,
        client: web.WebSocketResponse,
        name: list[str],
    ) -> None:
        seen: dict[str, int] = {}
        async for msg in server:
            if msg.type is WSMsgType.TEXT:
                await client.send_str(msg.data)
                continue
            if msg.type is not WSMsgType.BINARY:
                break
            data = bytes(msg.data)
            who = name[0]
            if data[0] == KIND_DOWNSTREAM:
                _, _, count, delay, start = DOWNSTREAM_HEADER.unpack_from(data)
                lo, hi = self.fault_window
                if lo <= start + delay and start + count * F + delay <= hi:
                    seen[who] = seen.get(who, 0) + 1
                    if who in self.drop_every and seen[who] % self.drop_every[who] == 0:
                        self.dropped[who] = self.dropped.get(who, 0) + count
                        continue
                    every, delay_s = self.delay_every.get(who, (0, 0.0))
                    if every and seen[who] % every == 0:
                        self.delayed[who] = self.delayed.get(who, 0) + count
                        self._later(client, data, delay_s)
                        continue
            await client.send_bytes(data)

    def _later(self, client: web.WebSocketResponse, data: bytes, delay_s: float) -> None:
        async def send() -> None:
            await asyncio.sleep(delay_s)  # the scenario: the fault injected is this delay
            if not client.closed:
                await client.send_bytes(data)

        task = asyncio.create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _in_fault_window(self) -> bool:
        lo, hi = self.fault_window
        return lo <= _wall() * SAMPLE_RATE < hi


def _wall() -> float:
    return time.time()


@pytest.fixture
async def relay(stack: Stack) -> AsyncIterator[tuple[Relay, str]]:
    proxy = Relay(stack.base)
    runner = web.AppRunner(proxy.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield proxy, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def by_name(run: LoadRun) -> dict[str, dict[str, Any]]:
    return {f"load {s['index']}": s for s in run.singers}


async def test_injected_faults_are_counted_as_missing_late_rejected_and_late_upstream(
    stack: Stack, relay: tuple[Relay, str]
) -> None:
    proxy, url = relay
    config = LoadConfig(
        urls=(url,),
        steps=(6,),
        room_size=6,
        room_prefix="faults",
        measure_s=8.0,
        warmup_s=3.0,
        connect_rate=20.0,
        redis_url=stack.redis_url,
        verify=True,
    )
    plan = await prepare(config)
    ((lo, hi),) = plan.windows
    # Faults only well inside the window, so that every one of them is accounted in it.
    proxy.fault_window = (lo + SAMPLE_RATE, hi - 2 * SAMPLE_RATE)
    proxy.drop_every = {"load 1": 3}
    proxy.delay_every = {"load 2": (3, 1.5)}  # past the play time (< 1 s ahead), within 2 s
    proxy.future_once = {"load 3"}
    proxy.hold_upstream = {"load 5": (lo / SAMPLE_RATE + 2.0, 3.0)}
    run = LoadRun(config, plan)
    await run.run()
    results = results_json(config, run)
    singers = by_name(run)
    (window,) = run.windows

    assert results["failed_singers"] == 0, results["failures"]
    frames = {name: s["windows"][0]["frames"] for name, s in singers.items()}
    assert proxy.dropped["load 1"] > 0 and proxy.delayed["load 2"] > 0
    assert frames["load 1"]["missing"] == proxy.dropped["load 1"]
    assert frames["load 1"]["late"] == 0
    assert frames["load 2"]["late"] == proxy.delayed["load 2"]
    assert frames["load 2"]["missing"] == 0
    for name in ("load 0", "load 3", "load 4", "load 5"):
        assert (frames[name]["late"], frames[name]["missing"]) == (0, 0), name
        assert frames[name]["on_time"] == 8 * SAMPLE_RATE // F or frames[name]["on_time"] == (
            8 * SAMPLE_RATE // F + 1
        ), name
    assert window.frames.missing == proxy.dropped["load 1"]
    assert window.frames.late == proxy.delayed["load 2"]

    # Upstream, as the servers saw it.
    server = window.server
    assert server is not None
    assert proxy.moved == {"load 3": 1}
    assert server["gateway_drops"] == {"audio_future": 1}
    assert singers["load 3"]["errors"] == {"audio_future": 1}
    per_s = SAMPLE_RATE // F / plan.frames_per_message  # upstream messages a second
    assert proxy.held["load 5"] >= 3.0 * per_s - 5
    assert singers["load 5"]["server"]["late"] > 0
    assert server["late"] == singers["load 5"]["server"]["late"]
    # Tick overruns depend on the machine's load: bench/clocksync.py reports them.
    assert server["tick_overruns"] is not None
    sent = window.stats.up_messages
    assert abs(sent - 6 * 8 * per_s) <= 6
    assert abs(server["accepted"] + server["rejected"] - sent) <= 12

    # The clock: everyone on one machine, so the true offset is known; every singer
    # synced (how precisely is a benchmark figure: bench/clocksync.py).
    assert results["clock"]["singers"] == 6
    verify = singers["load 5"]["verify"]
    assert verify["errors"] == 0 and verify["decoded"] > 0 and verify["audible"] > 0


async def test_a_clean_run_on_two_worker_processes_with_a_skewed_clock_in_one_bucket(
    stack: Stack,
) -> None:
    config = LoadConfig(
        urls=(stack.base,),
        steps=(4,),
        room_size=4,
        room_prefix="clean",
        measure_s=4.0,
        warmup_s=2.0,
        connect_rate=20.0,
        procs=2,
        clock_skew_ms=-7_000.0,
        bucket=3,
        redis_url=stack.redis_url,
    )
    run = LoadRun(config, await prepare(config))
    await run.run()
    results = results_json(config, run)
    (window,) = run.windows
    assert len(run.pids) == 2
    assert [s["index"] for s in run.singers] == [0, 1, 2, 3]
    # The leader leads from bucket 0; everyone else asked for bucket 3 (delay 4 x 3 s).
    assert [s["delay"] for s in run.singers] == [3 * SAMPLE_RATE] + [12 * SAMPLE_RATE] * 3
    assert results["failed_singers"] == 0, results["failures"]
    assert window.frames.expected >= 4 * 4 * SAMPLE_RATE // F
    assert (window.frames.late, window.frames.missing) == (0, 0)
    assert window.server is not None and window.server["rejected"] == 0
    # The singers' clocks were 7 s off; clock sync must have undone it (the residual
    # error is a benchmark figure: bench/clocksync.py).
    assert results["clock"]["singers"] == 4
    assert results["clock"]["max_abs_error_ms"] < 3_500, "the 7 s skew was not undone"
