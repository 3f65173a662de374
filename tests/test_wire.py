"""The internal wire format (common/wire.py): bytes unchanged, every bad header a WireError."""

from __future__ import annotations

import contextlib

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import WireError
from common.wire import decode_chunk, decode_tap, encode_chunk, encode_tap

# Captured from the encoder that used the msgpack library (a637896): the bytes must not change.
OLD_CHUNK_F4 = bytes.fromhex(
    "89a17601a16ba56368756e6ba4726f6f6da563686f6972a673696e676572a27331a673747265616d03"
    "a373657107a57374617274ce02dc6c00a16e02a56474797065a33c66340000003f000080be"
)
OLD_CHUNK_I2 = bytes.fromhex(
    "89a17601a16ba56368756e6ba4726f6f6da563686f6972a673696e676572a27331a673747265616d"
    "ceffffffffa373657100a57374617274cf0000010000000000a16e03a56474797065a33c6932"
    "0100feff0300"
)
OLD_TAP_HEADER = bytes.fromhex(
    "88a17601a16ba3746170a4726f6f6da563686f6972a564656c6179cdbb80a57374617274cd12c0"
    "a16ecd03c0a56474797065a33c6634a5636c6f636bce075bcd15"
)
OLD_SOLO_TAP_HEADER = bytes.fromhex(
    "89a17601a16ba3746170a4726f6f6da563686f6972a564656c617900a5737461727400a16ecd03c0"
    "a56474797065a33c6634a5636c6f636b00a36d6978a4736f6c6f"
)
SILENCE = np.zeros(960, np.float32)


def test_chunks_are_encoded_as_before() -> None:
    f4 = np.array([0.5, -0.25], dtype=np.float32)
    assert encode_chunk("choir", "s1", 3, 7, 48_000_000, f4) == OLD_CHUNK_F4
    i2 = np.array([1, -2, 3], dtype=np.int16)
    assert encode_chunk("choir", "s1", 0xFFFF_FFFF, 0, 1 << 40, i2) == OLD_CHUNK_I2


def test_taps_are_encoded_as_before() -> None:
    silence = SILENCE.tobytes()
    assert encode_tap("choir", 48_000, 4800, 123_456_789, SILENCE) == OLD_TAP_HEADER + silence
    assert encode_tap("choir", 0, 0, 0, SILENCE, mix="solo") == OLD_SOLO_TAP_HEADER + silence


def test_old_bytes_decode() -> None:
    chunk = decode_chunk(OLD_CHUNK_F4)
    assert (chunk.room, chunk.singer, chunk.stream, chunk.seq, chunk.start) == (
        "choir",
        "s1",
        3,
        7,
        48_000_000,
    )
    assert chunk.samples.tolist() == [0.5, -0.25]
    assert np.array_equal(decode_chunk(OLD_CHUNK_I2).samples * 32768, [1, -2, 3])
    tap = decode_tap(OLD_SOLO_TAP_HEADER + SILENCE.tobytes())
    assert (tap.delay, tap.start, tap.clock, tap.mix) == (0, 0, 0, "solo")
    assert decode_tap(OLD_TAP_HEADER + SILENCE.tobytes()).mix == "full"


def _chunk_with(**change: object) -> bytes:
    header: dict[str, object] = {
        "v": 1,
        "k": "chunk",
        "room": "choir",
        "singer": "s1",
        "stream": 0,
        "seq": 0,
        "start": 0,
        "n": 2,
        "dtype": "<f4",
    }
    header.update(change)
    return msgspec.msgpack.encode(header) + np.zeros(2, np.float32).tobytes()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty message"),
        (b"\x92\x01\x02", "must be a map"),
        (_chunk_with(v=2), "unsupported wire version 2"),
        (_chunk_with(v=True), "unsupported wire version"),
        (_chunk_with(k="tap"), "expected a 'chunk' message"),
        (_chunk_with(n=0), r"\$\.n"),
        (_chunk_with(n=3), "payload is 8 bytes"),
        (_chunk_with(dtype="<f8"), r"\$\.dtype"),
        (_chunk_with(stream=-1), r"\$\.stream"),
        (_chunk_with(start=1 << 63), r"\$\.start"),
        (_chunk_with(room="a b"), "room"),
        (_chunk_with(singer=["s"]), "only strings, numbers"),
        (_chunk_with(pad="x" * 600), "longer than 512 bytes"),
        (_chunk_with(seq=None), r"\$\.seq"),
        (OLD_CHUNK_F4[:10], "cut short"),
    ],
)
def test_bad_chunks_are_wire_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(WireError, match=fragment):
        decode_chunk(data)


def test_bad_taps_are_wire_errors() -> None:
    with pytest.raises(WireError, match="960-sample frame boundary"):
        decode_tap(encode_tap("choir", 0, 5, 0, SILENCE))
    with pytest.raises(WireError, match="expected a 'tap' message"):
        decode_tap(OLD_CHUNK_F4)
    with pytest.raises(WireError, match="NaN"):
        decode_tap(OLD_TAP_HEADER + np.full(960, np.nan, np.float32).tobytes())


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_decoders_only_raise_wire_errors(data: bytes) -> None:
    for decode in (decode_chunk, decode_tap):
        with contextlib.suppress(WireError):
            decode(data)


@settings(max_examples=300)
@given(st.integers(0, len(OLD_CHUNK_I2) - 1), st.integers(0, 255))
def test_one_changed_byte_is_decoded_or_refused(index: int, value: int) -> None:
    data = bytearray(OLD_CHUNK_I2)
    data[index] = value
    with contextlib.suppress(WireError):
        decode_chunk(bytes(data))
