"""The recorder, end to end: real redis-server, a real mixer, real recorder processes,
singers simulated as a gateway sends their chunks (tests/simgateway.py).

What the recording must be: the tap behind the last bucket, sample for sample
(each voice at the song position it was sung, at the auto-gain
``sqrt(3 / (n + 2))`` of the n voices sounding there), plus the song's backing
track at its positions; FLAC and Ogg Opus files of the song's length; with stems,
each singer alone at the positions they sang.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from common import keys, records
from common.clock import now_samples
from common.commands import (
    AddTrack,
    JoinBucket,
    Lead,
    SetLeaderBoost,
    SetRecording,
    SetRounds,
    Start,
    Stop,
)
from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE
from common.records import Track
from recorder.service import RecorderStatus
from tests.simgateway import CHUNK, SimGateway, Voice, expected_mix, sing_until, tone
from tests.support import Stack, running_stack, wait_until

ROOM = "rec"
SPACING_S = 1.5


def expected_stem(voice: Voice, start: int, n: int) -> npt.NDArray[np.float32]:
    """A singer's stem for song positions [start, start + n): their voice alone, as sung."""
    alone = np.zeros(n, dtype=np.float32)
    lo, hi = max(voice.lo, start), min(voice.hi, start + n)
    alone[lo - start : hi - start] = tone(voice.freq, lo, hi - lo)
    return alone


def room_with_three_buckets(sim: SimGateway) -> dict[str, int]:
    for singer, name in (("a", "Ann Lee"), ("b", "Bob"), ("c", "Cy")):
        assert sim.join(ROOM, singer, name).ok
    for cmd in (Lead(), SetLeaderBoost(boost_db=0.0)):
        assert sim.command(ROOM, "a", cmd).ok
    delays = {s: sim.member_delay(ROOM, s) for s in "abc"}
    spacing = round(SPACING_S * SAMPLE_RATE)
    assert sorted(delays.values()) == [spacing, 2 * spacing, 3 * spacing]
    return delays


def recordings(root: Path) -> list[Path]:
    """The mix FLAC of each finished recording (its sidecar is written last)."""
    return sorted(p.with_suffix(".flac") for p in (root / ROOM).glob("*.json"))


@contextlib.contextmanager
def recorder_stack(
    redis_url: str, output_dir: Path, recorders: int = 1
) -> Iterator[tuple[Stack, SimGateway]]:
    """One mixer (``m1``) and ``recorders`` recorders (``r1``...) on ``redis_url``, a simulated
    gateway, and the room ``ROOM`` of 4 buckets, owned by the mixer."""
    with running_stack(redis_url, output_dir, gateways=0, recorders=recorders) as here:
        sim = SimGateway(here.redis)
        sim.create_room(ROOM, bucket_spacing_s=SPACING_S, n_buckets=4)
        wait_until(lambda: sim.owner(ROOM) == "m1", 10, "an owner")
        yield here, sim


def test_three_buckets_and_a_track_recorded_as_the_last_bucket_hears_them(
    backend_url: str, output_dir: Path
) -> None:
    """On one Redis and on a Redis Cluster."""
    with recorder_stack(backend_url, output_dir) as (here, sim):
        client, root = here.redis, here.recordings
        delays = room_with_three_buckets(sim)
        # A 4 s backing track, stored as the gateway stores an upload (Ogg Opus).
        track_len = 4 * SAMPLE_RATE
        ogg = io.BytesIO()
        sf.write(ogg, tone(220, 0, track_len, 0.2), SAMPLE_RATE, format="OGG", subtype="OPUS")
        track = Track(id="t-0123456789ab", name="backing", samples=track_len)
        client.set(keys.room_track(ROOM, track.id), ogg.getvalue())
        assert sim.command(ROOM, "a", AddTrack(track=track)).ok
        assert sim.command(ROOM, "a", SetRecording(stems=True)).ok
        assert sim.command(ROOM, "a", Start()).ok
        start = int(sim.state(ROOM)["song"]["start_pos"])
        tenth = CHUNK  # 100 ms
        voices = [
            Voice(sim, ROOM, "a", 440, delays["a"], start + 4 * tenth, start + 30 * tenth),
            Voice(sim, ROOM, "b", 660, delays["b"], start + 10 * tenth, start + 34 * tenth),
            Voice(sim, ROOM, "c", 990, delays["c"], start + 16 * tenth, start + 38 * tenth),
        ]
        # The song ends by itself with its track; the recorder then writes its files.
        sing_until(voices, lambda: recordings(root), 40)
        wait_until(lambda: client.get(keys.room_reclease(ROOM)) is None, 5, "the lease's release")

    [flac] = recordings(root)
    assert flac.name.startswith(f"{ROOM}-song1-") and flac.name.endswith("-Ann-Lee.flac")
    sidecar = json.loads(flac.with_suffix(".json").read_text())
    assert (sidecar["start_pos"], sidecar["end_pos"]) == (start, start + track_len)
    recorded, rate = sf.read(flac, dtype="float32")
    assert rate == SAMPLE_RATE and recorded.ndim == 1
    assert abs(len(recorded) - track_len) <= OPUS_FRAME_SAMPLES
    backing, _ = sf.read(io.BytesIO(ogg.getvalue()), dtype="float32")
    want = expected_mix(voices, start, track_len) + backing[:track_len]
    # Sample-exact (16-bit FLAC): a voice 1 ms (48 samples) off would miss by ~0.1.
    np.testing.assert_allclose(recorded[:track_len], want, rtol=0, atol=2e-3)
    assert all(v.next_pos == v.hi for v in voices)  # everything was sung
    listened, rate = sf.read(flac.with_suffix(".ogg"), dtype="float32")
    assert rate == SAMPLE_RATE and abs(len(listened) - track_len) <= OPUS_FRAME_SAMPLES
    rms = float(np.sqrt(np.mean(want.astype(np.float64) ** 2)))
    assert abs(float(np.sqrt(np.mean(listened.astype(np.float64) ** 2))) - rms) < 0.1 * rms
    # The stems: each singer alone, raw, at the positions they sang; the track alone.
    stems = sidecar["stems"]
    assert [(s["singer"], s["name"]) for s in stems] == [
        ("a", "Ann Lee"),
        ("b", "Bob"),
        ("c", "Cy"),
        (None, "Backing track"),
    ]
    for voice, stem in zip(voices, stems, strict=False):
        alone, _ = sf.read(flac.parent / stem["file"], dtype="float32")
        assert len(alone) == len(recorded)
        np.testing.assert_allclose(
            alone[:track_len], expected_stem(voice, start, track_len), atol=2e-4
        )
    backing_stem, _ = sf.read(flac.parent / stems[3]["file"], dtype="float32")
    np.testing.assert_allclose(backing_stem[:track_len], backing[:track_len], atol=2e-4)
    project = (flac.parent / sidecar["lof"]).read_text()
    assert all(s["file"] in project for s in stems)
    assert (flac.parent / sidecar["rpp"]).read_text().count("<SOURCE FLAC") == 4


def test_a_killed_recorder_is_replaced_and_the_files_stay_whole(
    redis_url: str, output_dir: Path
) -> None:
    with recorder_stack(redis_url, output_dir, recorders=2) as (here, sim):
        recorders = here.recorders
        client, root = here.redis, here.recordings
        delays = room_with_three_buckets(sim)
        assert sim.command(ROOM, "a", SetRecording(stems=True)).ok
        assert sim.command(ROOM, "a", Start()).ok
        start = int(sim.state(ROOM)["song"]["start_pos"])
        forever = 3600 * SAMPLE_RATE
        voices = [
            Voice(sim, ROOM, s, f, delays[s], start + 2 * CHUNK, start + forever)
            for s, f in (("a", 440), ("b", 660), ("c", 990))
        ]

        def take_samples() -> int:
            mix = (root / ".takes").glob(f"{ROOM}-song1-{start}.pcm")
            return sum(p.stat().st_size for p in mix) // 2

        sing_until(voices, lambda: take_samples() >= 2 * SAMPLE_RATE, 30)
        raw: Any = client.get(keys.room_reclease(ROOM))
        holder = bytes(raw or b"").decode()
        assert holder in recorders
        killed = time.monotonic()
        recorders[holder].kill()
        survivor = next(rid for rid in recorders if rid != holder)
        sing_until(voices, lambda: client.get(keys.room_reclease(ROOM)) == survivor.encode(), 15)
        takeover_s = time.monotonic() - killed
        sing_until(voices, lambda: time.monotonic() > killed + 4, 10)
        assert sim.command(ROOM, "a", Stop()).ok
        end = int(sim.state(ROOM)["song"]["end_pos"])
        sing_until(voices, lambda: recordings(root), 30)
        assert recorders[survivor].alive()

    [flac] = recordings(root)
    recorded, rate = sf.read(flac, dtype="float32")
    assert rate == SAMPLE_RATE and abs(len(recorded) - (end - start)) <= OPUS_FRAME_SAMPLES
    want = expected_mix(voices, start, end - start)
    wrong = np.abs(recorded[: end - start] - want) > 2e-3
    gap = int(np.count_nonzero(wrong))
    # Whatever is not sample-exact is silence the takeover lost, and no more than it took.
    assert np.all(np.abs(recorded[: end - start][wrong]) < 1e-4)
    assert gap <= takeover_s * SAMPLE_RATE, (gap, takeover_s)
    listened, _ = sf.read(flac.with_suffix(".ogg"), dtype="float32")
    assert abs(len(listened) - (end - start)) <= OPUS_FRAME_SAMPLES
    # The stems too: each singer alone; what the takeover lost is silence, no more than it took.
    stems = json.loads(flac.with_suffix(".json").read_text())["stems"]
    assert [s["singer"] for s in stems] == ["a", "b", "c"]
    stem_gaps = []
    for voice, stem in zip(voices, stems, strict=True):
        alone, _ = sf.read(flac.parent / stem["file"], dtype="float32")
        assert len(alone) == len(recorded)
        off = np.abs(alone[: end - start] - expected_stem(voice, start, end - start)) > 2e-4
        assert np.all(np.abs(alone[: end - start][off]) < 1e-4)
        stem_gaps.append(int(np.count_nonzero(off)))
    assert max(stem_gaps) <= takeover_s * SAMPLE_RATE, (stem_gaps, takeover_s)
    assert not list((root / ".takes").glob("*.pcm")), "the take was not cleaned up"
    (output_dir / "takeover.json").write_text(
        json.dumps(
            {
                "takeover_s": takeover_s,
                "gap_samples": gap,
                "stem_gap_samples": stem_gaps,
                "song_s": (end - start) / SAMPLE_RATE,
            }
        )
    )
    print(f"takeover {takeover_s:.2f} s, gap {gap / SAMPLE_RATE * 1000:.0f} ms, stems {stem_gaps}")


def test_back_to_back_songs_each_end_where_they_ended(redis_url: str, output_dir: Path) -> None:
    """The leader stops and starts the next song at once. The later buckets are still
    singing the first song's end: it is in the first recording, which ends at the
    first song's end (not at the second's start), and the second is recorded too,
    its stems whole from its first chunk (its take starts while the first one's
    files are still being written)."""
    with recorder_stack(redis_url, output_dir) as (here, sim):
        root = here.recordings
        delays = room_with_three_buckets(sim)
        assert sim.command(ROOM, "a", SetRecording(stems=True)).ok
        songs: list[tuple[int, int, list[Voice]]] = []
        everyone: list[Voice] = []  # all sing on: the later buckets are behind the leader
        for length in (40 * CHUNK, 20 * CHUNK):
            assert sim.command(ROOM, "a", Start()).ok
            start = int(sim.state(ROOM)["song"]["start_pos"])
            voices = [
                Voice(sim, ROOM, s, f, delays[s], start + lo * CHUNK, start + length)
                for s, f, lo in (("a", 440, 0), ("b", 660, 3), ("c", 990, 6))
            ]
            everyone += voices
            sing_until(everyone, voices[0].sung, 30)  # the leader's part
            assert sim.command(ROOM, "a", Stop()).ok
            end = int(sim.state(ROOM)["song"]["end_pos"])
            assert end >= start + length
            songs.append((start, end, voices))
        sing_until(everyone, lambda: len(recordings(root)) == 2, 40)
        assert all(v.next_pos == v.hi for v in everyone)  # everything was sung

    for flac, (start, end, voices) in zip(recordings(root), songs, strict=True):
        sidecar = json.loads(flac.with_suffix(".json").read_text())
        assert (sidecar["start_pos"], sidecar["end_pos"]) == (start, end)
        recorded, _ = sf.read(flac, dtype="float32")
        assert len(recorded) == end - start
        want = expected_mix(voices, start, end - start)
        np.testing.assert_allclose(recorded, want, rtol=0, atol=2e-3)
        for voice, stem in zip(voices, sidecar["stems"], strict=True):
            alone, _ = sf.read(flac.parent / stem["file"], dtype="float32")
            np.testing.assert_allclose(alone, expected_stem(voice, start, end - start), atol=2e-4)


def test_a_tap_the_mixer_refuses_falls_back_to_the_last_buckets(
    redis_url: str, output_dir: Path
) -> None:
    """A singer in the last bucket is heard one spacing behind it, but rounds that fill the
    ring leave no room for that tap: the mixer refuses it, and the recorder takes the last
    bucket's tap (which the rounds always leave room for) instead of recording silence.
    It holds everyone that bucket hears: all but the singer in it."""
    with recorder_stack(redis_url, output_dir) as (here, sim):
        client, root = here.redis, here.recordings
        delays = room_with_three_buckets(sim)
        assert sim.command(ROOM, "c", JoinBucket(bucket=3)).ok
        delays["c"] = sim.member_delay(ROOM, "c")
        assert delays["c"] == 4 * round(SPACING_S * SAMPLE_RATE)
        # Two repeats 57 s apart: 114 s of a 120 s ring. The last bucket (6 s) still fits;
        # the 7.5 s that hears its singer does not.
        assert sim.command(ROOM, "a", SetRounds(bpm=60, beats=57, repeats=2)).ok
        assert sim.command(ROOM, "a", Start()).ok
        start = int(sim.state(ROOM)["song"]["start_pos"])
        voices = [
            Voice(sim, ROOM, s, f, delays[s], start + lo * CHUNK, start + (lo + 30) * CHUNK)
            for s, f, lo in (("a", 440, 2), ("b", 660, 5), ("c", 990, 8))
        ]
        sing_until(voices, lambda: all(v.next_pos == v.hi for v in voices), 30)
        assert sim.command(ROOM, "a", Stop()).ok
        end = int(sim.state(ROOM)["song"]["end_pos"])
        sing_until(voices, lambda: recordings(root), 40)
        raw: Any = client.get(keys.recorder_heartbeat("r1"))
        status = records.decode(raw, RecorderStatus)
        assert status.counters.get("taps_refused", 0) >= 1

    [flac] = recordings(root)
    recorded, _ = sf.read(flac, dtype="float32")
    assert abs(len(recorded) - (end - start)) <= OPUS_FRAME_SAMPLES
    want = expected_mix(voices[:2], start, end - start)
    np.testing.assert_allclose(recorded[: end - start], want, rtol=0, atol=2e-3)


def test_a_take_left_behind_is_finished_by_the_next_recorder_with_silence_for_the_gap(
    redis_url: str, output_dir: Path
) -> None:
    """The only recorder dies mid-song and a new one comes only after the song is over:
    the take on disk is found by room and song and finished to the song's length."""
    with recorder_stack(redis_url, output_dir) as (here, sim):
        first = here.recorders["r1"]
        client, root = here.redis, here.recordings
        delays = room_with_three_buckets(sim)
        assert sim.command(ROOM, "a", Start()).ok
        start = int(sim.state(ROOM)["song"]["start_pos"])
        voice = Voice(sim, ROOM, "a", 440, delays["a"], start, start + 3600 * SAMPLE_RATE)

        def take_samples() -> int:
            return sum(p.stat().st_size for p in (root / ".takes").glob("*.pcm")) // 2

        sing_until([voice], lambda: take_samples() >= SAMPLE_RATE, 30)
        first.kill()
        had = take_samples()
        sing_until([voice], lambda: now_samples() > start + had + 6 * SAMPLE_RATE, 15)
        assert sim.command(ROOM, "a", Stop()).ok
        end = int(sim.state(ROOM)["song"]["end_pos"])
        # Long enough for the tap stream to forget the song: nobody records it.
        tap = keys.room_tap(ROOM, 4 * round(SPACING_S * SAMPLE_RATE))  # the recorder's
        sing_until([voice], lambda: not client.exists(tap), 40)
        here.add_recorder("r2")
        wait_until(lambda: recordings(root), 30, "the recording finished")

    [flac] = recordings(root)
    recorded, _ = sf.read(flac, dtype="float32")
    assert abs(len(recorded) - (end - start)) <= OPUS_FRAME_SAMPLES
    want = expected_mix([voice], start, end - start)
    np.testing.assert_allclose(recorded[:had], want[:had], rtol=0, atol=2e-3)
    gap = recorded[had : end - start]
    assert len(gap) > 2 * SAMPLE_RATE and float(np.abs(gap).max()) < 1e-4  # silence, no shift
    assert json.loads(flac.with_suffix(".json").read_text())["end_pos"] == end
