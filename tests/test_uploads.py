"""Upload checks, the pure part (gateway/tracks.py, gateway/images.py), on files made here."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.constants import SAMPLE_RATE
from gateway.images import image_type
from gateway.tracks import UploadError, library_file, library_listing, prepare_track, sniff_audio
from tests.uploadfiles import BadUpload, bad_uploads, encode, good_track, png_bytes

BAD = bad_uploads()


def decoded(ogg: bytes) -> np.ndarray:
    audio, rate = sf.read(io.BytesIO(ogg), dtype="float32")
    assert rate == SAMPLE_RATE
    return np.asarray(audio)


@pytest.mark.parametrize(
    ("kind", "rate", "channels"),
    [
        ("wav", 44_100, 2),
        ("flac", 48_000, 1),
        ("vorbis", 44_100, 1),
        ("opus", 48_000, 1),
        ("mp3", 44_100, 2),
        ("wav", 22_050, 1),
    ],
)
def test_a_good_track_becomes_48_khz_mono_ogg_opus_of_the_same_length(
    kind: str, rate: int, channels: int
) -> None:
    signal = good_track(rate)
    began = time.perf_counter()
    prepared = prepare_track(encode(signal, rate, kind, channels))
    took = time.perf_counter() - began
    expected = round(signal.shape[0] * SAMPLE_RATE / rate)
    # MP3 adds encoder padding at the ends; the others keep the length to a few samples.
    assert abs(prepared.samples - expected) <= (2000 if kind == "mp3" else 2)
    assert prepared.source_kind == ("ogg" if kind in ("vorbis", "opus") else kind)
    assert prepared.source_channels == channels
    assert prepared.ogg[:4] == b"OggS" and b"OpusHead" in prepared.ogg[:200]
    audio = decoded(prepared.ogg)
    assert audio.ndim == 1 and abs(audio.shape[0] - prepared.samples) <= 1
    # The notes are where they were: 495 Hz between 0.6 and 1.2 s.
    part = audio[round(0.7 * SAMPLE_RATE) : round(1.1 * SAMPLE_RATE)]
    spectrum = np.abs(np.fft.rfft(part))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / part.shape[0]
    assert abs(peak_hz - 495) < 5
    print(f"{kind} {rate} Hz x{channels}: prepared in {took * 1000:.0f} ms")


def test_the_stored_track_keeps_sample_positions() -> None:
    """Track sample i of the upload is sample i of what pages decode (no codec offset)."""
    rng = np.random.default_rng(7)
    clicks = np.zeros(2 * SAMPLE_RATE, np.float32)
    where = sorted(rng.choice(np.arange(1000, clicks.shape[0] - 1000, 997), 12, replace=False))
    for at in where:
        clicks[at : at + 48] = np.hanning(48) * 0.8
    audio = decoded(prepare_track(encode(clicks, SAMPLE_RATE, "wav")).ogg)
    for at in where:
        window = audio[at - 500 : at + 500] ** 2
        found = at - 500 + int(np.argmax(np.convolve(window, np.ones(48), "same")))
        assert abs(found - (at + 24)) <= 8, f"click at {at} decoded at {found - 24}"


@pytest.mark.parametrize("bad", [b for b in BAD if b.endpoint == "track"], ids=lambda b: b.what)
def test_a_bad_track_upload_is_refused_in_words(bad: BadUpload) -> None:
    with pytest.raises(UploadError) as refused:
        prepare_track(bad.data)
    assert refused.value.status == bad.status, refused.value.message
    assert 10 < len(refused.value.message) < 300 and "Traceback" not in refused.value.message


@pytest.mark.parametrize("bad", [b for b in BAD if b.endpoint == "image"], ids=lambda b: b.what)
def test_a_bad_image_is_refused_in_words(bad: BadUpload) -> None:
    with pytest.raises(UploadError) as refused:
        image_type(bad.data)
    assert refused.value.status == bad.status


def test_images_are_told_by_their_content() -> None:
    assert image_type(png_bytes()) == "image/png"
    assert image_type(b"\xff\xd8\xff\xe0" + bytes(100)) == "image/jpeg"
    assert image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(100)) == "image/webp"


def test_sniffing_ignores_names_and_knows_an_mpeg_frame() -> None:
    assert sniff_audio(b"\xff\xfb\x90\xc4" + bytes(10)) == "mp3"
    for not_audio in (b"\xff\xd8\xff\xe0", b"PK\x03\x04", b"<svg", b"\xff\xff\xff\xff"):
        with pytest.raises(UploadError):
            sniff_audio(not_audio + bytes(10))


def test_the_library_is_read_on_request_and_never_leaves_its_folder(tmp_path: Path) -> None:
    folder = tmp_path
    assert library_listing(str(folder)) == []
    (folder / "hymn.flac").write_bytes(encode(good_track(), SAMPLE_RATE, "flac"))
    (folder / "notes.txt").write_text("not a track")
    assert [t["name"] for t in library_listing(str(folder))] == ["hymn.flac"]
    (folder / "later.wav").write_bytes(encode(good_track(), SAMPLE_RATE, "wav"))
    assert [t["name"] for t in library_listing(str(folder))] == ["hymn.flac", "later.wav"]
    assert library_file(str(folder), "hymn.flac").name == "hymn.flac"
    for bad in ("../hymn.flac", "notes.txt", "/etc/passwd", ".hidden.wav", "missing.wav", ""):
        with pytest.raises(UploadError) as refused:
            library_file(str(folder), bad)
        assert refused.value.status == 404
    assert library_listing("") == []
