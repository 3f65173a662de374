"""The gateway's pure parts: limits, positions, upstream decoding, queues, metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web
from redis.asyncio import Redis

from common import keys
from common import protocol as p
from common.clock import now_samples
from common.codec import CodecError, OpusDecoder, OpusEncoder
from common.codes import Code
from common.constants import SAMPLE_RATE
from common.records import Role
from common.roomview import PublicRoom
from common.streams import Entry, parse_entries
from common.wire import decode_chunk, encode_tap
from gateway.fanout import Fanout, Tap
from gateway.listeners import FreezePolicy
from gateway.metrics import Metrics, RoomFigures, render
from gateway.retry import delay_s
from gateway.roommaterial import follow
from gateway.session import ErrorThrottle, Identity, RateLimiter, Session
from gateway.upstream import (
    MAX_AGE_SAMPLES,
    MAX_AHEAD_SAMPLES,
    SingerStream,
    Uplink,
    check_position,
)
from gateway.worker import CodecWorker
from mixer.roomstate import RoomConfig, RoomState
from mixer.view import public_state
from tests.support import async_wait_until

NOW = 86_000_000_000_000


def tone(freq: float, start: int, n: int) -> npt.NDArray[np.float32]:
    t = np.arange(start, start + n, dtype=np.float64) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_rate_limiter_allows_bursts_then_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=10, now=0.0)
    assert sum(limiter.allow(0.0) for _ in range(15)) == 10
    assert not limiter.allow(0.05)
    assert limiter.allow(0.1)  # one token per 100 ms
    assert sum(limiter.allow(100.0) for _ in range(20)) == 10  # never more than the burst


def test_error_throttle_is_per_code() -> None:
    throttle = ErrorThrottle(1.0)
    assert throttle.allow("bad_audio", 0.0)
    assert not throttle.allow("bad_audio", 0.5)
    assert throttle.allow("audio_old", 0.5)
    assert throttle.allow("bad_audio", 1.0)


def test_positions_near_now_are_accepted() -> None:
    check_position(NOW - 9 * SAMPLE_RATE, 4800, NOW)
    check_position(NOW + MAX_AHEAD_SAMPLES - 4800, 4800, NOW)
    check_position(NOW - MAX_AGE_SAMPLES, 4800, NOW)


@pytest.mark.parametrize(
    ("start", "code"),
    [
        (NOW + MAX_AHEAD_SAMPLES - 4799, Code.AUDIO_FUTURE),
        (NOW + 3600 * SAMPLE_RATE, Code.AUDIO_FUTURE),
        (NOW - MAX_AGE_SAMPLES - 1, Code.AUDIO_OLD),
        (0, Code.AUDIO_OLD),
    ],
)
def test_positions_far_from_now_are_refused(start: int, code: Code) -> None:
    with pytest.raises(p.ProtocolError) as info:
        check_position(start, 4800, NOW)
    assert info.value.code is code


def _opus_message(
    encoder: OpusEncoder, stream: int, seq: int, start: int, freq: float = 440
) -> p.Upstream:
    packets = encoder.encode_frames(tone(freq, start, 4800))
    return p.parse_upstream(p.encode_upstream_opus(stream, seq, start, packets))


def test_singer_stream_decodes_opus_to_an_int16_chunk() -> None:
    encoder = OpusEncoder()
    stream = SingerStream("choir", "s-1", p.CODEC_OPUS)
    start = NOW - 6 * SAMPLE_RATE
    decoded = []
    for seq in range(4):
        chunk = stream.accept(_opus_message(encoder, 9, seq, start + seq * 4800), NOW)
        assert chunk.reset == (seq == 0)
        wire = decode_chunk(stream.encode(chunk))
        assert (wire.room, wire.singer, wire.stream, wire.seq) == ("choir", "s-1", 9, seq)
        assert wire.start == start + seq * 4800
        decoded.append(wire.samples)
    audio = np.concatenate(decoded)
    spectrum = np.abs(np.fft.rfft(audio[4800:]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio[4800:]) - 440) < 5


def test_a_gap_or_a_new_stream_resets_the_decoder_and_carries_on() -> None:
    encoder = OpusEncoder()
    stream = SingerStream("choir", "s-1", p.CODEC_OPUS)
    start = NOW - 6 * SAMPLE_RATE
    assert stream.accept(_opus_message(encoder, 1, 0, start), NOW).reset
    assert not stream.accept(_opus_message(encoder, 1, 1, start + 4800), NOW).reset
    assert stream.accept(_opus_message(encoder, 1, 3, start + 9600), NOW).reset  # seq gap
    assert stream.accept(_opus_message(encoder, 1, 4, start + 48000), NOW).reset  # position gap
    assert stream.accept(_opus_message(encoder, 2, 5, start + 52800), NOW).reset  # new stream
    chunk = stream.accept(_opus_message(encoder, 2, 6, start + 57600), NOW)
    assert not chunk.reset
    assert decode_chunk(stream.encode(chunk)).samples.shape == (4800,)


def test_corrupt_opus_is_a_codec_error_and_the_next_message_starts_afresh() -> None:
    encoder = OpusEncoder()
    stream = SingerStream("choir", "s-1", p.CODEC_OPUS)
    start = NOW - 6 * SAMPLE_RATE
    stream.encode(stream.accept(_opus_message(encoder, 1, 0, start), NOW))
    # A TOC byte announcing a 60 ms packet: legal Opus, but not one 20 ms frame.
    long_packet = bytes([0b00011000]) + b"\x00" * 20
    bad = p.parse_upstream(p.encode_upstream_opus(1, 1, start + 4800, [long_packet]))
    with pytest.raises(CodecError):
        stream.encode(stream.accept(bad, NOW))
    # The next message continues the positions, but its decode starts from a reset state.
    chunk = stream.accept(_opus_message(encoder, 1, 2, start + 5760), NOW)
    assert not chunk.reset
    assert decode_chunk(stream.encode(chunk)).samples.shape == (4800,)


def test_wrong_codec_is_refused() -> None:
    stream = SingerStream("choir", "s-1", p.CODEC_PCM16)
    up = p.parse_upstream(p.encode_upstream_opus(1, 0, NOW - 48000, [b"\xf8\xff\xfe"]))
    with pytest.raises(p.ProtocolError, match="does not match") as info:
        stream.accept(up, NOW)
    assert info.value.code is Code.BAD_AUDIO


def test_pcm16_passes_through_unchanged() -> None:
    stream = SingerStream("choir", "s-1", p.CODEC_PCM16)
    pcm = np.arange(-480, 480, dtype="<i2").tobytes()
    chunk = stream.accept(p.parse_upstream(p.encode_upstream_pcm16(1, 0, NOW - 48000, pcm)), NOW)
    wire = decode_chunk(stream.encode(chunk))
    assert np.array_equal(np.rint(wire.samples * 32768).astype(np.int16), np.arange(-480, 480))


def test_tap_encoding_decodes_back() -> None:
    from common.wire import TapWindow  # noqa: PLC0415
    from gateway.fanout import Tap  # noqa: PLC0415

    tap = Tap("choir", 288_000)
    windows = [
        TapWindow("choir", 288_000, k * 4800, NOW, tone(660, k * 4800, 4800)) for k in range(3)
    ]
    encoded = tap.encode(windows, opus=True, pcm16=True)
    decoder = OpusDecoder()
    audio = []
    for item, window in zip(encoded, windows, strict=True):
        assert item.opus is not None and item.pcm16 is not None
        down = p.parse_downstream(item.opus)
        assert (down.delay, down.start, len(down.packets)) == (288_000, window.start, 5)
        audio.append(decoder.decode_packets(list(down.packets)))
        pcm = p.parse_downstream(item.pcm16)
        assert pcm.samples == 4800
    spectrum = np.abs(np.fft.rfft(np.concatenate(audio)[4800:]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / 9600 - 660) < 5


async def test_a_slow_sessions_queue_drops_its_oldest_frames() -> None:
    metrics = Metrics()
    session = Session(ws=web.WebSocketResponse(), metrics=metrics, audio_queue_frames=12, conn="c1")
    for k in range(5):
        session.send_audio(bytes([k]), 5)
    assert session.queued_frames == 10
    assert metrics.get("frames_dropped_total") == 15
    session.send_json({"type": "ack", "req": 1})  # control messages are not dropped
    session.clear_audio()
    assert session.queued_frames == 0


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.inc("chunks_in_total", 3)
    metrics.drop("bad_audio", 2)
    text = render(
        metrics,
        {"connections": 4},
        {'we"ird': RoomFigures(singers=2, spectators=1, late_writes=7, members=3)},
    )
    lines = text.decode().splitlines()
    assert "# TYPE bb_gateway_chunks_in_total counter" in lines
    assert "bb_gateway_chunks_in_total 3.0" in lines
    assert 'bb_gateway_drops_total{reason="bad_audio"} 2.0' in lines
    assert "bb_gateway_connections 4.0" in lines
    assert 'bb_gateway_room_singers{room="we\\"ird"} 2.0' in lines
    assert 'bb_gateway_room_late_writes{room="we\\"ird"} 7.0' in lines
    with pytest.raises(KeyError):
        metrics.inc("no_such_counter")


def test_tap_gaps_count_only_real_gaps_within_one_read() -> None:
    metrics = Metrics()
    redis: Any = None  # _fresh_windows does no I/O
    fanout = Fanout(redis, metrics, CodecWorker())
    tap = Tap("choir", 144000, next_start=None)
    start = (now_samples() // 960) * 960
    frames = np.zeros(4800, np.float32)
    # Three windows that follow each other, then one after a 960-sample gap.
    starts = [start, start + 4800, start + 9600, start + 15360]
    entries: list[Entry] = [
        (f"{i}-0".encode(), encode_tap("choir", 144000, s, s, frames)) for i, s in enumerate(starts)
    ]
    windows = fanout._fresh_windows(tap, entries, now_samples())
    assert [w.start for w in windows] == starts
    assert metrics.get("tap_gaps_total") == 1


async def test_fanout_paces_reads_so_listeners_get_two_windows_per_write(redis_url: str) -> None:
    """With period_ms=200 and a window every 100 ms, deliveries come in pairs, none lost."""
    redis = Redis.from_url(redis_url)
    metrics = Metrics()
    fanout = Fanout(redis, metrics, CodecWorker(), period_ms=200)
    session = Session(
        ws=web.WebSocketResponse(), metrics=metrics, audio_queue_frames=500, conn="c1"
    )
    session.member = Identity("choir", "s1", "Ann", Role.SINGER, "pcm16")
    loop = asyncio.get_running_loop()
    received: list[tuple[float, int]] = []

    def send_audio(framed: bytes, frames: int) -> None:
        for message in unframe(framed):
            received.append((loop.time(), p.parse_downstream(message).start))

    session.send_audio = send_audio  # type: ignore[method-assign]
    delay = 3 * SAMPLE_RATE
    fanout.subscribe(session, "choir", delay)
    task = asyncio.create_task(fanout.run())
    try:
        # The tap starts after what its stream holds when the fanout first reads it.
        await async_wait_until(
            lambda: all(tap.last_id is not None for tap in fanout._taps.values()),
            5,
            "the fanout to start the tap",
        )
        start = (now_samples() // 960) * 960
        starts = [start + k * 4800 for k in range(12)]
        silence = np.zeros(4800, np.float32)
        for s in starts:
            window = encode_tap("choir", delay, s, s, silence)
            await redis.xadd(keys.room_tap("choir", delay), {"d": window})
            await asyncio.sleep(0.1)  # the scenario: a mixer publishes a window every 100 ms
        await async_wait_until(lambda: len(received) >= len(starts), 5, "every window")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
    assert [s for _, s in received] == starts  # every window, in order
    deliveries = len({round(t, 3) for t, _ in received})
    assert deliveries <= 8, received  # about 6 for 12 windows; 12 without pacing


def unframe(framed: bytes) -> list[bytes]:
    """The payloads of consecutive unmasked server frames (RFC 6455 §5.2)."""
    out, pos = [], 0
    while pos < len(framed):
        assert framed[pos] == 0x82, "a final binary frame"
        length, pos = framed[pos + 1], pos + 2
        if length == 126:
            length, pos = int.from_bytes(framed[pos : pos + 2], "big"), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(framed[pos : pos + 8], "big"), pos + 8
        out.append(framed[pos : pos + length])
        pos += length
    return out


async def test_a_delivery_is_framed_once_and_the_same_bytes_go_to_every_listener(
    redis_url: str,
) -> None:
    """The fan-out builds a tap's WebSocket frames once per delivery, for all its sessions."""
    redis = Redis.from_url(redis_url)
    metrics = Metrics()
    fanout = Fanout(redis, metrics, CodecWorker(), period_ms=200)
    got: dict[str, list[bytes]] = {}
    delay = 3 * SAMPLE_RATE
    sessions = []
    for name in ("a", "b", "c"):
        session = Session(
            ws=web.WebSocketResponse(), metrics=metrics, audio_queue_frames=500, conn=name
        )
        session.member = Identity("choir", f"l-{name}", "Fan", "listener", "opus")
        got[name] = []

        def send_audio(framed: bytes, frames: int, name: str = name) -> None:
            got[name].append(framed)

        session.send_audio = send_audio  # type: ignore[method-assign]
        fanout.subscribe(session, "choir", delay)
        sessions.append(session)
    task = asyncio.create_task(fanout.run())
    try:
        await asyncio.sleep(0.3)
        start = (now_samples() // 960) * 960
        silence = np.zeros(4800, np.float32)
        for k in range(4):
            window = encode_tap("choir", delay, start + k * 4800, start, silence)
            await redis.xadd(keys.room_tap("choir", delay), {"d": window})
            await asyncio.sleep(0.1)
        deadline = asyncio.get_running_loop().time() + 5
        while sum(len(unframe(f)) for f in got["a"]) < 4:
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
    # Listeners only: the tap is held until 400 ms of audio (20 frames), one write for all 4.
    assert len(got["a"]) == len(got["b"]) == len(got["c"]) == 1
    for a, b, c in zip(got["a"], got["b"], got["c"], strict=True):
        assert a is b is c  # one object: framed once, not per session
    messages = [p.parse_downstream(m) for f in got["a"] for m in unframe(f)]
    assert [m.start for m in messages] == [start + k * 4800 for k in range(4)]
    assert all(m.delay == delay and len(m.packets) == 5 for m in messages)
    assert metrics.get("frames_encoded_total") == 20  # once per window, not per listener


def test_redis_retry_delay_doubles_from_a_tenth_of_a_second_up_to_two_with_jitter() -> None:
    nominal = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    for failures, top in enumerate(nominal, start=1):
        delays = {delay_s(failures) for _ in range(50)}
        assert all(top / 2 <= d <= top for d in delays), (failures, delays)
        assert len(delays) > 1, "no jitter"
    assert 1.0 <= delay_s(10_000) <= 2.0


def test_the_collector_freezes_a_growing_audience_and_thaws_when_a_fifth_left() -> None:
    policy = FreezePolicy(min_listeners=500)
    assert policy.decide(499) is None  # too few to matter
    assert policy.decide(500) == "freeze"
    assert policy.decide(540) is None  # not a tenth more yet
    assert policy.decide(560) == "freeze"
    policy.departed(100)
    assert policy.decide(460) is None  # 100 of 560 is not more than a fifth (and 100)
    policy.departed(13)
    assert policy.decide(447) == "unfreeze"
    assert policy.decide(447) is None  # frozen again only at 500
    assert policy.decide(2000) == "freeze"


async def test_a_page_gets_each_room_material_once_whatever_object_holds_it() -> None:
    """gateway/roommaterial.py: the same object while the material is unchanged, a new
    one when its version or its content changes; a session is sent each material once."""
    state = RoomState(RoomConfig())
    state.join("s-ann", "Ann", Role.SINGER, 0)
    state.request_lead("s-ann", 1)
    state.set_lyrics("s-ann", "Row, row")

    def view() -> PublicRoom:
        return public_state("r", state)

    first = follow(None, view())
    state.set_muted("s-ann", True)
    assert follow(first, view()) is first  # a state change that is no material change
    again = follow(None, view())  # built elsewhere (a join read from Redis): same content
    state.set_lyrics("s-ann", "Row, row, row")
    changed = follow(first, view())
    assert changed is not first and changed.version == first.version + 1
    reused = msgspec.structs.replace(view(), material_version=first.version)
    assert follow(first, reused) is not first  # other content under a reused version

    session = Session(ws=web.WebSocketResponse(), metrics=Metrics(), audio_queue_frames=4, conn="c")
    for material in (first, first, again, changed, changed):
        session.send_material(material)
    sent = [json.loads(text) for text in session._control]
    assert [(m["type"], m["version"]) for m in sent] == [
        ("material", first.version),
        ("material", changed.version),
    ]
    assert sent[1]["material"]["lyrics"] == "Row, row, row"


async def test_an_uplink_batch_reaches_each_rooms_stream_even_after_a_script_flush(
    redis_url: str,
) -> None:
    """One batch's chunks go to their rooms' input streams in one pipeline; a Redis
    that lost the push script (a restart, SCRIPT FLUSH) gets it again, nothing dropped."""
    redis = Redis.from_url(redis_url)
    metrics = Metrics()
    uplink = Uplink(redis, metrics, CodecWorker(), maxlen=1000, batch_ms=5)
    rooms = ["up-a", "up-b", "up-c"]
    streams = {room: SingerStream(room, "s-1", p.CODEC_PCM16) for room in rooms}
    pcm = np.arange(-480, 480, dtype="<i2").tobytes()
    errors: list[CodecError] = []

    async def push_round(seq: int) -> None:
        for stream in streams.values():
            up = p.parse_upstream(p.encode_upstream_pcm16(1, seq, NOW - 48000 + 960 * seq, pcm))
            assert uplink.submit(stream, stream.accept(up, NOW), errors.append)
        await async_wait_until(
            lambda: metrics.get("chunks_pushed_total") == len(rooms) * (seq + 1),
            5,
            f"round {seq} pushed",
        )

    task = asyncio.create_task(uplink.run())
    try:
        await push_round(0)
        await redis.script_flush()
        await push_round(1)
        for room in rooms:
            entries = parse_entries(await redis.xrange(keys.room_in(room)))
            chunks = [decode_chunk(value or b"") for _id, value in entries]
            assert [c.room for c in chunks] == [room, room], room
            assert [c.start for c in chunks] == [NOW - 48000, NOW - 48000 + 960], room
        assert metrics.drops("push_failed") == 0 and not errors
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
