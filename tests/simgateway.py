"""A simulated gateway for mixer tests: speaks docs/redis.md through a sync client."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import redis
from msgspec import to_builtins

from common import keys, redisclient
from common.clock import now_samples
from common.commands import AnyCommand, Envelope, Join, encode_envelope
from common.constants import SAMPLE_RATE
from common.events import Reply, State, decode_event
from common.records import Role
from common.streams import parse_entries, parse_xread
from common.wire import TapWindow, decode_tap, encode_chunk
from tests.support import async_wait_until, wait_until

CHUNK = 4800


def tone(freq: float, start: int, n: int, amplitude: float = 0.3) -> npt.NDArray[np.float32]:
    """A sine at absolute positions [start, start+n): continuous across chunks."""
    t = (np.arange(start, start + n, dtype=np.float64) % (SAMPLE_RATE * 1000)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@dataclass
class SimGateway:
    client: redis.Redis
    gw: str = "gw-test"
    in_maxlen: int = 2000
    _req: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _events: dict[str, bytes] = field(default_factory=dict)

    def create_room(self, room: str, **meta: float | str) -> None:
        fields: dict[str, float | str] = {"created_at": time.time(), **meta}
        self.client.hset(keys.room_meta(room), mapping=fields)  # type: ignore[arg-type]
        self.client.sadd(keys.ROOMS, room)
        self.client.sadd(keys.ACTIVE_ROOMS, room)  # as a gateway's first command would

    def command(
        self, room: str, singer: str, cmd: AnyCommand, timeout_s: float = 8, conn: str = ""
    ) -> Reply:
        """Send a typed control command and wait for the mixer's reply event."""
        req = next(self._req)
        cursor = self._events.get(room, b"0-0")
        envelope = Envelope(singer=singer, cmd=cmd, gw=self.gw, req=req, conn=conn)
        # A cluster cannot join the room's slot and the global sets in one MULTI.
        with self.client.pipeline(transaction=not redisclient.is_cluster(self.client)) as pipe:
            pipe.sadd(keys.ACTIVE_ROOMS, room)
            pipe.zrem(keys.IDLE_ROOMS, room)
            pipe.xadd(keys.room_ctl(room), {"d": encode_envelope(envelope)})
            pipe.execute()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reply = self.client.xread({keys.room_events(room): cursor}, block=200)
            for _key, entries in parse_xread(reply):
                for entry_id, value in entries:
                    cursor = entry_id
                    event = decode_event(value)
                    if isinstance(event, Reply) and event.req == req and event.gw == self.gw:
                        self._events[room] = cursor
                        return event
        raise AssertionError(f"no reply to {cmd} in room {room} within {timeout_s} s")

    def join(self, room: str, singer: str, name: str, conn: str = "") -> Reply:
        """Join as a gateway does once it has checked the password against the room's hash."""
        stored: Any = self.client.hget(keys.room_meta(room), "password_hash")
        checked = bytes(stored).decode() if stored else ""
        join = Join(name=name, role=Role.SINGER, password_hash=checked)
        return self.command(room, singer, join, conn=conn)

    def owner(self, room: str) -> str | None:
        """The id of the mixer holding the room's lease."""
        raw: Any = self.client.get(keys.room_lease(room))
        return bytes(raw).decode() if raw else None

    def state(self, room: str) -> dict[str, Any]:
        """The latest published state event of a room."""
        entries = parse_entries(self.client.xrevrange(keys.room_events(room), count=200))
        for _id, value in entries:
            event = decode_event(value)
            if isinstance(event, State):
                return to_builtins(event.state)  # type: ignore[no-any-return]
        raise AssertionError(f"no state event in room {room}")

    def member_delay(self, room: str, singer: str) -> int:
        for m in self.state(room)["members"]:
            if m["singer_id"] == singer:
                return int(m["delay"])
        raise AssertionError(f"{singer} not in {room}")

    def push(self, room: str, singer: str, start: int, samples: npt.NDArray[np.float32]) -> None:
        self.client.xadd(
            keys.room_in(room),
            {"d": encode_chunk(room, singer, 1, 0, start, samples)},
            maxlen=self.in_maxlen,
            approximate=True,
        )

    def taps(
        self, room: str, delay: int, since: bytes = b"0-0", mix: str = "full"
    ) -> list[TapWindow]:
        entries = parse_entries(
            self.client.xrange(keys.room_tap(room, delay, mix), min=_after(since))
        )
        return [decode_tap(value or b"") for _id, value in entries]


def _after(entry_id: bytes) -> bytes:
    return b"(" + entry_id if entry_id != b"0-0" else b"-"


class Singer:
    """Sends a tone in 100 ms chunks at real-time pace, as a browser would."""

    def __init__(
        self, sim: SimGateway, room: str, singer: str, freq: float, delay: int, start: int
    ) -> None:
        self.sim, self.room, self.singer, self.freq = sim, room, singer, freq
        self.delay = delay
        self.next_pos = start

    def pump(self) -> int:
        """Send every chunk whose positions this singer has 'sung' by now."""
        sent = 0
        while self.next_pos + CHUNK + self.delay <= now_samples():
            self.sim.push(
                self.room, self.singer, self.next_pos, tone(self.freq, self.next_pos, CHUNK)
            )
            self.next_pos += CHUNK
            sent += 1
        return sent


@dataclass
class Voice:
    """A singer sending ``freq`` over song positions ``[lo, hi)`` at real-time pace: a
    chunk once the room clock has passed its end plus the singer's ``delay`` (their
    bucket), as a browser would."""

    sim: SimGateway
    room: str
    singer: str
    freq: float
    delay: int
    lo: int
    hi: int
    next_pos: int = field(init=False)

    def __post_init__(self) -> None:
        self.next_pos = self.lo

    def sung(self) -> bool:
        """Whether every position up to ``hi`` has been sent."""
        return self.next_pos == self.hi

    def pump(self) -> None:
        """Send every chunk this singer has sung by now."""
        while self.next_pos < self.hi and self.next_pos + CHUNK + self.delay <= now_samples():
            n = min(CHUNK, self.hi - self.next_pos)
            self.sim.push(self.room, self.singer, self.next_pos, tone(self.freq, self.next_pos, n))
            self.next_pos += n


class Sings(Protocol):
    """A simulated singer: :class:`Voice` or :class:`Singer`."""

    def pump(self) -> object:
        """Send what has been sung by now."""
        ...


PUMP_S = 0.02
"""How often the voices send what they have sung: the pace of the simulated singing."""


def sing_until(
    voices: Sequence[Sings], done: Callable[[], object], timeout_s: float, what: str = "it"
) -> None:
    """The voices sing (every :data:`PUMP_S`) until ``done()``; fails naming ``what``."""
    wait_until(_singing(voices, done), timeout_s, what, PUMP_S, retry_errors=False)


async def sing_until_async(
    voices: Sequence[Sings],
    done: Callable[[], object],
    timeout_s: float,
    *,
    tick: Callable[[], None],
) -> None:
    """:func:`sing_until` in an async test (the event loop runs between the sends),
    calling ``tick`` after each round of sends."""
    step = _singing(voices, done, tick)
    await async_wait_until(step, timeout_s, "the singing's goal", PUMP_S, retry_errors=False)


def _singing(
    voices: Sequence[Sings], done: Callable[[], object], tick: Callable[[], None] = lambda: None
) -> Callable[[], bool]:
    def step() -> bool:
        for voice in voices:
            voice.pump()
        tick()
        return bool(done())

    return step


def expected_mix(voices: list[Voice], start: int, n: int) -> npt.NDArray[np.float32]:
    """What the last bucket hears of ``voices`` for positions [start, start + n): each at
    the auto-gain ``sqrt(3 / (k + 2))`` of the k voices sounding there."""
    total = np.zeros(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    for v in voices:
        lo, hi = max(v.lo, start), min(v.hi, start + n)
        if lo < hi:
            total[lo - start : hi - start] += tone(v.freq, lo, hi - lo)
            count[lo - start : hi - start] += 1
    mixed: npt.NDArray[np.float32] = (total * np.sqrt(3.0 / (count + 2.0))).astype(np.float32)
    return mixed


def collect(windows: list[TapWindow]) -> dict[int, npt.NDArray[np.float32]]:
    """Tap windows split into 960-sample frames keyed by position."""
    frames: dict[int, npt.NDArray[np.float32]] = {}
    for w in windows:
        for i in range(0, len(w.samples), 960):
            frames[w.start + i] = w.samples[i : i + 960]
    return frames


def assemble(windows: list[TapWindow], start: int, n: int) -> npt.NDArray[np.float32] | None:
    """The tap's audio for positions [start, start+n), or None while not all emitted."""
    out = np.zeros(n, dtype=np.float32)
    covered = np.zeros(n, dtype=bool)
    for w in windows:
        lo, hi = max(start, w.start), min(start + n, w.start + len(w.samples))
        if lo < hi:
            out[lo - start : hi - start] = w.samples[lo - w.start : hi - w.start]
            covered[lo - start : hi - start] = True
    return out if covered.all() else None
