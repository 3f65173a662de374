"""One simulated singer: a real WebSocket speaking docs/protocol.md like the browser.

It joins (``hello`` -> ``welcome``; the room's leader also sends ``lead`` and
``start``), syncs its clock with pings (a burst of 8 at 150 ms, then every
2 s, as gateway/static/app.js does), sends pre-encoded 20 ms Opus packets in
messages of ``frames_per_message`` at real-time pace, positioned at
``room clock - delay - latency`` and scheduled on the absolute clock, and
accounts every downstream frame by position (:class:`FrameLedger`) without
decoding it.  Only the sampled singer (``verify``) decodes, to check that
the audio is real.

The per-message paths are kept minimal: downstream binary messages are
accounted from their 16-byte header alone, ``levels`` messages are counted
without parsing, and ``state`` messages are searched for the singer's own
member record rather than parsed whole (they hold every member).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import numpy as np
from aiohttp import WSMsgType

from common.codec import CodecError, OpusDecoder, OpusEncoder
from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE
from common.protocol import (
    CODEC_OPUS,
    DOWNSTREAM_HEADER,
    KIND_DOWNSTREAM,
    KIND_UPSTREAM,
    UPSTREAM_HEADER,
    ProtocolError,
    dumps,
    encode_upstream_opus,
    hello_message,
    parse_downstream,
)
from loadgen.clock import ClockEstimator
from loadgen.stats import FrameLedger, Windows, WindowStats

log = logging.getLogger(__name__)

PING_BURST: Final = 8
PING_BURST_MS: Final = 150.0
PING_MS: Final = 2000.0
WELCOME_TIMEOUT_S: Final = 20.0
REPLY_TIMEOUT_S: Final = 10.0
MAX_SEND_LAG_MS: Final = 2000.0
"""Further behind than this, the singer starts a new stream at the present (as a browser
whose capture stalled would) instead of bursting old audio."""
SETTLE_EVERY_MS: Final = 1000.0

_STATE_PREFIX: Final = '{"type":"state"'
_LEVELS_PREFIX: Final = '{"type":"levels"'
_DECODER: Final = json.JSONDecoder()


class LocalClock:
    """The singer's own clock in ms: monotonic, epoch-based like ``performance.timeOrigin
    + performance.now()``, optionally skewed to exercise the clock sync."""

    def __init__(self, skew_ms: float = 0.0) -> None:
        self._origin_ms = time.time() * 1000 - time.monotonic() * 1000 + skew_ms

    def now_ms(self) -> float:
        return time.monotonic() * 1000 + self._origin_ms

    def true_offset_ms(self) -> float:
        """The real offset of the room clock (this host's ``time.time()``) from ours."""
        return time.time_ns() / 1e6 - self.now_ms()

    def from_epoch(self, epoch_s: float) -> float:
        """Our local time (ms) at wall-clock instant ``epoch_s``."""
        return epoch_s * 1000 + (self.now_ms() - time.time() * 1000)


class UpstreamAudio:
    """Pre-encoded Opus payloads, built once per process and shared by every singer.

    A few tones (one per ``variant``), each one second of 20 ms packets, cut
    into message payloads of ``frames_per_message`` packets (the protocol's
    ``count x (u16 length, bytes)``).
    """

    def __init__(self, frames_per_message: int, variants: int = 4, seconds: int = 1) -> None:
        if frames_per_message < 1:
            raise ValueError(f"frames_per_message must be >= 1, got {frames_per_message}")
        self.frames_per_message = frames_per_message
        per_variant = seconds * SAMPLE_RATE // OPUS_FRAME_SAMPLES
        per_variant -= per_variant % frames_per_message
        if per_variant == 0:
            raise ValueError(f"{frames_per_message} frames per message do not fit in {seconds} s")
        self.payloads: list[list[bytes]] = []
        t = np.arange(per_variant * OPUS_FRAME_SAMPLES) / SAMPLE_RATE
        for v in range(variants):
            tone = (0.1 * np.sin(2 * np.pi * (220.0 * 2 ** (v / 4)) * t)).astype(np.float32)
            with OpusEncoder() as encoder:
                packets = encoder.encode_frames(tone)
            header = UPSTREAM_HEADER.size
            self.payloads.append(
                [
                    encode_upstream_opus(0, 0, 0, packets[i : i + frames_per_message])[header:]
                    for i in range(0, len(packets), frames_per_message)
                ]
            )

    def message(self, variant: int, stream: int, seq: int, start: int) -> bytes:
        payloads = self.payloads[variant % len(self.payloads)]
        header = UPSTREAM_HEADER.pack(
            KIND_UPSTREAM, CODEC_OPUS, self.frames_per_message, stream, seq & 0xFFFF_FFFF, start
        )
        return header + payloads[seq % len(payloads)]


@dataclass(frozen=True, slots=True)
class SingerSpec:
    """Who one simulated singer is and when it joins."""

    index: int
    room: str
    url: str
    """The gateway's base URL (``http://host:port``)."""
    leader: bool
    join_at: float
    """Wall-clock time (epoch seconds) to connect."""
    name: str = ""
    password: str | None = None
    bucket: int | None = None
    """Move to this bucket after joining (``join_bucket``); None: where the server puts us."""

    @property
    def display_name(self) -> str:
        return self.name or f"load {self.index}"


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What every singer of a run does (timing in the room clock's samples)."""

    windows: Windows
    stop_at: float
    """Wall-clock time (epoch s) at which singers stop, settle their accounts and leave."""
    latency_samples: int = SAMPLE_RATE // 10
    leave: bool = True
    horizon: int = 2 * SAMPLE_RATE


def member_delay(text: str, singer: str) -> int | None:
    """The delay of ``singer`` in a ``state`` message, without parsing every member.

    Members are serialised with ``singer_id`` first (mixer/store.py), so the
    record starts at ``{"singer_id":"ID"``: decode just that object, and check
    it.  Anything unexpected falls back to parsing the whole message.
    """
    marker = '{"singer_id":' + json.dumps(singer)
    at = text.find(marker)
    if at >= 0:
        try:
            record, _ = _DECODER.raw_decode(text, at)
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("singer_id") == singer:
            delay = record.get("delay")
            return delay if isinstance(delay, int) and not isinstance(delay, bool) else None
    try:
        message = json.loads(text)
        members = message["state"]["members"]
    except (ValueError, KeyError, TypeError):
        return None
    return _delay_in(members, singer)


def _delay_in(members: object, singer: str) -> int | None:
    if not isinstance(members, list):
        return None
    for member in members:
        if isinstance(member, dict) and member.get("singer_id") == singer:
            delay = member.get("delay")
            if isinstance(delay, int) and not isinstance(delay, bool):
                return delay
    return None


@dataclass
class Live:
    """Running totals for the progress display (not per window)."""

    frames: int = 0
    late: int = 0
    up_messages: int = 0
    errors: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    texts: int = 0
    states: int = 0
    levels: int = 0
    unsynced_frames: int = 0
    up_restarts: int = 0
    delay_changes: int = 0


@dataclass
class Verify:
    """The sampled singer's decoded downstream audio."""

    decoded: int = 0
    audible: int = 0
    errors: int = 0


@dataclass
class Singer:
    """One simulated browser; :meth:`run` from join to leave."""

    spec: SingerSpec
    behaviour: Behaviour
    audio: UpstreamAudio
    http: aiohttp.ClientSession
    clock: LocalClock
    verify: bool = False
    stats: list[WindowStats] = field(init=False)
    ledger: FrameLedger = field(init=False)
    live: Live = field(default_factory=Live)
    estimator: ClockEstimator = field(default_factory=ClockEstimator)
    singer_id: str | None = None
    delay: int | None = None
    joined: bool = False
    join_ms: float | None = None
    error: str | None = None
    closed_early: bool = False
    closed_at: float | None = None
    """When the server closed the connection before the end (epoch s)."""
    errors: dict[str, int] = field(default_factory=dict)
    max_offset_error_ms: float = 0.0
    verified: Verify = field(default_factory=Verify)

    def __post_init__(self) -> None:
        windows = self.behaviour.windows
        self.stats = [WindowStats() for _ in range(len(windows))]
        self.ledger = FrameLedger(windows, self.stats, horizon=self.behaviour.horizon)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pings: dict[int, float] = {}
        self._next_req = 1
        self._stream = 0
        self._seq = 0
        self._next_pos: int | None = None
        self._variant = self.spec.index
        self._decoder: Any = None
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Join at ``spec.join_at``, sing until ``behaviour.stop_at``, then leave."""
        delay_s = self.spec.join_at - time.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if time.time() >= self.behaviour.stop_at:
            return
        try:
            await self._session()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
        finally:
            if self._stopping:
                self.settle()  # cut short: later windows never ran
            else:
                self.ledger.close()
            if self._ws is not None and not self._ws.closed:
                await self._ws.close()

    def stop(self) -> None:
        """Stop early (the run was cut short): settle and leave as at the end."""
        self._stopping = True

    async def _session(self) -> None:
        started = time.monotonic()
        url = self.spec.url.rstrip("/").replace("http", "ws", 1) + "/ws"
        ws = await self.http.ws_connect(
            url, autoping=True, heartbeat=None, max_msg_size=0, compress=0
        )
        self._ws = ws
        await ws.send_str(
            dumps(
                hello_message(self.spec.room, self.spec.display_name, password=self.spec.password)
            )
        )
        async with asyncio.timeout(WELCOME_TIMEOUT_S):
            welcome = await self._wait_welcome(ws)
        if welcome is None:
            return
        self.join_ms = (time.monotonic() - started) * 1000
        self.joined = True
        self.singer_id = str(welcome["singer"])
        state = welcome.get("state")
        if isinstance(state, dict):
            self._set_delay(_delay_in(state.get("members"), self.singer_id))
        receiver = asyncio.create_task(self._receive(ws))
        sender = asyncio.create_task(self._send(ws))
        try:
            if self.spec.leader:
                await self._lead()
            elif self.spec.bucket is not None:
                await self._join_bucket(self.spec.bucket)
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done and not self._finished():
                self.closed_early = True
                self.closed_at = time.time()
                self.error = self.error or f"connection closed by the server ({ws.close_code})"
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            self.ledger.settle(self.room_now())
            if self.behaviour.leave and not ws.closed:
                await self._request("leave", timeout_s=3.0)
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    async def _wait_welcome(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                self.error = f"closed before welcome ({ws.close_code})"
                return None
            data = json.loads(msg.data)
            if data.get("type") == "welcome":
                return dict(data)
            if data.get("type") == "error" and data.get("fatal"):
                self.error = f"{data.get('code')}: {data.get('message')}"
                return None

    async def _lead(self) -> None:
        for command in ("lead", "start"):
            reply = await self._request(command)
            if reply is not None and reply.get("type") == "error":
                code = reply.get("code")
                # A song already running (a reused room) is fine: join it.
                if code != "song_running":
                    self.error = f"{command} refused: {code}"

    async def _join_bucket(self, bucket: int) -> None:
        reply = await self._request("join_bucket", bucket=bucket)
        if reply is None or reply.get("type") == "error":
            code = "no answer" if reply is None else reply.get("code")
            self.error = f"join_bucket {bucket} refused: {code}"

    async def _request(
        self, kind: str, timeout_s: float = REPLY_TIMEOUT_S, **fields: object
    ) -> dict[str, Any] | None:
        ws = self._ws
        assert ws is not None
        req = self._next_req
        self._next_req += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            await ws.send_str(dumps({"type": kind, "req": req, **fields}))
            async with asyncio.timeout(timeout_s):
                return await future
        except (TimeoutError, ConnectionError, RuntimeError):
            return None
        finally:
            self._pending.pop(req, None)

    def _finished(self) -> bool:
        return self._stopping or time.time() >= self.behaviour.stop_at

    # --- receiving ------------------------------------------------------------------

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        live = self.live
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                live.bytes_down += len(msg.data)
                self._on_audio(msg.data)
            elif msg.type is WSMsgType.TEXT:
                live.bytes_down += len(msg.data)
                self._on_text(msg.data)
            else:
                return

    def _on_audio(self, data: bytes) -> None:
        if len(data) < DOWNSTREAM_HEADER.size or data[0] != KIND_DOWNSTREAM:
            self._count_error("bad_frame")
            return
        _, _, count, delay, start = DOWNSTREAM_HEADER.unpack_from(data)
        live = self.live
        live.frames += count
        if not self.estimator.ready:
            live.unsynced_frames += count
            return
        now = self.estimator.room_clock(self.clock.now_ms())
        if start + delay < now:
            live.late += count
        self.ledger.receive(delay, start, count, now)
        if delay != self.delay and delay == self.ledger.delay:
            self._set_delay(delay)
        if self.verify:
            self._verify(data)

    def _on_text(self, text: str) -> None:
        live = self.live
        live.texts += 1
        if text.startswith(_LEVELS_PREFIX):
            live.levels += 1
            return
        if text.startswith(_STATE_PREFIX):
            live.states += 1
            if self.singer_id is not None:
                self._set_delay(member_delay(text, self.singer_id))
            return
        try:
            message = json.loads(text)
        except ValueError:
            self._count_error("bad_json")
            return
        kind = message.get("type")
        if kind == "pong":
            self._on_pong(message)
        elif kind in {"ack", "error"}:
            if kind == "error":
                self._count_error(str(message.get("code")))
            req = message.get("req")
            future = self._pending.get(req) if isinstance(req, int) else None
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "state":
            live.states += 1
            if self.singer_id is not None:
                self._set_delay(_delay_in(message.get("state", {}).get("members"), self.singer_id))

    def _on_pong(self, message: dict[str, Any]) -> None:
        sent = self._pings.pop(message.get("id"), None)  # type: ignore[arg-type]
        clock = message.get("clock")
        if sent is None or not isinstance(clock, int):
            return
        received = self.clock.now_ms()
        self.estimator.add(sent, received, clock)
        if self.behaviour.windows.at(self.estimator.room_clock(received)) is not None:
            self.max_offset_error_ms = max(self.max_offset_error_ms, abs(self.offset_error_ms()))

    def _count_error(self, code: str) -> None:
        self.live.errors += 1
        self.errors[code] = self.errors.get(code, 0) + 1
        w = self._window_now()
        if w is not None:
            errors = self.stats[w].errors
            errors[code] = errors.get(code, 0) + 1

    def _set_delay(self, delay: int | None) -> None:
        if delay is None or delay == self.delay:
            return
        if self.delay is not None:
            self.live.delay_changes += 1
        self.delay = delay
        self._next_pos = None  # a new upstream stream at the new positions

    def _verify(self, data: bytes) -> None:
        if self._decoder is None:
            self._decoder = OpusDecoder()
        try:
            message = parse_downstream(data)
            samples = self._decoder.decode_packets(message.packets)
        except (ProtocolError, CodecError):
            self.verified.errors += 1
            return
        frames = samples[: len(samples) - len(samples) % OPUS_FRAME_SAMPLES].reshape(
            -1, OPUS_FRAME_SAMPLES
        )
        self.verified.decoded += frames.shape[0]
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
        self.verified.audible += int(np.count_nonzero(rms > 1e-3))

    # --- sending --------------------------------------------------------------------

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        clock = self.clock
        pings = 0
        next_ping = clock.now_ms()
        next_settle = next_ping + SETTLE_EVERY_MS
        stop_ms = clock.from_epoch(self.behaviour.stop_at)
        while not self._stopping:
            now = clock.now_ms()
            if now >= stop_ms:
                return
            if now >= next_ping:
                pings += 1
                self._pings[pings] = now
                await ws.send_str(dumps({"type": "ping", "id": pings, "t": now}))
                next_ping = now + (PING_BURST_MS if pings < PING_BURST else PING_MS)
            if now >= next_settle:
                self.ledger.settle(self.room_now())
                next_settle = now + SETTLE_EVERY_MS
            due = await self._send_audio(ws, now)
            wake = min(next_ping, next_settle, stop_ms, due)
            await asyncio.sleep(max(0.0, (wake - clock.now_ms()) / 1000))

    async def _send_audio(self, ws: aiohttp.ClientWebSocketResponse, now_ms: float) -> float:
        """Send every message whose audio is complete; returns when the next one is due."""
        estimator, delay = self.estimator, self.delay
        if not estimator.ready or delay is None:
            return now_ms + 20.0
        span = self.audio.frames_per_message * OPUS_FRAME_SAMPLES
        lag_to_play = delay + self.behaviour.latency_samples
        if self._next_pos is None:
            self._restart(estimator.room_clock(now_ms) - lag_to_play - span)
        assert self._next_pos is not None
        while True:
            due = estimator.local_ms(self._next_pos + span + lag_to_play)
            lag = now_ms - due
            if lag < 0:
                return due
            if lag > MAX_SEND_LAG_MS:
                self.live.up_restarts += 1
                self._restart(estimator.room_clock(now_ms) - lag_to_play - span)
                continue
            await ws.send_bytes(
                self.audio.message(self._variant, self._stream, self._seq, self._next_pos)
            )
            self.live.up_messages += 1
            w = self.behaviour.windows.at(estimator.room_clock(now_ms))
            if w is not None:
                stats = self.stats[w]
                stats.up_messages += 1
                stats.up_frames += self.audio.frames_per_message
                stats.send_lag_ms.add(lag)
            self._seq += 1
            self._next_pos += span

    def _restart(self, position: int) -> None:
        self._stream = random.getrandbits(32)
        self._seq = 0
        self._next_pos = position - position % OPUS_FRAME_SAMPLES

    # --- clock ------------------------------------------------------------------------

    def connected_through(self, start: float, end: float) -> bool:
        """Joined before ``start`` and still connected at ``end`` (epoch s)."""
        return (
            self.joined
            and self.spec.join_at <= start
            and (self.closed_at is None or self.closed_at >= end)
        )

    def room_now(self) -> int:
        """The singer's estimate of the room clock now (0 before its first pong)."""
        if not self.estimator.ready:
            return 0
        return self.estimator.room_clock(self.clock.now_ms())

    def settle(self) -> None:
        """Finalise the frames more than the horizon past their play time."""
        self.ledger.settle(self.room_now())

    def _window_now(self) -> int | None:
        if not self.estimator.ready:
            return None
        return self.behaviour.windows.at(self.room_now())

    def offset_error_ms(self) -> float:
        """Estimated minus true offset of the room clock (ms); 0 before any sample."""
        if not self.estimator.ready:
            return 0.0
        return self.estimator.offset_ms - self.clock.true_offset_ms()

    # --- report -----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Everything about this singer, JSON-ready."""
        return {
            "index": self.spec.index,
            "room": self.spec.room,
            "gateway": self.spec.url,
            "leader": self.spec.leader,
            "singer": self.singer_id,
            "delay": self.delay,
            "joined": self.joined,
            "join_ms": None if self.join_ms is None else round(self.join_ms, 1),
            "error": self.error,
            "closed_early": self.closed_early,
            "clock": {
                "offset_error_ms": round(self.offset_error_ms(), 3),
                "max_offset_error_ms": round(self.max_offset_error_ms, 3),
                "rtt_ms": round(self.estimator.rtt_ms, 3) if self.estimator.ready else None,
                "pongs": self.estimator.samples,
            },
            "errors": dict(sorted(self.errors.items())),
            "live": self.live.__dict__.copy(),
            "windows": [w.to_json() for w in self.stats],
            **({"verify": self.verified.__dict__.copy()} if self.verify else {}),
        }


def window_totals(singers: Sequence[Singer], index: int) -> WindowStats:
    """The merged stats of window ``index`` over ``singers``."""
    total = WindowStats()
    for singer in singers:
        total.merge(singer.stats[index])
    return total
