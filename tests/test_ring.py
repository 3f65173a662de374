"""The ring against a naive model keyed by absolute position, plus unit cases."""

from __future__ import annotations

import math
import random

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from common.constants import OCC_FRAME_SAMPLES
from mixer.ring import OccupancySnapshot, Ring, RingCounters, WriteStatus

FRAME = OCC_FRAME_SAMPLES


class Model:
    """The ring's meaning in plain Python: dicts keyed by absolute position."""

    def __init__(self, length: int, now: int) -> None:
        self.length = length
        self.cleared = now
        self.audio: dict[int, float] = {}
        self.count: dict[int, int] = {}
        self.counters = RingCounters()

    def window(self) -> range:
        return range(self.cleared - self.length, self.cleared)

    def clear_to(self, now: int) -> None:
        if now <= self.cleared:
            return
        self.cleared = now
        # Positions ahead of the old `cleared` were never written, so only
        # what fell out of the window has to go.
        low = now - self.length
        for p in [p for p in self.count if p < low]:
            del self.audio[p]
            del self.count[p]

    def write(self, start: int, samples: list[float], gain: float = 1.0) -> WriteStatus:
        n = len(samples)
        if n > self.length:
            self.counters.rejected_too_long += 1
            return WriteStatus.TOO_LONG
        if start + n > self.cleared:
            self.counters.rejected_future += 1
            return WriteStatus.FUTURE
        if start < self.cleared - self.length:
            self.counters.rejected_old += 1
            return WriteStatus.TOO_OLD
        if n == 0:
            return WriteStatus.OK
        for k, v in enumerate(samples):
            p = start + k
            self.audio[p] = self.audio.get(p, 0.0) + gain * v
            self.count[p] = self.count.get(p, 0) + 1
        self.counters.applied += 1
        return WriteStatus.OK

    def in_window(self, start: int, n: int) -> bool:
        return self.cleared - self.length <= start and start + n <= self.cleared

    def raw(self, start: int, n: int) -> tuple[list[float], list[int]]:
        positions = range(start, start + n)
        return [self.audio.get(p, 0.0) for p in positions], [
            self.count.get(p, 0) for p in positions
        ]

    def normalised(self, start: int, n: int) -> list[float]:
        audio, count = self.raw(start, n)
        return [a * math.sqrt(3.0 / (c + 2)) for a, c in zip(audio, count, strict=True)]

    def flags(self) -> list[bool]:
        flags = [False] * (self.length // FRAME)
        for p in self.window():
            if self.count.get(p, 0) > 0:
                flags[(p % self.length) // FRAME] = True
        return flags


def chunk(seed: int, n: int) -> npt.NDArray[np.float32]:
    rng = random.Random(seed)
    return np.array([rng.uniform(-1.0, 1.0) for _ in range(n)], dtype=np.float32)


def as_floats(array: npt.NDArray[np.float32]) -> list[float]:
    return [float(v) for v in array]


class RingMachine(RuleBasedStateMachine):
    """Random clears, writes and reads on a small ring, checked after every step."""

    ring: Ring
    model: Model

    def __init__(self) -> None:
        super().__init__()
        self.started = False

    @initialize(
        frames=st.sampled_from([1, 3, 5]),
        now=st.integers(min_value=-(10**6), max_value=10**12),
    )
    def start(self, frames: int, now: int) -> None:
        self.ring = Ring(frames * FRAME, now)
        self.model = Model(frames * FRAME, now)
        self.started = True

    def _relative_start(self, n: int, back: int) -> int:
        # back < 0 reaches into the future; n + back > length is older than one lap.
        return self.model.cleared - n - back

    @precondition(lambda self: self.started)
    @rule(step=st.integers(min_value=-20, max_value=200))
    def clear_small(self, step: int) -> None:
        now = self.model.cleared + step
        self.ring.clear_to(now)
        self.model.clear_to(now)

    @precondition(lambda self: self.started)
    @rule(laps=st.floats(min_value=0.5, max_value=3.0), extra=st.integers(-1, 1))
    def clear_large(self, laps: float, extra: int) -> None:
        now = self.model.cleared + int(laps * self.model.length) + extra
        self.ring.clear_to(now)
        self.model.clear_to(now)

    @precondition(lambda self: self.started)
    @rule(
        data=st.data(),
        seed=st.integers(min_value=0, max_value=2**32),
    )
    def write(self, data: st.DataObject, seed: int) -> None:
        gain = data.draw(st.sampled_from([1.0, 0.5, 0.25, 2.0]), label="gain")
        length = self.model.length
        n = data.draw(
            st.one_of(
                st.integers(min_value=0, max_value=length + 10),
                st.sampled_from([0, 1, FRAME - 1, FRAME, FRAME + 1, length, length + 1]),
            ),
            label="n",
        )
        back = data.draw(
            st.one_of(
                st.integers(min_value=-30, max_value=length + 30),
                st.sampled_from([-1, 0, length - n, length - n + 1]),
            ),
            label="back",
        )
        start = self._relative_start(n, back)
        samples = chunk(seed, n)
        expected = self.model.write(start, as_floats(samples), gain)
        assert self.ring.write(start, samples, gain) is expected

    @precondition(lambda self: self.started)
    @rule(data=st.data())
    def read_repeats(self, data: st.DataObject) -> None:
        length = self.model.length
        n = data.draw(st.integers(min_value=0, max_value=length), label="n")
        start = self._relative_start(n, data.draw(st.integers(0, length - n), label="back"))
        offsets = data.draw(st.lists(st.integers(0, 2 * length), max_size=4), label="offsets")
        offsets = [0, *offsets]
        out = np.full(n, np.nan, dtype=np.float32)
        self.ring.read_repeats(start, out, offsets)
        low = self.model.cleared - length
        audio, count = [0.0] * n, [0] * n
        for offset in offsets:
            for i in range(n):
                p = start + i - offset
                if p >= low:
                    audio[i] += self.model.audio.get(p, 0.0)
                    count[i] += self.model.count.get(p, 0)
        want = [a * math.sqrt(3.0 / (c + 2)) for a, c in zip(audio, count, strict=True)]
        assert np.allclose(out, want, rtol=1e-5, atol=1e-5)

    @precondition(lambda self: self.started)
    @rule(data=st.data(), raw=st.booleans())
    def read(self, data: st.DataObject, raw: bool) -> None:
        length = self.model.length
        n = data.draw(st.integers(min_value=0, max_value=length + 2), label="n")
        back = data.draw(
            st.one_of(
                st.integers(min_value=-3, max_value=length + 3),
                st.sampled_from([-1, 0, length - n, length - n + 1]),
            ),
            label="back",
        )
        start = self._relative_start(n, back)
        if not self.model.in_window(start, n):
            with pytest.raises(ValueError, match="not inside the ring window"):
                if raw:
                    self.ring.read_raw(start, n)
                else:
                    self.ring.read(start, np.empty(n, dtype=np.float32))
            return
        if raw:
            audio, count = self.ring.read_raw(start, n)
            want_audio, want_count = self.model.raw(start, n)
            assert count.tolist() == want_count
            assert np.allclose(audio, want_audio, rtol=1e-5, atol=1e-5)
        else:
            out = np.full(n, np.nan, dtype=np.float32)
            self.ring.read(start, out)
            assert np.allclose(out, self.model.normalised(start, n), rtol=1e-5, atol=1e-5)

    @invariant()
    def matches_model(self) -> None:
        if not self.started:
            return
        ring, model = self.ring, self.model
        assert ring.cleared == model.cleared
        assert ring.counters == model.counters
        window_start = model.cleared - model.length
        audio, count = ring.read_raw(window_start, model.length)
        want_audio, want_count = model.raw(window_start, model.length)
        assert count.tolist() == want_count
        assert np.allclose(audio, want_audio, rtol=1e-5, atol=1e-5)

        flags = model.flags()
        assert ring.occupied_flags().tolist() == flags
        snap = ring.occupancy_snapshot()
        assert snap.clock == model.cleared
        assert snap.ring_samples == model.length
        assert snap.frame_samples == FRAME
        assert snap.occupied == sum(flags)
        bits = np.unpackbits(np.frombuffer(snap.bitmap, dtype=np.uint8)).tolist()
        assert len(bits) == 8 * math.ceil(len(flags) / 8)
        assert bits == [int(f) for f in flags] + [0] * (len(bits) - len(flags))


RingMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRingMachine = RingMachine.TestCase


@pytest.mark.parametrize("length", [0, -FRAME, 1, FRAME - 1, FRAME + 1, 48_000 + 64])
def test_constructor_rejects_bad_lengths(length: int) -> None:
    with pytest.raises(ValueError, match=f"positive multiple of {FRAME} samples, got {length}"):
        Ring(length, 0)


def test_new_ring_is_silent_and_cleared_to_now() -> None:
    ring = Ring(3 * FRAME, 1_000)
    assert ring.cleared == 1_000
    audio, count = ring.read_raw(1_000 - 3 * FRAME, 3 * FRAME)
    assert not audio.any()
    assert not count.any()
    assert ring.occupancy_snapshot().occupied == 0


def test_write_that_wraps_lands_in_two_slices() -> None:
    length = 3 * FRAME
    ring = Ring(length, 1_000)
    start = 684  # ring index 300: 84 samples to the end, 16 from index 0
    assert start % length == 300
    samples = chunk(1, 100)
    assert ring.write(start, samples) is WriteStatus.OK
    audio, count = ring.read_raw(start, 100)
    assert np.array_equal(audio, samples)
    assert count.tolist() == [1] * 100
    assert ring.occupied_flags().tolist() == [True, False, True]
    before, _ = ring.read_raw(start - 10, 10)
    after, _ = ring.read_raw(start + 100, 10)
    assert not before.any()
    assert not after.any()


def test_normalisation_for_one_two_three_singers() -> None:
    ring = Ring(FRAME, 1_000)
    ones = np.ones(3, dtype=np.float32)
    ring.write(997, ones)  # counts 1, 2, 3 across the three samples
    ring.write(998, ones[:2])
    ring.write(999, ones[:1])
    out = np.empty(3, dtype=np.float32)
    ring.read(997, out)
    expected = [1.0 * math.sqrt(3 / 3), 2.0 * math.sqrt(3 / 4), 3.0 * math.sqrt(3 / 5)]
    assert np.allclose(out, expected, rtol=1e-6)
    assert out[0] == 1.0  # one singer passes through unchanged


def test_read_at_exact_window_edges() -> None:
    length = 3 * FRAME
    ring = Ring(length, 1_000)
    ring.write(1_000 - length, np.full(length, 0.5, dtype=np.float32))
    whole = np.empty(length, dtype=np.float32)
    ring.read(1_000 - length, whole)
    assert np.allclose(whole, 0.5)
    last = np.empty(1, dtype=np.float32)
    ring.read(999, last)
    ring.read(1_000, np.empty(0, dtype=np.float32))
    for start, n in [(1_000 - length - 1, 1), (999, 2), (1_000 - length, length + 1)]:
        with pytest.raises(ValueError, match="not inside the ring window"):
            ring.read(start, np.empty(n, dtype=np.float32))
        with pytest.raises(ValueError, match="not inside the ring window"):
            ring.read_raw(start, n)


def test_write_rejections_in_order_and_counted() -> None:
    length = 3 * FRAME
    ring = Ring(length, 1_000)
    too_long = np.zeros(length + 1, dtype=np.float32)
    assert ring.write(5_000, too_long) is WriteStatus.TOO_LONG  # also in the future
    assert ring.write(1_000 - 1, np.zeros(2, dtype=np.float32)) is WriteStatus.FUTURE
    assert ring.write(1_000 - length - 1, np.zeros(1, dtype=np.float32)) is WriteStatus.TOO_OLD
    assert ring.write(1_000, np.zeros(0, dtype=np.float32)) is WriteStatus.OK
    assert ring.counters == RingCounters(
        applied=0, rejected_future=1, rejected_old=1, rejected_too_long=1
    )
    assert ring.occupancy_snapshot().occupied == 0


def test_write_rejects_wrong_dtype_and_shape() -> None:
    ring = Ring(FRAME, 1_000)
    with pytest.raises(ValueError, match="1-D float32"):
        ring.write(900, np.zeros(4, dtype=np.float64))
    with pytest.raises(ValueError, match="1-D float32"):
        ring.write(900, np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="1-D float32"):
        ring.read(900, np.zeros(4, dtype=np.float64))


def test_clear_backwards_is_a_no_op() -> None:
    ring = Ring(FRAME, 1_000)
    ring.write(990, np.ones(10, dtype=np.float32))
    ring.clear_to(500)
    assert ring.cleared == 1_000
    _, count = ring.read_raw(990, 10)
    assert count.tolist() == [1] * 10


def test_partial_clear_keeps_frame_only_while_it_holds_audio() -> None:
    ring = Ring(2 * FRAME, 0)  # window [-256, 0); position 0 is ring index 0
    ring.write(-256 + 100, np.ones(10, dtype=np.float32))  # index 100..109, frame 0
    ring.clear_to(50)  # zeroes index 0..49: frame 0 still holds audio
    assert ring.occupied_flags().tolist() == [True, False]
    ring.clear_to(110)  # zeroes index 50..109: frame 0 is now empty
    assert ring.occupied_flags().tolist() == [False, False]


def test_snapshot_maps_ring_index_to_absolute_position() -> None:
    length = 3 * FRAME
    ring = Ring(length, 1_000)
    ring.write(900, np.ones(1, dtype=np.float32))
    snap = ring.occupancy_snapshot()
    assert snap == OccupancySnapshot(
        clock=1_000,
        ring_samples=length,
        frame_samples=FRAME,
        bitmap=bytes([0b0100_0000]),
        occupied=1,
    )
    index = 900 % length
    assert index // FRAME == 1
    # The documented inverse: the unique p in [clock - ring_samples, clock) with p % ring == i.
    (p,) = [
        p
        for p in range(snap.clock - snap.ring_samples, snap.clock)
        if p % snap.ring_samples == index
    ]
    assert p == 900


def test_restore_sets_audio_counts_and_occupancy_across_the_wrap() -> None:
    length = 8 * FRAME
    source = Ring(length, 10 * length + 100)
    rng = random.Random(7)
    for start in (10 * length - 3 * FRAME + 5, 10 * length + 40):
        source.write(start, chunk(rng.randrange(2**32), FRAME + 17))
    start = source.cleared - length + 60
    audio, counts = source.read_raw(start, source.cleared - start)
    target = Ring(length, source.cleared)
    target.restore(start, audio, counts)
    again = target.read_raw(start, source.cleared - start)
    assert np.array_equal(again[0], audio) and np.array_equal(again[1], counts)
    assert target.occupied_flags().tolist() == source.occupied_flags().tolist()
    with pytest.raises(ValueError, match="not inside the ring window"):
        target.restore(target.cleared - 5, audio[:10], counts[:10])
