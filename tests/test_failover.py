"""Seamless failover: after SIGKILL of a room's owner, the new owner carries on the ring.

Real redis-server, two real mixers, a simulated gateway. The last bucket
must hear, from the new owner, the leader's audio sung before the kill (it
was in the old owner's ring only; the checkpoint and the replayed input
bring it back), from the first frame still playable on, with no gap.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import redis

from common import keys
from common.clock import now_samples
from common.commands import JoinBucket, Lead, SetLeaderBoost, Start
from common.constants import SAMPLE_RATE
from tests.simgateway import SimGateway, Singer, sing_until, tone
from tests.support import Process, processes, wait_until


def test_the_last_bucket_hears_the_audio_sung_before_the_kill(
    redis_url: str, output_dir: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    sim = SimGateway(client)
    env = {"REDIS_URL": redis_url}
    with processes(output_dir) as started:
        mixers = {
            name: Process(["mixer"], {**env, "BB_MIXER_ID": name}, output_dir, name)
            for name in ("f1", "f2")
        }
        started.extend(mixers.values())
        wait_until(lambda: client.zcard(keys.MIXERS) == 2, 10, "both mixers' heartbeats")
        sim.create_room("relay", bucket_spacing_s=1.5)  # buckets at 1.5, 3, 4.5, 6, 7.5 ... s
        wait_until(lambda: sim.owner("relay") in mixers, 10, "an owner")
        assert sim.join("relay", "a", "Ann").ok and sim.join("relay", "b", "Bob").ok
        for cmd in (Lead(), SetLeaderBoost(boost_db=0.0)):
            assert sim.command("relay", "a", cmd).ok
        assert sim.command("relay", "b", JoinBucket(bucket=4)).ok
        assert sim.command("relay", "a", Start()).ok
        start = int(sim.state("relay")["song"]["start_pos"])
        d_lead, d_last = sim.member_delay("relay", "a"), sim.member_delay("relay", "b")
        assert d_last - d_lead == 6 * SAMPLE_RATE
        leader = Singer(sim, "relay", "a", 440, d_lead, start)

        def sing_for(seconds: float) -> None:
            """The scenario: the leader sings on for ``seconds``, at real-time pace."""
            end = time.monotonic() + seconds
            sing_until([leader], lambda: time.monotonic() >= end, seconds + 5, "the time sung")

        sing_for(6.0)
        owner = sim.owner("relay")
        assert owner is not None
        killed_at = now_samples()
        sung_before_kill = leader.next_pos
        mixers[owner].kill()
        survivor = next(name for name in mixers if name != owner)
        # The leader keeps singing through the takeover (gateways keep pushing).
        sing_until([leader], lambda: sim.owner("relay") == survivor, 15, "the survivor's lease")
        assert sim.owner("relay") == survivor
        # Until the last bucket's tap has emitted everything sung before the kill.
        emitted_until = sung_before_kill + d_last - 1 * SAMPLE_RATE
        sing_for(max(0.0, (emitted_until - now_samples()) / SAMPLE_RATE) + 1.0)

        windows = [w for w in sim.taps("relay", d_last) if w.clock > killed_at]
        assert windows, "the new owner emitted nothing for the last bucket"
        first = min(w.start for w in windows)
        # It resumed no later than the first frame still playable when it took over.
        last_end = max(w.start + len(w.samples) for w in windows)
        assert last_end >= sung_before_kill
        heard = np.zeros(last_end - first, dtype=np.float32)
        covered = np.zeros(last_end - first, dtype=bool)
        for w in windows:
            heard[w.start - first : w.start - first + len(w.samples)] = w.samples
            covered[w.start - first : w.start - first + len(w.samples)] = True
        assert covered.all(), "the new owner's windows have a gap"
        # The leader's voice from before the kill, sample-exact but for float16 storage.
        lo = max(first, start)
        hi = sung_before_kill
        assert hi - lo >= 2 * SAMPLE_RATE, (lo, hi)
        np.testing.assert_allclose(
            heard[lo - first : hi - first], tone(440, lo, hi - lo), rtol=0, atol=2e-3
        )
        # And the audio sung during the takeover too (replayed from the input stream).
        assert float(np.abs(heard[hi - first :]).max()) > 0.25
        assert mixers[survivor].alive()
    client.close()
