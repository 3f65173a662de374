"""The mixing console, solo and rounds end to end.

A real redis-server, two real ``brigade mixer`` processes, two real
``brigade gateway`` processes, and protocol clients with real Opus
(tests/test_gateway_e2e.py's ``Peer`` and ``Voice``). Levels are measured in
the band of each singer's tone as a later bucket decodes it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis

from common import keys, records
from common.constants import OPUS_FRAME_SAMPLES, OPUS_LOOKAHEAD_SAMPLES, SAMPLE_RATE
from common.records import MixerStatus
from tests.support import Stack, async_wait_until, wait_until
from tests.test_gateway_e2e import (
    Peer,
    Samples,
    Voice,
    band,
    first_frame,
    peers,
    rms,
    start_song,
    stretch,
)

# Two mixers and two gateways for the module, on one Redis and on a Redis Cluster.
pytestmark = pytest.mark.stack(mixers=2, gateways=2, env={"BB_LOG_LEVEL": "INFO"})


def newest_ms(client: redis.Redis, key: str) -> int:
    """The time part of a stream's newest entry id (0 when empty)."""
    newest: Any = client.xrevrange(key, count=1)
    return int(bytes(newest[0][0]).split(b"-")[0]) if newest else 0


def heartbeat_pid(client: redis.Redis, mixer: str) -> int | None:
    raw: Any = client.get(keys.mixer_heartbeat(mixer))
    return records.decode(raw, MixerStatus).pid if raw else None


def level_db(audio: Samples, freq: float) -> float:
    return 20 * math.log10(max(rms(band(audio, freq)), 1e-9))


async def heard(peer: Peer, start: int, span: int, what: str) -> Samples:
    """Positions [start, start + span) of the tap ``peer`` hears now (waits for them)."""
    delay = int(peer.me()["delay"])
    await async_wait_until(
        lambda: all(q in peer.heard(delay) for q in range(start, start + span, OPUS_FRAME_SAMPLES)),
        30,
        what,
    )
    return stretch(peer.heard(delay), start, span)


async def test_a_singer_at_minus_12_db_is_heard_12_db_quieter(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    ann, bob, cat = peers(http, module_stack, 0, 1, 1)
    await ann.join("console", "Ann")
    await bob.join("console", "Bob")
    await cat.join("console", "Cat")
    await ann.ok("lead")
    # Bob cannot turn Ann down; the leader can turn Bob down; Bob can set his own.
    refused = await bob.request("set_gain", target=ann.singer, gain_db=-6)
    assert (refused["type"], refused["code"]) == ("error", "not_leader")
    await bob.ok("set_gain", target=bob.singer, gain_db=-3)
    await ann.ok("set_gain", target=bob.singer, gain_db=-12)
    await cat.wait_member(bob.singer, gain_db=-12.0)
    start = await start_song(ann, [(ann, 1), (bob, 1), (cat, 2)])
    voices = [Voice(ann, 440, start), Voice(bob, 660, start)]
    for v in voices:
        v.start()
    try:
        first = first_frame(start)
        audio = await heard(cat, first, 2 * SAMPLE_RATE, "Cat's tap to cover two seconds")
    finally:
        for v in voices:
            await v.stop()
    difference = level_db(audio, 660) - level_db(audio, 440)
    assert abs(difference - -12.0) <= 0.5, f"Bob is {difference:.2f} dB against Ann"
    for peer in (ann, bob, cat):
        await peer.close()


async def test_the_solo_mix_carries_only_the_soloed_singer(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    ann, bob = peers(http, module_stack, 0, 1)
    full, solo = peers(http, module_stack, 0, 1)
    await ann.join("solo", "Ann")
    await bob.join("solo", "Bob")
    await full.join("solo", "Full", role="spectator")
    await solo.join("solo", "Solo", role="spectator")
    await ann.ok("lead")
    refused = await bob.request("solo", target=bob.singer, on=True)
    assert (refused["type"], refused["code"]) == ("error", "not_leader")
    await ann.ok("solo", target=bob.singer, on=True)
    await solo.ok("set_mix", mix="solo")
    await solo.wait_member(solo.singer, hears="solo")
    assert full.me()["hears"] == "full"
    start = await start_song(ann, [(ann, 1), (bob, 1)])
    voices = [Voice(ann, 440, start), Voice(bob, 660, start)]
    for v in voices:
        v.start()
    try:
        first = first_frame(start)
        by_solo = await heard(solo, first, 2 * SAMPLE_RATE, "the solo listener's tap")
        by_full = await heard(full, first, 2 * SAMPLE_RATE, "the full listener's tap")
    finally:
        for v in voices:
            await v.stop()
    assert rms(band(by_solo, 660)) > 0.05, "the solo mix lacks the soloed singer"
    assert rms(band(by_solo, 440)) < 0.01, "the solo mix carries a singer not soloed"
    assert rms(band(by_full, 660)) > 0.05 and rms(band(by_full, 440)) > 0.05
    assert module_stack.redis.exists(keys.room_tap("solo", int(solo.me()["delay"]), "solo"))
    for peer in (ann, bob, full, solo):
        await peer.close()


class Burst(Voice):
    """Half a second of tone at the start of the song, then silence."""

    def __init__(self, peer: Peer, freq: float, start: int, length: int) -> None:
        super().__init__(peer, freq, start)
        self.song_start, self.length = start, length

    def signal(self, start: int, n: int) -> Samples:
        positions = np.arange(start, start + n, dtype=np.int64)
        t = (positions % (SAMPLE_RATE * 1000)).astype(np.float64) / SAMPLE_RATE
        on = positions < self.song_start + self.length
        return (0.3 * np.sin(2 * np.pi * self.freq * t) * on).astype(np.float32)


def onsets(
    audio: Samples, freq: float, threshold: float, apart: int = SAMPLE_RATE // 10
) -> list[int]:
    """Sample offsets where the band's 5 ms envelope rises above ``threshold``.

    A rise within ``apart`` samples of the previous one is the same onset: the
    envelope ripples (|sin| over 5 ms) and can cross the threshold twice.
    """
    part = np.abs(band(audio, freq, width=60))
    envelope = np.convolve(part, np.ones(240) / 240, mode="same")
    above = envelope > threshold
    found: list[int] = []
    for rise in np.flatnonzero(above[1:] & ~above[:-1]) + 1:
        if not found or rise - found[-1] > apart:
            found.append(int(rise))
    return found


async def test_rounds_repeat_the_leader_at_each_period(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    ann, cat = peers(http, module_stack, 0, 1)
    await ann.join("rounds", "Ann")
    await cat.join("rounds", "Cat", role="spectator")
    await ann.ok("lead")
    too_long = await ann.request("set_rounds", bpm=60, beats=64, repeats=20)
    assert (too_long["type"], too_long["code"]) == ("error", "bad_rounds")
    await ann.ok("set_rounds", bpm=120, beats=4, repeats=2)
    start = await start_song(ann, [(ann, 0), (cat, 1)])
    period = 2 * SAMPLE_RATE
    burst = Burst(ann, 440, start, SAMPLE_RATE // 2)
    burst.start()
    try:
        # From a little before the song, so the first burst's onset is inside the window.
        first = first_frame(start) - 5 * OPUS_FRAME_SAMPLES
        audio = await heard(cat, first, 3 * period, "the listener's tap to cover three periods")
    finally:
        await burst.stop()
    # Frame q of a tap holds the decoded stream at q - lookahead (docs/protocol.md).
    origin = first - OPUS_LOOKAHEAD_SAMPLES
    found = onsets(audio, 440, 0.05)
    expected = [start + k * period - origin for k in range(3)]
    assert len(found) == 3, f"onsets at {found}, expected near {expected}"
    for got, want in zip(found, expected, strict=True):
        assert abs(got - want) <= SAMPLE_RATE // 200, f"onset at {got}, expected {want} (±5 ms)"
    # Nothing between the repeats.
    for k in range(3):
        gap = audio[expected[k] + period // 3 : expected[k] + period - period // 10]
        assert rms(band(gap, 440)) < 0.01
    await ann.close()
    await cat.close()


async def test_console_solo_and_rounds_survive_sigkill_of_the_owner(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    ann, bob, cat = peers(http, module_stack, 0, 1, 1)
    await ann.join("failover", "Ann")
    await bob.join("failover", "Bob")
    await cat.join("failover", "Cat", role="spectator")
    await ann.ok("lead")
    await ann.ok("set_gain", target=bob.singer, gain_db=-9)
    await ann.ok("solo", target=bob.singer, on=True)
    await ann.ok("set_rounds", bpm=120, beats=4, repeats=2)
    await ann.ok("set_leader_boost", boost_db=3)
    await cat.ok("set_mix", mix="solo")
    owner = module_stack.owner("failover")
    assert owner in module_stack.mixers
    version = int(cat.state()["version"])
    killed_ms = int(time.time() * 1000)
    module_stack.mixers[owner].kill()
    survivor = next(name for name in module_stack.mixers if name != owner)
    wait_until(
        lambda: module_stack.owner("failover") == survivor, 15, "the other mixer to take over"
    )
    # A command after the takeover is answered by the new owner, from the stored state.
    await ann.ok("set_leader_boost", boost_db=4)
    state = (await cat.wait(lambda m: m["type"] == "state" and m["version"] > version))["state"]
    members = {m["singer_id"]: m for m in state["members"]}
    assert members[bob.singer]["gain_db"] == -9.0 and members[bob.singer]["soloed"]
    assert members[cat.singer]["hears"] == "solo"
    assert state["song"]["rounds"] == {"bpm": 120.0, "beats": 4, "repeats": 2}
    assert state["song"]["leader_boost_db"] == 4.0
    # And the new owner mixes with them: the solo tap flows again for Cat.
    delay = int(members[cat.singer]["delay"])
    wait_until(
        lambda: newest_ms(module_stack.redis, keys.room_tap("failover", delay, "solo")) > killed_ms,
        10,
        "the new owner's solo tap",
    )
    # Restart the killed mixer for the other tests of this module.
    name = owner or ""
    again = module_stack.add_mixer(name)
    wait_until(
        lambda: heartbeat_pid(module_stack.redis, name) == again.proc.pid, 20, "the restarted mixer"
    )
    for peer in (ann, bob, cat):
        await peer.close()
