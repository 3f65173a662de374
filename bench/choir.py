"""Three simulated singers per room, for the recorder's benchmarks.

Singers ``a`` (the leader, bucket 0), ``b`` and ``c`` sing tones of 440, 660
and 990 Hz from the first song's start on, without a break (between songs
too), so every position of every song holds all three voices. Their chunks
are 100 ms of int16, pushed to ``bb:{R}:in`` as a gateway pushes them
(``gateway/upstream.py``), each once its audio is complete at the singer's
delay; one pipeline carries every room's chunks of a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import redis

from common import keys
from common.clock import now_samples
from common.commands import (
    Envelope,
    Join,
    Lead,
    SetLeaderBoost,
    SetRecording,
    Start,
    Stop,
    encode_envelope,
)
from common.records import Role
from common.wire import encode_chunk
from tests.simgateway import CHUNK, SimGateway, tone

__all__ = ["SINGERS", "SPACING_S", "Choir", "pump", "sing"]

SINGERS: Final = (("a", "Ann", 440.0), ("b", "Bob", 660.0), ("c", "Cy", 990.0))
SPACING_S: Final = 1.5
N_BUCKETS: Final = 4
IN_MAXLEN: Final = 2000
"""As tests/simgateway.py trims the input stream (the mixer trims it further)."""


class Choir:
    """One room (``N_BUCKETS`` buckets ``SPACING_S`` apart) and its three singers."""

    def __init__(self, sim: SimGateway, room: str) -> None:
        self.sim, self.room = sim, room
        self.delays: dict[str, int] = {}
        self.next: dict[str, int] = {}
        """Each singer's next chunk position (set at the first song's start)."""
        sim.create_room(room, bucket_spacing_s=SPACING_S, n_buckets=N_BUCKETS)

    def join(self) -> None:
        """Everyone joins; ``a`` leads, at no boost (the three voices alike).

        The joins go in one pipeline without waiting for their replies (the
        mixer applies a room's commands in order: the leader's ``lead`` is
        accepted only once ``a`` is in, and every delay is read after).
        """
        sim, room = self.sim, self.room
        with sim.client.pipeline(transaction=False) as pipe:
            for singer, name, _freq in SINGERS:
                join = Envelope(singer=singer, cmd=Join(name=name, role=Role.SINGER), gw=sim.gw)
                pipe.xadd(keys.room_ctl(room), {"d": encode_envelope(join)})
            pipe.execute()
        for cmd in (Lead(), SetLeaderBoost(boost_db=0.0)):
            assert sim.command(room, "a", cmd).ok
        self.delays = {singer: sim.member_delay(room, singer) for singer, _n, _f in SINGERS}

    def record_stems(self) -> None:
        """The leader asks for stems in the next songs' recordings."""
        assert self.sim.command(self.room, "a", SetRecording(stems=True)).ok

    def start(self) -> tuple[int, int]:
        """Start a song; its number and start position."""
        sim, room = self.sim, self.room
        assert sim.command(room, "a", Start()).ok
        song = sim.state(room)["song"]
        start = int(song["start_pos"])
        for singer, _name, _freq in SINGERS:
            self.next.setdefault(singer, start)
        return int(song["number"]), start

    def stop(self) -> int:
        """Stop the song; its end position."""
        assert self.sim.command(self.room, "a", Stop()).ok
        return int(self.sim.state(self.room)["song"]["end_pos"])

    def pump(self, pipe: Any, now: int) -> int:
        """Queue on ``pipe`` every chunk sung by ``now``; how many."""
        queued = 0
        if not self.next:
            return 0  # no song yet
        for singer, _name, freq in SINGERS:
            delay = self.delays[singer]
            while self.next[singer] + CHUNK + delay <= now:
                pos = self.next[singer]
                pcm = (tone(freq, pos, CHUNK) * 32767).astype(np.int16)
                pipe.xadd(
                    keys.room_in(self.room),
                    {"d": encode_chunk(self.room, singer, 1, 0, pos, pcm)},
                    maxlen=IN_MAXLEN,
                    approximate=True,
                )
                self.next[singer] = pos + CHUNK
                queued += 1
        return queued


def pump(client: redis.Redis, choirs: list[Choir]) -> None:
    """Push every chunk the choirs have sung by now, in one pipeline."""
    now = now_samples()
    pipe = client.pipeline(transaction=False)
    if sum(choir.pump(pipe, now) for choir in choirs):
        pipe.execute()


def sing(
    client: redis.Redis,
    choirs: list[Choir],
    until: Callable[[], object],
    timeout_s: float,
    also: Callable[[], None] | None = None,
) -> None:
    """Keep every choir singing (a pass every 20 ms) until ``until()``; ``also()`` each pass."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pump(client, choirs)
        if also is not None:
            also()
        if until():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s")
