"""Where recordings live on disk, what they are called, what is kept, and how a take
becomes a FLAC and an Ogg Opus file.

Layout under the recordings folder (``BB_RECORDINGS_DIR``)::

    .takes/<room>-song<n>-<start_pos>.pcm    the take in progress: int16 LE mono, append-only
    .takes/<room>-song<n>-<start_pos>.json   its TakeInfo (what a successor needs)
    .takes/<room>-song<n>-<start_pos>.stem.<singer id>.pcm   a singer's stem (sparse int16)
    <room>/<stem>.flac / .ogg / .json        finished: the mix and its sidecar, where
                                             <stem> is <room>-song<n>-<YYYYmmdd-HHMM>-<leader>
    <room>/<stem>.stem-<NN>-<name>.flac      with stems: one per singer, in bucket order
    <room>/<stem>.track.flac                 with stems and a track: the track alone
    <room>/<stem>.lof / .rpp                 with stems: Audacity and REAPER projects

An append-only raw file is the crash-safe form: whatever a killed recorder
wrote is valid audio up to its last whole sample, and the successor appends
to it. A FLAC stream cut by SIGKILL has no length in its header and no
decoder reads it reliably, so the FLAC and the Ogg are written, block by
block, only when the take ends, under temporary names renamed into place.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt
import soundfile as sf

from common.constants import SAMPLE_RATE
from common.errors import ValidationError
from common.recording import Recording, StemFile, decode_sidecar, encode_sidecar
from common.tracks import CLICK_SAMPLES, click_wave, clicks_between
from recorder.projects import ProjectStem, audacity_lof, reaper_rpp
from recorder.take import TakeInfo

__all__ = [
    "StoredRecording",
    "finish",
    "recording_stem",
    "sanitise",
    "scan",
    "stem_take_path",
    "take_paths",
    "to_delete",
]

TAKES: Final = ".takes"
_BLOCK: Final = 10 * SAMPLE_RATE
"""Samples converted at a time when a take is finished (memory stays bounded)."""
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]+")


def sanitise(text: str, fallback: str = "unknown") -> str:
    """``text`` as a file-name part: letters, digits, ``_`` and ``-`` only, at most 40."""
    cleaned = _UNSAFE.sub("-", text).strip("-")[:40].strip("-")
    return cleaned or fallback


def _take_name(room: str, number: int, start_pos: int) -> str:
    return f"{sanitise(room)}-song{number}-{start_pos}"


def take_paths(root: Path, room: str, number: int, start_pos: int) -> tuple[Path, Path]:
    """The in-progress audio and info files of a take."""
    name = _take_name(room, number, start_pos)
    return root / TAKES / f"{name}.pcm", root / TAKES / f"{name}.json"


def stem_take_path(root: Path, info: TakeInfo, singer: str) -> Path:
    """The in-progress stem of one singer (a sparse int16 file: sample i is position
    ``start_pos + i``, holes read as silence). ``singer`` is a checked id."""
    return root / TAKES / f"{_take_name(info.room, info.number, info.start_pos)}.stem.{singer}.pcm"


def recording_stem(info: TakeInfo) -> str:
    """``<room>-song<n>-<YYYYmmdd-HHMM>-<leader>`` (UTC), recognisable by a person."""
    when = time.strftime("%Y%m%d-%H%M", time.gmtime(info.created))
    return f"{sanitise(info.room)}-song{info.number}-{when}-{sanitise(info.leader, 'nobody')}"


def write_info(path: Path, info: TakeInfo) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(info))
    os.replace(tmp, path)


def read_info(path: Path) -> TakeInfo | None:
    """A take's info, or None when it is missing or unreadable."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=TakeInfo)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def takes_on_disk(root: Path) -> list[TakeInfo]:
    """The readable infos of the takes in ``root``'s takes folder (left by a dead recorder,
    or being recorded)."""
    found = []
    for path in (root / TAKES).glob("*.json"):
        info = read_info(path)
        if info is not None:
            found.append(info)
    return found


def pcm_samples(path: Path) -> int:
    """Whole int16 samples in a take's audio file; a torn last sample is cut off."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size % 2:
        os.truncate(path, size - 1)
    return size // 2


def to_int16(samples: npt.NDArray[np.float32]) -> bytes:
    """Float samples as int16 LE bytes, clipped to full scale."""
    clipped = np.clip(samples, -1.0, 32767 / 32768)
    return (clipped * 32768).astype("<i2").tobytes()


def decode_track(data: bytes) -> npt.NDArray[np.float32]:
    """A stored backing track (Ogg Opus, 48 kHz mono) as float32 samples."""
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"backing track at {rate} Hz, expected {SAMPLE_RATE}")
    mono: npt.NDArray[np.float32] = audio.mean(axis=1, dtype=np.float32)
    return mono


def _blocks(path: Path, length: int) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """``(offset, samples)`` blocks of a take file as float32, cut or padded with
    silence to ``length`` samples; memory stays one block."""
    have = pcm_samples(path)
    with path.open("rb") if have else open(os.devnull, "rb") as src:
        for lo in range(0, length, _BLOCK):
            n = min(_BLOCK, length - lo)
            raw = src.read(2 * n) if lo < have else b""
            block = np.zeros(n, dtype=np.float32)
            got = np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2")
            block[: len(got)] = got.astype(np.float32) / 32768
            yield lo, block


def _flac(path: Path) -> sf.SoundFile:
    return sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16", format="FLAC")


def finish(root: Path, info: TakeInfo, length: int, track: npt.NDArray[np.float32] | None) -> Path:
    """Turn a take into ``<room>/<stem>.flac``, ``.ogg`` and ``.json``; returns the FLAC.

    ``length`` is the song's length in samples (the take's file is padded with
    silence or cut to it); ``track`` is mixed in at ``info.origin``, and the
    metronome's clicks when ``info.clicks``. With ``info.stems``, each singer's
    stem, the track alone and the two project files too. Runs in a worker
    thread: it is the recorder's only codec work. Every file is written under
    a temporary name and renamed into place; the sidecar comes last.
    """
    pcm, info_path = take_paths(root, info.room, info.number, info.start_pos)
    folder = root / sanitise(info.room)
    folder.mkdir(parents=True, exist_ok=True)
    stem = recording_stem(info)
    flac, ogg, sidecar = (folder / f"{stem}{ext}" for ext in (".flac", ".ogg", ".json"))
    tmp_flac, tmp_ogg = flac.with_suffix(".flac.tmp"), ogg.with_suffix(".ogg.tmp")
    clicks = (click_wave(False), click_wave(True))
    with (
        _flac(tmp_flac) as out_flac,
        sf.SoundFile(tmp_ogg, "w", SAMPLE_RATE, 1, "OPUS", format="OGG") as out_ogg,
    ):
        for lo, block in _blocks(pcm, length):
            if track is not None and info.origin is not None:
                _mix_track(block, info.start_pos + lo - info.origin, track)
            if info.clicks is not None:
                _mix_clicks(block, info.start_pos + lo, info, clicks)
            np.clip(block, -1.0, 1.0, out=block)
            out_flac.write(block)
            out_ogg.write(block)
    os.replace(tmp_flac, flac)
    os.replace(tmp_ogg, ogg)
    stems = _finish_stems(root, info, folder, stem, length, track) if info.stems else []
    projects: dict[str, str | None] = {"lof": None, "rpp": None}
    if stems:
        listed = [ProjectStem(s.name, s.file) for s in stems]
        title = f"{info.room} song {info.number}"
        for kind, text in (
            ("lof", audacity_lof(listed)),
            ("rpp", reaper_rpp(listed, length, title)),
        ):
            path = folder / f"{stem}.{kind}"
            _write_text(path, text)
            projects[kind] = path.name
    end_pos = info.start_pos + length
    recording = Recording(
        room=info.room,
        song=info.number,
        start_pos=info.start_pos,
        end_pos=end_pos,
        length_s=length / SAMPLE_RATE,
        leader=info.leader,
        created=info.created,
        track=info.track_id,
        metronome=info.clicks is not None,
        flac=flac.name,
        ogg=ogg.name,
        stems=stems,
        lof=projects["lof"],
        rpp=projects["rpp"],
    )
    _write_text(sidecar, encode_sidecar(recording))
    pcm.unlink(missing_ok=True)
    for singer in info.singers:
        stem_take_path(root, info, singer).unlink(missing_ok=True)
    info_path.unlink(missing_ok=True)
    return flac


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _finish_stems(
    root: Path,
    info: TakeInfo,
    folder: Path,
    stem: str,
    length: int,
    track: npt.NDArray[np.float32] | None,
) -> list[StemFile]:
    """Each singer's stem (those who sang) and the track alone, as FLAC files."""
    listed: list[StemFile] = []
    for singer, name in info.singers.items():
        source = stem_take_path(root, info, singer)
        if not source.exists():
            continue  # a member who never sang in this song
        path = folder / f"{stem}.stem-{len(listed) + 1:02d}-{sanitise(name, singer)}.flac"
        tmp = path.with_name(path.name + ".tmp")
        with _flac(tmp) as out:
            for _lo, block in _blocks(source, length):
                np.clip(block, -1.0, 1.0, out=block)
                out.write(block)
        os.replace(tmp, path)
        listed.append(StemFile(singer=singer, name=name, file=path.name))
    if track is not None and info.origin is not None:
        path = folder / f"{stem}.track.flac"
        tmp = path.with_name(path.name + ".tmp")
        with _flac(tmp) as out:
            for lo in range(0, length, _BLOCK):
                block = np.zeros(min(_BLOCK, length - lo), dtype=np.float32)
                _mix_track(block, info.start_pos + lo - info.origin, track)
                np.clip(block, -1.0, 1.0, out=block)
                out.write(block)
        os.replace(tmp, path)
        listed.append(StemFile(singer=None, name="Backing track", file=path.name))
    return listed


def _mix_clicks(
    block: npt.NDArray[np.float32],
    pos: int,
    info: TakeInfo,
    waves: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
) -> None:
    # block[i] is position pos + i; a click that started just before the block still rings.
    assert info.clicks is not None
    n = len(block)
    for click in clicks_between(
        pos - CLICK_SAMPLES + 1, pos + n, info.start_pos, info.clicks, info.end_pos
    ):
        wave = waves[click.accent]
        lo, hi = max(click.pos, pos), min(click.pos + CLICK_SAMPLES, pos + n)
        block[lo - pos : hi - pos] += wave[lo - click.pos : hi - click.pos]


def _mix_track(block: npt.NDArray[np.float32], offset: int, track: npt.NDArray[np.float32]) -> None:
    # block[i] is track sample offset + i (outside the track: nothing).
    lo, hi = max(0, offset), min(len(track), offset + len(block))
    if lo < hi:
        block[lo - offset : hi - offset] += track[lo:hi]


@dataclass(frozen=True)
class StoredRecording:
    """A finished recording: its folder and stem, when it was made, its bytes on disk."""

    room: str
    stem: str
    created: float
    size: int


def scan(root: Path) -> list[StoredRecording]:
    """Every finished recording under ``root`` (by its sidecar in a room's folder).

    Takes in progress (``.takes/``, whose info files are JSON too) are not
    recordings: retention never counts nor deletes them. A room's folder is a
    sanitised name, which never starts with a dot.
    """
    found: list[StoredRecording] = []
    for sidecar in root.glob("*/*.json"):
        if sidecar.parent.name.startswith("."):
            continue
        files = [p for p in sidecar.parent.glob(f"{sidecar.stem}.*") if p.is_file()]
        try:
            created = decode_sidecar(sidecar.read_bytes()).created
        except (OSError, ValidationError):
            created = sidecar.stat().st_mtime
        size = sum(p.stat().st_size for p in files)
        found.append(StoredRecording(sidecar.parent.name, sidecar.stem, created, size))
    return found


def to_delete(
    recordings: Iterable[StoredRecording], keep: int, max_bytes: int
) -> list[StoredRecording]:
    """The recordings retention removes: beyond the newest ``keep`` of a room, then the
    oldest of all until the rest fit in ``max_bytes``."""
    by_age = sorted(recordings, key=lambda r: (r.created, r.stem), reverse=True)
    kept: list[StoredRecording] = []
    gone: list[StoredRecording] = []
    per_room: dict[str, int] = {}
    for rec in by_age:
        per_room[rec.room] = per_room.get(rec.room, 0) + 1
        (kept if per_room[rec.room] <= keep else gone).append(rec)
    total = sum(r.size for r in kept)
    while kept and total > max_bytes:
        oldest = kept.pop()
        total -= oldest.size
        gone.append(oldest)
    return gone


def remove(root: Path, recording: StoredRecording) -> None:
    """Delete every file of a recording, its sidecar last: a recorder that dies halfway
    leaves a recording that is still listed (and removed by the next retention)."""
    sidecar = root / recording.room / f"{recording.stem}.json"
    for path in (root / recording.room).glob(f"{recording.stem}.*"):
        if path != sidecar:
            path.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
