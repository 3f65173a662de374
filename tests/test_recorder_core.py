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
from common.records import Member, Metronome, Role
from common.tracks import CLICK_SAMPLES, click_wave
from common.wire import encode_chunk
from mixer.planner import older_id
from recorder import files
from recorder.stems import StemWriter
from recorder.take import MAX_SONG_SAMPLES, Take, TakeInfo, clip

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


def test_retention_never_touches_a_take_in_progress(tmp_path: Path) -> None:
    """Three takes in progress and keep=2: retention lists none of them and deletes none
    (the glob used to match ``.takes/``: one live take lost, sizes counted)."""
    takes = []
    for number in (1, 2, 3):
        info = TakeInfo(room="r", number=number, start_pos=number * 1000, delay=1, created=number)
        pcm, info_path = files.take_paths(tmp_path, "r", number, number * 1000)
        pcm.parent.mkdir(parents=True, exist_ok=True)
        pcm.write_bytes(bytes(2 * SAMPLE_RATE))
        files.write_info(info_path, info)
        takes += [pcm, info_path]
    done = TakeInfo(room="r", number=0, start_pos=0, delay=1, created=0.5)
    pcm, info_path = files.take_paths(tmp_path, "r", 0, 0)
    pcm.write_bytes(bytes(200))
    files.write_info(info_path, done)
    flac = files.finish(tmp_path, done, 100, None)
    [finished] = files.scan(tmp_path)
    assert finished.stem == flac.stem
    assert files.to_delete(files.scan(tmp_path), keep=2, max_bytes=finished.size) == []
    for rec in files.to_delete(files.scan(tmp_path), keep=2, max_bytes=0):
        files.remove(tmp_path, rec)
    assert all(p.exists() for p in takes)
    assert not flac.exists()


def test_retention_keeps_the_newest_per_room_then_fits_the_size_cap() -> None:
    recs = [files.StoredRecording("a", f"a{i}", float(i), 10) for i in range(5)]
    recs += [files.StoredRecording("b", f"b{i}", float(i) + 0.5, 10) for i in range(2)]
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


def _chunk(singer: str, start: int, value: float, n: int = 960, room: str = "r") -> bytes:
    return encode_chunk(room, singer, 1, 0, start, np.full(n, value, dtype=np.float32))


def _member(singer: str, name: str, delay: int, muted: bool = False) -> Member:
    return Member(
        singer_id=singer,
        name=name,
        role=Role.SINGER,
        delay=delay,
        bucket=None,
        joined=0,
        muted=muted,
    )


def test_stems_hold_each_singer_alone_at_song_positions(tmp_path: Path) -> None:
    start = 10_000
    info = TakeInfo(room="r", number=2, start_pos=start, delay=1, leader="Ann", stems=True)
    info.singers = {"s-a": "Ann", "s-b": 'Bob "B"'}  # the members at the start, bucket order
    pcm, info_path = files.take_paths(tmp_path, "r", 2, start)
    pcm.parent.mkdir(parents=True)
    pcm.write_bytes(files.to_int16(np.full(3000, 0.1, dtype=np.float32)))
    files.write_info(info_path, info)
    writer = StemWriter(tmp_path, info)
    writer.members(
        [_member("s-a", "Ann", 1), _member("s-b", "Bob", 2), _member("s-m", "Mo", 3, True)]
    )
    grew = writer.write(
        [
            _chunk("s-b", start + 960, 0.5),  # Bob, out of order: his second frame first
            _chunk("s-b", start - 480, 0.3),  # half before the song: only the half inside
            _chunk("s-a", start + 1920, 0.25),
            _chunk("s-m", start, 0.9),  # muted: never recorded
            _chunk("s-a", start, 0.2, room="other"),  # another room's chunk: dropped
            b"garbage",
        ],
        limit=start + 3000,
    )
    assert not grew  # both singers were listed already
    assert writer.write([_chunk("s-c", start + 2880, 0.4)], limit=start + 3000)  # clipped at 3000
    assert info.singers["s-c"] == "s-c"  # not a member (yet): named by id
    assert writer.counters["stem_muted_chunks"] == 1 and writer.counters["stem_bad_chunks"] == 2
    track = np.full(1000, 0.5, dtype=np.float32)
    info.origin = start + 500
    flac = files.finish(tmp_path, info, 3000, track)
    sidecar = json.loads(flac.with_suffix(".json").read_text())
    names = [(s["singer"], s["name"]) for s in sidecar["stems"]]
    assert names == [("s-a", "Ann"), ("s-b", 'Bob "B"'), ("s-c", "s-c"), (None, "Backing track")]
    stems = [flac.parent / s["file"] for s in sidecar["stems"]]
    assert stems[1].name == f"{flac.stem}.stem-02-Bob-B.flac"
    ann, bob, cy, backing = (sf.read(p, dtype="float32")[0] for p in stems)
    assert all(len(a) == 3000 for a in (ann, bob, cy, backing))
    np.testing.assert_allclose(ann[1920:2880], 0.25, atol=1e-4)
    assert np.abs(ann[:1920]).max() < 1e-4 and np.abs(ann[2880:]).max() < 1e-4
    np.testing.assert_allclose(bob[:480], 0.3, atol=1e-4)
    np.testing.assert_allclose(bob[960:1920], 0.5, atol=1e-4)
    assert np.abs(bob[480:960]).max() < 1e-4 and np.abs(bob[1920:]).max() < 1e-4
    np.testing.assert_allclose(cy[2880:], 0.4, atol=1e-4)
    np.testing.assert_allclose(backing[500:1500], 0.5, atol=1e-4)
    assert np.abs(backing[:500]).max() < 1e-4 and np.abs(backing[1500:]).max() < 1e-4
    # The projects open every stem, aligned at 0; retention counts (and removes) them all.
    lof = (flac.parent / sidecar["lof"]).read_text().splitlines()
    assert lof == [f'file "{p.name}" offset 0' for p in stems]
    rpp = (flac.parent / sidecar["rpp"]).read_text()
    assert rpp.count("<TRACK") == 4 and "NAME \"Bob 'B'\"" in rpp and "LENGTH 0.062500" in rpp
    assert not list((tmp_path / files.TAKES).iterdir())
    [rec] = files.scan(tmp_path)
    assert rec.size == sum(p.stat().st_size for p in flac.parent.iterdir())
    files.remove(tmp_path, rec)
    assert not list(flac.parent.iterdir())


def test_clicks_go_into_the_mix_only_when_asked(tmp_path: Path) -> None:
    metronome = Metronome(on=True, bpm=120, beats=4, count_in=True)
    got = {}
    for clicks in (None, metronome):
        root = tmp_path / str(clicks is not None)
        info = TakeInfo(room="r", number=1, start_pos=0, delay=1, leader="L", clicks=clicks)
        info.end_pos = SAMPLE_RATE * 3
        _pcm, info_path = files.take_paths(root, "r", 1, 0)
        info_path.parent.mkdir(parents=True)
        files.write_info(info_path, info)
        flac = files.finish(root, info, 3 * SAMPLE_RATE, None)
        got[clicks is not None] = sf.read(flac, dtype="float32")[0]
        assert json.loads(flac.with_suffix(".json").read_text())["metronome"] is (
            clicks is not None
        )
    assert np.abs(got[False]).max() < 1e-4
    # Clicks every half second from the count-in's start, the first of each bar accented.
    half = SAMPLE_RATE // 2
    for beat in range(6):
        at = beat * half
        np.testing.assert_allclose(
            got[True][at : at + CLICK_SAMPLES], click_wave(beat % 4 == 0), atol=1e-4
        )
        assert np.abs(got[True][at + CLICK_SAMPLES : at + half]).max() < 1e-4


def test_a_stem_chunk_outside_the_song_is_dropped_and_edges_are_cut() -> None:
    assert clip(100, 200, 0, 50) is None
    assert clip(100, 200, 200, 50) is None
    assert clip(100, 200, 90, 20) == (0, 10, 20)
    assert clip(100, 200, 190, 20) == (90, 0, 10)
    assert clip(100, 200, 150, 10) == (50, 0, 10)


def test_older_stream_id() -> None:
    assert older_id(b"5000-3", 4000) == b"4000-0"
    assert older_id(b"3000-7", 4000) == b"3000-7"
    assert older_id(b"weird", 4000) == b"weird"
