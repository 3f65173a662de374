"""Singers' audio on its way to the mixer: validate, decode, push to Redis.

:class:`SingerStream` is one connection's upstream: on the event loop it
checks positions and follows the stream's continuity (:meth:`accept`); in a
worker thread it owns the Opus decoder (reset on a new stream, a gap or a
corrupt packet, never fatal) and turns a message into one internal-wire
chunk, int16 to halve Redis bandwidth (:meth:`SingerStream.encode`).

:class:`Uplink` batches that work.  Accepted chunks from every connection
queue up for ``batch_ms``; then the codec worker (gateway/worker.py) decodes
the whole batch and one script call per room appends it (``XADD ... MAXLEN
~`` per chunk), all of a batch's rooms in one pipeline (one write, one read;
on a Redis Cluster, one call per room, side by side).  Per message, a Redis
command and reply cost about as much CPU as decoding the message itself; per
batch they are noise.  Batching only delays audio by ``batch_ms``, which
nobody hears: a chunk is needed by the next bucket's tap seconds later.  The
queue is bounded: when it is full the newest chunk is refused (counted),
never the loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from common import keys
from common.codec import CodecError, OpusDecoder
from common.codes import Code
from common.constants import SAMPLE_RATE
from common.protocol import CODEC_OPUS, ProtocolError, Upstream
from common.redisclient import REDIS_ERRORS, is_cluster
from common.wire import encode_chunk
from gateway.metrics import Metrics
from gateway.retry import back_off
from gateway.worker import CodecWorker

MAX_AHEAD_SAMPLES: Final = SAMPLE_RATE // 2
"""Audio may end at most 0.5 s ahead of the room clock (clock error, not time travel)."""

MAX_AGE_SAMPLES: Final = 115 * SAMPLE_RATE
"""Audio may start at most 115 s behind the room clock (the longest delay a ring keeps)."""


def check_position(start: int, samples: int, now: int) -> None:
    """Refuse audio for positions the mixer could never use (``now``: the room clock)."""
    if start + samples > now + MAX_AHEAD_SAMPLES:
        raise ProtocolError(
            Code.AUDIO_FUTURE,
            f"audio ends {(start + samples - now) / SAMPLE_RATE:.2f} s ahead of the room clock "
            f"(limit {MAX_AHEAD_SAMPLES / SAMPLE_RATE:g} s): check your clock sync",
        )
    if start < now - MAX_AGE_SAMPLES:
        raise ProtocolError(
            Code.AUDIO_OLD,
            f"audio starts {(now - start) / SAMPLE_RATE:.1f} s behind the room clock "
            f"(limit {MAX_AGE_SAMPLES // SAMPLE_RATE} s)",
        )


@dataclass(frozen=True, slots=True)
class Chunk:
    """One validated upstream message, ready for :meth:`SingerStream.encode`."""

    message: Upstream
    reset: bool


class SingerStream:
    """One connection's upstream audio: continuity, decoder, wire encoding.

    :meth:`accept` runs on the event loop (cheap checks, continuity state);
    :meth:`encode` does the codec work and may run in a worker thread, one
    call at a time per stream (the connection awaits each message in turn).
    The decoder is never closed explicitly, since a cancelled connection may
    leave a decode running in a worker thread; it is freed with the stream.
    """

    def __init__(self, room: str, singer: str, codec: int) -> None:
        self.room = room
        self.singer = singer
        self.codec = codec
        self.key = keys.room_in(room)
        self._decoder: OpusDecoder | None = OpusDecoder() if codec == CODEC_OPUS else None
        self._next: tuple[int, int, int] | None = None
        """(stream, seq, start) that would continue the last message (event loop only)."""
        self._broken = False
        """The last decode failed: reset before the next one (worker thread only)."""

    def accept(self, message: Upstream, now: int) -> Chunk:
        """Validate ``message`` against the connection and the clock; raises ProtocolError."""
        if message.codec != self.codec:
            raise ProtocolError(
                Code.BAD_AUDIO,
                f"audio codec {message.codec} does not match the codec chosen in hello "
                f"({self.codec})",
            )
        check_position(message.start, message.samples, now)
        expected = (message.stream, message.seq, message.start)
        reset = self._next != expected
        self._next = (
            message.stream,
            (message.seq + 1) & 0xFFFF_FFFF,
            message.start + message.samples,
        )
        return Chunk(message, reset)

    def encode(self, chunk: Chunk) -> bytes:
        """Decode (Opus) and frame the chunk for ``bb:{room}:in``; raises CodecError.

        A failed decode leaves the decoder in an unknown state, so the next
        message starts from a reset one.
        """
        message = chunk.message
        samples: npt.NDArray[np.int16]
        if self._decoder is None:
            samples = np.frombuffer(message.pcm, dtype="<i2")
        else:
            try:
                samples = self._decode(message.packets, chunk.reset or self._broken)
            except CodecError:
                self._broken = True
                raise
            self._broken = False
        return encode_chunk(
            self.room, self.singer, message.stream, message.seq, message.start, samples
        )

    def _decode(self, packets: tuple[bytes, ...], reset: bool) -> npt.NDArray[np.int16]:
        decoder = self._decoder
        assert decoder is not None
        if reset:
            decoder.reset()
        # Straight to int16, the internal wire's sample type: no float pass in between;
        # into the decoder's own buffer, which encode_chunk copies into the message.
        return decoder.decode_frames_int16(packets, reuse=True)


ErrorHandler = Callable[[CodecError], None]

PUSH_SCRIPT: Final = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i])
end
return #ARGV - 1
"""
"""One room's chunks of a batch: one command and one reply instead of one per chunk.

The entries are exactly what one ``XADD ... MAXLEN ~ N * d CHUNK`` each would
write; the script touches one key, so it stays valid on Redis Cluster.
"""


@dataclass(frozen=True, slots=True)
class _Job:
    stream: SingerStream
    chunk: Chunk
    on_error: ErrorHandler


def _encoder(job: _Job) -> Callable[[], bytes | CodecError]:
    """The codec part of a job, for the worker (errors are returned, not raised)."""

    def encode() -> bytes | CodecError:
        try:
            return job.stream.encode(job.chunk)
        except CodecError as exc:
            return exc

    return encode


class Uplink:
    """Decodes accepted chunks in batches off the loop and pushes them to Redis.

    Each uplink processes one batch at a time, so a stream's chunks are
    decoded in order by one thread at a time; a gateway runs one uplink per
    codec thread and gives each connection to one of them.
    """

    def __init__(
        self,
        redis: Redis,
        metrics: Metrics,
        worker: CodecWorker,
        *,
        maxlen: int,
        batch_ms: float = 20.0,
        capacity: int = 4096,
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._worker = worker
        self._maxlen = maxlen
        self._batch_s = batch_ms / 1000
        self._capacity = capacity
        self._jobs: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._push = redis.register_script(PUSH_SCRIPT)
        self._cluster = is_cluster(redis)

    def submit(self, stream: SingerStream, chunk: Chunk, on_error: ErrorHandler) -> bool:
        """Queue an accepted chunk; False (and counted) when the queue is full."""
        if len(self._jobs) >= self._capacity:
            self._metrics.drop("push_queue_full")
            return False
        self._jobs.append(_Job(stream, chunk, on_error))
        self._wake.set()
        return True

    @property
    def queued(self) -> int:
        return len(self._jobs)

    async def run(self) -> None:
        """Serve batches forever; Redis errors drop the batch and back off."""
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._batch_s)  # let a batch gather
            while self._jobs:
                jobs = list(self._jobs)
                self._jobs.clear()
                entries = await self._decode(jobs)
                if not entries:
                    continue
                try:
                    await self._write(entries)
                except REDIS_ERRORS as exc:
                    failures += 1
                    self._metrics.drop("push_failed", len(entries))
                    await back_off(self._metrics, failures, "pushing audio to Redis", exc)
                else:
                    failures = 0
                    self._metrics.inc("chunks_pushed_total", len(entries))

    async def _decode(self, jobs: list[_Job]) -> list[tuple[str, bytes]]:
        results = await self._worker.run([_encoder(job) for job in jobs])
        entries: list[tuple[str, bytes]] = []
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, CodecError):
                self._metrics.inc("decode_errors_total")
                self._metrics.drop("bad_audio")
                job.on_error(result)
            else:
                entries.append((job.stream.key, result))
        return entries

    async def _write(self, entries: list[tuple[str, bytes]]) -> None:
        by_key: dict[str, list[bytes]] = {}
        for key, data in entries:
            by_key.setdefault(key, []).append(data)
        if self._cluster:
            # The rooms' keys live on different nodes; redis-py routes each call.
            await asyncio.gather(
                *(
                    self._push(keys=[key], args=[self._maxlen, *_views(datas)])
                    for key, datas in by_key.items()
                )
            )
            return
        missing = await self._pipelined(by_key)
        if missing:
            # Redis restarted (or flushed its scripts) since: load it, push those again.
            self._push.sha = await self._redis.script_load(PUSH_SCRIPT)
            if await self._pipelined({key: by_key[key] for key in missing}):
                raise NoScriptError("the push script vanished again as it was loaded")

    async def _pipelined(self, by_key: dict[str, list[bytes]]) -> list[str]:
        """One script call per room in one pipeline; returns the rooms' keys Redis had no
        script for (raises the first other error: the batch counts as failed)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, datas in by_key.items():
                pipe.evalsha(self._push.sha, 1, key, self._maxlen, *_views(datas))
            results = await pipe.execute(raise_on_error=False)
        missing: list[str] = []
        for key, result in zip(by_key, results, strict=True):
            if isinstance(result, NoScriptError):
                missing.append(key)
            elif isinstance(result, Exception):
                raise result
        return missing


def _views(datas: list[bytes]) -> list[memoryview]:
    # As memoryviews, the chunks are not copied into one packed command (redis-py's
    # hiredis packer would): they go to the socket as they are, in one vectored write.
    return [memoryview(d) for d in datas]
