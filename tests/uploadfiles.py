"""Audio and image files made on the spot for the upload tests (no fixtures of unknown origin).

Every file is written by python-soundfile (libsndfile) from a known signal,
then some are damaged on purpose. :func:`bad_uploads` is the list of twenty
that a room must refuse, each with the HTTP status it must get.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import NamedTuple

import numpy as np
import soundfile as sf

from common.constants import SAMPLE_RATE

__all__ = ["BadUpload", "bad_uploads", "encode", "png_bytes", "tone_notes"]


def tone_notes(notes: list[tuple[float, float, float]], rate: int, amp: float = 0.4) -> np.ndarray:
    """A sequence of ``(start_s, end_s, hz)`` sine notes with 2 ms ramps (float32 mono)."""
    length = max(end for _, end, _ in notes)
    t = np.arange(round(length * rate)) / rate
    out = np.zeros(t.shape[0], dtype=np.float64)
    ramp = max(1, round(0.002 * rate))
    for start, end, hz in notes:
        a, b = round(start * rate), round(end * rate)
        env = np.ones(b - a)
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
        out[a:b] += amp * env * np.sin(2 * np.pi * hz * (t[a:b] - start))
    return out.astype(np.float32)


def encode(signal: np.ndarray, rate: int, kind: str, channels: int = 1) -> bytes:
    """``signal`` as a file of ``kind``: wav, flac, vorbis, opus or mp3."""
    data = np.repeat(signal[:, None], channels, axis=1) if channels > 1 else signal
    formats = {
        "wav": ("WAV", "PCM_16"),
        "flac": ("FLAC", "PCM_16"),
        "vorbis": ("OGG", "VORBIS"),
        "opus": ("OGG", "OPUS"),
        "mp3": ("MP3", "MPEG_LAYER_III"),
    }
    fmt, subtype = formats[kind]
    out = io.BytesIO()
    sf.write(out, data, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A small valid PNG (grey pixels)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class BadUpload(NamedTuple):
    what: str
    endpoint: str  # "track" or "image"
    filename: str
    data: bytes
    status: int


def bad_uploads() -> list[BadUpload]:
    """Twenty uploads a room must refuse, with the status each must get."""
    tone = tone_notes([(0.0, 1.0, 440.0)], 44_100)
    wav, flac = encode(tone, 44_100, "wav"), encode(tone, 44_100, "flac")
    mp3, vorbis = encode(tone, 44_100, "mp3"), encode(tone, 44_100, "vorbis")
    # Eleven minutes: a quiet 8 kHz FLAC is small enough to upload (about 1 MB).
    long_tone = (0.01 * np.sin(np.arange(11 * 60 * 8000) * 0.3)).astype(np.float32)
    eleven_minutes = encode(long_tone, 8000, "flac")
    zip_file = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(200)
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    midi = b"MThd\x00\x00\x00\x06\x00\x01" + bytes(64)
    silence = encode(np.zeros(8000, np.float32), 8000, "wav")
    html = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
    return [
        BadUpload("truncated WAV", "track", "a.wav", wav[: len(wav) // 2], 400),
        BadUpload("truncated FLAC", "track", "a.flac", flac[: len(flac) // 2], 400),
        BadUpload("truncated MP3", "track", "a.mp3", mp3[: len(mp3) // 3], 400),
        BadUpload("truncated Ogg Vorbis", "track", "a.ogg", vorbis[: len(vorbis) // 2], 400),
        BadUpload("WAV header without audio", "track", "a.wav", wav[:44], 400),
        BadUpload("wrong magic", "track", "a.mp3", b"\x13\x37" + mp3[2:], 415),
        BadUpload("30 MB of WAV", "track", "big.wav", wav[:44] + bytes(30 * 1024 * 1024), 413),
        BadUpload("11 minutes", "track", "long.flac", eleven_minutes, 400),
        BadUpload("a zip named .mp3", "track", "song.mp3", zip_file, 415),
        BadUpload("a PNG named .mp3", "track", "song.mp3", png_bytes(), 415),
        BadUpload("text named .wav", "track", "song.wav", b"hello, this is not audio\n" * 40, 415),
        BadUpload("a MIDI file", "track", "song.mid", midi, 415),
        BadUpload("an empty file", "track", "empty.mp3", b"", 400),
        BadUpload("silence", "track", "quiet.wav", silence, 400),
        BadUpload("garbage after OggS", "track", "a.ogg", b"OggS" + bytes(range(256)) * 8, 400),
        BadUpload("garbage after fLaC", "track", "a.flac", b"fLaC" + bytes(range(256)) * 8, 400),
        BadUpload("an svg named .png", "image", "pic.png", svg, 415),
        BadUpload("HTML named .jpg", "image", "pic.jpg", html, 415),
        BadUpload("a 6 MB image", "image", "big.png", png_bytes() + bytes(6 * 1024 * 1024), 413),
        BadUpload("a WAV named .png", "image", "pic.png", wav, 415),
    ]


def good_track(rate: int = SAMPLE_RATE) -> np.ndarray:
    """Two seconds of a three-note sequence."""
    return tone_notes([(0.0, 0.5, 330.0), (0.6, 1.2, 495.0), (1.3, 2.0, 742.5)], rate)
