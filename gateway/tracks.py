"""Backing tracks: checking an uploaded audio file and turning it into the stored form.

An upload (or a file of the ``BB_TRACKS_DIR`` library) is MP3, Ogg
(Vorbis or Opus), FLAC or WAV of at most :data:`MAX_TRACK_BYTES` and
:data:`MAX_TRACK_S`. Its type is recognised by its content (never by its
name or Content-Type), decoded with python-soundfile, mixed down to mono,
resampled to 48 kHz with python-soxr and encoded once as Ogg Opus: the one
form stored in Redis and served to every page, which decodes it itself.

:func:`prepare_track` is plain blocking code (call it in a thread); every
refusal is an :class:`UploadError` carrying the HTTP status and a sentence
for people. Nothing is stored before it returns.
"""

from __future__ import annotations

import io
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import soundfile as sf
import soxr

from common.constants import SAMPLE_RATE
from common.tracks import MAX_TRACK_BYTES, MAX_TRACK_RATE, MAX_TRACK_S, MIN_TRACK_RATE

__all__ = [
    "LIBRARY_SUFFIXES",
    "MAX_TRACK_BYTES",
    "MAX_TRACK_S",
    "PreparedTrack",
    "UploadError",
    "library_file",
    "library_listing",
    "prepare_track",
    "sniff_audio",
]

LIBRARY_SUFFIXES: Final = frozenset({".mp3", ".ogg", ".opus", ".oga", ".flac", ".wav"})
_FORMATS: Final = {"mp3": "MP3", "ogg": "OGG", "flac": "FLAC", "wav": "WAV"}
_KINDS: Final = "MP3, Ogg Vorbis or Opus, FLAC or WAV"


class UploadError(Exception):
    """An upload refused: ``status`` is the HTTP status, ``message`` says why in words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PreparedTrack:
    """A checked track in its stored form: Ogg Opus, 48 kHz mono, ``samples`` long."""

    ogg: bytes
    samples: int
    source_kind: str
    source_rate: int
    source_channels: int
    decode_s: float


def sniff_audio(data: bytes) -> str:
    """The kind of audio file ``data`` holds by its first bytes: mp3, ogg, flac or wav.

    Raises UploadError 415 for anything else (a zip, an image, text...).
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3":
        return "mp3"
    # An MPEG audio frame header: 11 sync bits, layer III, a valid bitrate and rate.
    if len(data) >= 4 and data[0] == 0xFF and data[1] & 0xE6 == 0xE2:
        bitrate, rate = data[2] >> 4, (data[2] >> 2) & 3
        if bitrate not in (0, 15) and rate != 3:
            return "mp3"
    raise UploadError(415, f"this is not an audio file the room can use ({_KINDS})")


def _wav_truncated(data: bytes) -> bool:
    """Whether a WAV file's data chunk claims more bytes than the file holds."""
    at = 12
    while at + 8 <= len(data):
        chunk, size = data[at : at + 4], struct.unpack_from("<I", data, at + 4)[0]
        if chunk == b"data":
            return bool(at + 8 + size > len(data))
        at += 8 + size + (size & 1)
    return True  # no data chunk at all


def prepare_track(data: bytes) -> PreparedTrack:
    """Check, decode, mix down, resample and encode an uploaded track (blocking).

    Raises UploadError: 413 over the size limit, 415 not an audio file of a
    known kind, 400 corrupt, truncated, empty, silent or too long.
    """
    began = time.perf_counter()
    if len(data) > MAX_TRACK_BYTES:
        raise UploadError(413, f"the file is over {MAX_TRACK_BYTES // (1024 * 1024)} MB")
    if not data:
        raise UploadError(400, "the file is empty")
    kind = sniff_audio(data)
    if kind == "wav" and _wav_truncated(data):
        raise UploadError(400, "the WAV file is truncated (its audio data is cut short)")
    try:
        info = sf.info(io.BytesIO(data))
        if info.format != _FORMATS[kind]:
            raise UploadError(415, f"the file looks like {kind} but reads as {info.format}")
        if not MIN_TRACK_RATE <= info.samplerate <= MAX_TRACK_RATE:
            raise UploadError(
                400,
                f"a sample rate of {info.samplerate} Hz is not supported "
                f"({MIN_TRACK_RATE} to {MAX_TRACK_RATE} Hz are)",
            )
        if info.frames > MAX_TRACK_S * info.samplerate:
            minutes = info.frames / info.samplerate / 60
            raise UploadError(
                400, f"the track lasts {minutes:.1f} min; at most {MAX_TRACK_S // 60} min"
            )
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except UploadError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        raise UploadError(400, f"the {kind} file cannot be decoded: {_first_line(exc)}") from None
    frames = audio.shape[0]
    if frames == 0:
        raise UploadError(400, f"the {kind} file holds no audio (is it cut short?)")
    if info.frames > 0 and frames < 0.99 * info.frames:
        raise UploadError(
            400,
            f"the {kind} file is truncated: {frames / rate:.1f} s of the "
            f"{info.frames / rate:.1f} s it announces",
        )
    if frames > MAX_TRACK_S * rate:
        raise UploadError(400, f"the track is longer than {MAX_TRACK_S // 60} min")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if not np.all(np.isfinite(mono)):
        raise UploadError(400, f"the {kind} file decodes to invalid samples")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak < 1e-4:
        raise UploadError(400, "the track is silent")
    if peak > 1.0:
        mono = mono / np.float32(peak)  # resampling can overshoot a full-scale file
    out = io.BytesIO()
    sf.write(out, mono, SAMPLE_RATE, format="OGG", subtype="OPUS")
    return PreparedTrack(
        ogg=out.getvalue(),
        samples=int(mono.shape[0]),
        source_kind=kind,
        source_rate=int(rate),
        source_channels=int(audio.shape[1]),
        decode_s=time.perf_counter() - began,
    )


def _first_line(exc: BaseException) -> str:
    """libsndfile's reason, without its "Error opening <object at 0x...>:" preamble."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"^Error( opening <[^>]*>)?\s*:\s*", "", lines[0]) if lines else ""
    return text[:200] or type(exc).__name__


def library_listing(folder: str) -> list[dict[str, object]]:
    """The audio files of the tracks folder, read now (so new files show up at once)."""
    if not folder:
        return []
    root = Path(folder)
    if not root.is_dir():
        return []
    listed: list[dict[str, object]] = []
    for path in sorted(root.iterdir()):
        if path.suffix.lower() in LIBRARY_SUFFIXES and path.is_file():
            size = path.stat().st_size
            if 0 < size <= MAX_TRACK_BYTES:
                listed.append({"name": path.name, "bytes": size})
    return listed


def library_file(folder: str, name: str) -> Path:
    """The library file ``name`` (a plain file name in the folder); UploadError 404 otherwise."""
    if not folder or not name or "/" in name or "\\" in name or name.startswith("."):
        raise UploadError(404, "no such track in the library")
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if path.parent != root or path.suffix.lower() not in LIBRARY_SUFFIXES or not path.is_file():
        raise UploadError(404, "no such track in the library")
    return path
