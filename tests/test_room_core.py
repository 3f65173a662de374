"""The room core (gains, solo, rounds) against a naive model of what every tap must carry.

The model keeps no ring: a dense array over every absolute position of the
run holds what each singer's voice added there (times the gain it had when
written), once for the full mix and once for the solo mix (written only
while someone is soloed, forgotten when nobody is). A tap frame at ``p`` must
be the sum over the repeats ``k`` of the model at ``p - k * period`` (inside
the ring's window when it is read), times ``sqrt(3 / (voices + 2))``. Every
sample of every tap output is checked.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE
from mixer.room import ApplyStatus, Role, RoomConfig, RoomMixer, RoomState, Tap
from mixer.roomstate import Rounds

FRAME = OPUS_FRAME_SAMPLES
T0 = 1_700_000_000 * SAMPLE_RATE
# Small enough for a dense model: a 5.84 s ring, buckets at 0.27, 0.54, 0.81 s, lead 20 ms.
CONFIG = RoomConfig(
    ring_samples=2190 * 128,
    lead_samples=FRAME,
    bucket_spacing=12_960,
    n_buckets=3,
    capacity=10,
)
SINGERS = ("a", "b", "c")
HORIZON = 3_000_000
"""Positions the model covers from ``T0 - ring``: far more than a run advances."""
GAINS_DB = (-math.inf, -12.0, -6.0, 0.0, 3.5)


class Model:
    """What the rings should hold, by absolute position, with no wrap-around."""

    def __init__(self, now: int) -> None:
        self.base = now - CONFIG.ring_samples
        self.audio = {mix: np.zeros(HORIZON) for mix in ("full", "solo")}
        self.count = {mix: np.zeros(HORIZON, dtype=np.int64) for mix in ("full", "solo")}

    def add(self, mix: str, start: int, samples: npt.NDArray[np.float32], gain: float) -> None:
        i = start - self.base
        self.audio[mix][i : i + len(samples)] += gain * samples.astype(np.float64)
        self.count[mix][i : i + len(samples)] += 1

    def forget_solo(self) -> None:
        self.audio["solo"][:] = 0.0
        self.count["solo"][:] = 0

    def tap(
        self, mix: str, start: int, n: int, now: int, offsets: tuple[int, ...]
    ) -> npt.NDArray[np.float64]:
        """The tap's expected samples for [start, start + n), read at time ``now``."""
        low = now - CONFIG.ring_samples
        audio = np.zeros(n)
        count = np.zeros(n, dtype=np.int64)
        positions = np.arange(start, start + n)
        for offset in offsets:
            source = positions - offset
            inside = source >= low
            index = source[inside] - self.base
            audio[inside] += self.audio[mix][index]
            count[inside] += self.count[mix][index]
        result: npt.NDArray[np.float64] = audio * np.sqrt(3.0 / (count + 2.0))
        return result


class RoomCoreMachine(RuleBasedStateMachine):
    """Singers sing under random faders, solos and mixes; ticks emit; the model checks."""

    def __init__(self) -> None:
        super().__init__()
        self.started = False

    @initialize(
        bpm=st.sampled_from([200.0, 240.0, 300.0]),
        beats=st.sampled_from([1, 2]),
        repeats=st.integers(min_value=0, max_value=3),
        boost=st.sampled_from([0.0, 6.0]),
    )
    def start(self, bpm: float, beats: int, repeats: int, boost: float) -> None:
        self.now = T0
        state = RoomState(CONFIG)
        for i, singer in enumerate(SINGERS):
            state.join(singer, singer.upper(), Role.SINGER, T0 + i)
        state.request_lead("a", T0)
        state.set_leader_boost("a", boost)
        state.set_rounds("a", Rounds(bpm=bpm, beats=beats, repeats=repeats))
        state.start_song("a", T0)
        self.state = state
        self.offsets = state.song.rounds.offsets()
        self.mixer = RoomMixer("core", state, T0)
        self.model = Model(T0)
        self.song_start = state.song.start_pos or 0
        self.next_pos = {s: self.song_start for s in SINGERS}
        self.rng = np.random.default_rng(repeats * 1000 + beats)
        self.emitted = 0
        self.started = True

    # --- console --------------------------------------------------------------------------

    @precondition(lambda self: self.started)
    @rule(who_=st.sampled_from(SINGERS), gain_db=st.sampled_from(GAINS_DB))
    def set_gain(self, who_: str, gain_db: float) -> None:
        self.state.set_gain("a", who_, gain_db)

    @precondition(lambda self: self.started)
    @rule(who_=st.sampled_from(SINGERS), on=st.booleans())
    def solo(self, who_: str, on: bool) -> None:
        self.state.solo("a", who_, on)

    @precondition(lambda self: self.started)
    @rule(who=st.sampled_from(SINGERS), mix=st.sampled_from(["full", "solo"]))
    def set_mix(self, who: str, mix: str) -> None:
        self.state.set_mix(who, mix)  # type: ignore[arg-type]

    # --- audio ----------------------------------------------------------------------------

    @precondition(lambda self: self.started)
    @rule(singer=st.sampled_from(SINGERS), frames=st.integers(1, 8), skip=st.integers(0, 3))
    def sing(self, singer: str, frames: int, skip: int) -> None:
        member = self.state.members[singer]
        n = frames * FRAME // 2
        start = self.next_pos[singer] + skip * 480
        heard_up_to = self.now - member.delay
        start = max(start, self.now - CONFIG.ring_samples + FRAME)
        if start + n > heard_up_to:
            return  # they have not heard that far yet
        samples = self.rng.uniform(-0.5, 0.5, n).astype(np.float32)
        self._sync_solo()
        status = self.mixer.apply(singer, start, samples, self.now)
        assert (self.mixer.solo_ring is not None) == self.state.soloing
        assert status in (ApplyStatus.OK, ApplyStatus.LATE), status
        self.next_pos[singer] = start + n
        gain = self.state.gain(member)
        if gain > 0:
            self.model.add("full", start, samples, gain)
            if member.soloed:
                self.model.add("solo", start, samples, gain)

    @precondition(lambda self: self.started)
    @rule(frames=st.integers(0, 12), extra=st.integers(0, FRAME - 1))
    def tick(self, frames: int, extra: int) -> None:
        self.now += frames * FRAME + extra
        self._sync_solo()
        outputs = self.mixer.tick(self.now)
        # The second ring exists exactly while someone solos (checked where the mixer looks).
        assert (self.mixer.solo_ring is not None) == self.state.soloing
        expected_taps = {
            Tap(m.delay, "solo" if self.state.soloing and m.mix == "solo" else "full")
            for m in self.state.members.values()
        }
        for out in outputs:
            assert out.tap in expected_taps
            assert out.start % FRAME == 0 and len(out.samples) % FRAME == 0
            want = self.model.tap(out.tap.mix, out.start, len(out.samples), self.now, self.offsets)
            np.testing.assert_allclose(out.samples, want, rtol=1e-5, atol=1e-6)
            self.emitted += len(out.samples)

    def _sync_solo(self) -> None:
        # The solo mix exists only while someone solos: the mixer drops it at its next
        # apply or tick after the last solo ends, and starts a silent one after that.
        if not self.state.soloing:
            self.model.forget_solo()


RoomCoreMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRoomCoreMachine = RoomCoreMachine.TestCase
