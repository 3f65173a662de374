"""The recorder's pure parts: placing tap windows in a take, names, retention, finishing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from common.constants import SAMPLE_RATE
from common.records import RoomMeta
from recorder import files
from recorder.service import recording_delay
from recorder.take import MAX_SONG_SAMPLES, Take, TakeInfo

windows = st.lists(
    st.tuples(st.integers(-3000, 30_000), st.integers(1, 5000)), min_size=0, max_size=30
)


@given(windows, st.integers(0, 30_000) | st.none())
def test_a_take_holds_each_position_once_at_its_place(
    ws: list[tuple[int, int]], end: int | None
) -> None:
    """Against a naive model: the file is the newest-first-wins union of windows, zeros in gaps."""
    start = 1000
    take = Take(start)
    if end is not None:
        take.end(start + end)
    out: list[float] = []
    model: dict[int, float] = {}
    frontier = start
    for w_start, n in sorted(ws):  # a tap emits in position order
        samples = np.arange(w_start, w_start + n, dtype=np.float64)
        placed = take.place(w_start, n)
        out.extend([0.0] * placed.silence)
        out.extend(samples[placed.lo : placed.hi])
        lo, hi = max(w_start, frontier), min(w_start + n, take.limit)
        for pos in range(lo, hi):
            model[pos] = float(pos)
        if hi > lo:
            frontier = hi
    assert len(out) == take.written == max(0, frontier - start)
    for i, value in enumerate(out):
        assert value == model.get(start + i, 0.0)


def test_a_song_is_cut_at_sixty_minutes() -> None:
    take = Take(0)
    placed = take.place(MAX_SONG_SAMPLES - 10, 960)
    assert (placed.silence, placed.hi - placed.lo) == (MAX_SONG_SAMPLES - 10, 10)
    assert take.done


def test_names_are_recognisable_and_safe() -> None:
    info = TakeInfo(room="choir", number=3, start_pos=0, delay=1, leader="Zoë / ../x", created=0)
    assert files.recording_stem(info) == "choir-song3-19700101-0000-Zo-x"
    assert files.sanitise("") == "unknown"


def test_the_recorder_listens_one_spacing_behind_the_last_bucket() -> None:
    meta = RoomMeta(n_buckets=6, bucket_spacing_s=3.0)
    assert recording_delay(meta, [3 * SAMPLE_RATE]) == 21 * SAMPLE_RATE
    assert recording_delay(meta, [30 * SAMPLE_RATE]) == 33 * SAMPLE_RATE
    assert recording_delay(meta, [114 * SAMPLE_RATE]) == 115 * SAMPLE_RATE  # the mixer's limit


def test_retention_keeps_the_newest_per_room_then_fits_the_size_cap() -> None:
    recs = [files.Recording("a", f"a{i}", float(i), 10) for i in range(5)]
    recs += [files.Recording("b", f"b{i}", float(i) + 0.5, 10) for i in range(2)]
    assert {r.stem for r in files.to_delete(recs, keep=3, max_bytes=1000)} == {"a0", "a1"}
    gone = files.to_delete(recs, keep=3, max_bytes=30)
    assert {r.stem for r in gone} == {"a0", "a1", "b0", "b1"}  # then the oldest of all


def test_finish_pads_mixes_the_track_and_writes_both_files(tmp_path: Path) -> None:
    info = TakeInfo(room="r", number=1, start_pos=100, delay=1, leader="L", origin=150)
    pcm, info_path = files.take_paths(tmp_path, "r", 1, 100)
    pcm.parent.mkdir(parents=True)
    voice = np.full(1000, 0.25, dtype=np.float32)
    pcm.write_bytes(files.to_int16(voice) + b"\x01")  # a torn last sample, as after SIGKILL
    files.write_info(info_path, info)
    track = np.full(500, 0.5, dtype=np.float32)
    flac = files.finish(tmp_path, info, 2 * SAMPLE_RATE, track)
    audio, rate = sf.read(flac, dtype="float32")
    assert rate == SAMPLE_RATE and len(audio) == 2 * SAMPLE_RATE
    np.testing.assert_allclose(audio[:50], 0.25, atol=1e-4)
    np.testing.assert_allclose(audio[50:550], 0.75, atol=1e-4)  # track at positions 150..650
    np.testing.assert_allclose(audio[550:1000], 0.25, atol=1e-4)
    np.testing.assert_allclose(audio[1000:], 0.0, atol=1e-4)  # silence where nothing came
    ogg, _ = sf.read(flac.with_suffix(".ogg"), dtype="float32")
    assert abs(len(ogg) - 2 * SAMPLE_RATE) <= 960
    sidecar = json.loads(flac.with_suffix(".json").read_text())
    assert sidecar["end_pos"] == 100 + 2 * SAMPLE_RATE and sidecar["leader"] == "L"
    assert not pcm.exists() and not info_path.exists()
    assert [r.stem for r in files.scan(tmp_path)] == [flac.stem]


def test_take_rejects_a_negative_frontier() -> None:
    with pytest.raises(ValueError, match="written"):
        Take(0, written=-1)
