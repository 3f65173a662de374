"""common.codec against the real libopus (no mocks)."""

import numpy as np
import numpy.typing as npt
import opuslib_next
import pytest

from common.codec import (
    CodecError,
    OpusDecoder,
    OpusEncoder,
    float_to_pcm16,
    pcm16_to_float,
)
from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE

Samples = npt.NDArray[np.float32]

# Comfortably past the codec's start-up: 312 samples of algorithmic delay plus
# the encoder's first, coarser frames.
SETTLE_FRAMES = 3


def sine(freq_hz: float, n_frames: int, amplitude: float = 0.5) -> Samples:
    t = np.arange(n_frames * OPUS_FRAME_SAMPLES) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def dominant_hz(x: Samples) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return float(np.fft.rfftfreq(x.shape[0], 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def rms(x: Samples) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def encode(samples: Samples) -> list[bytes]:
    with OpusEncoder() as encoder:
        return encoder.encode_frames(samples)


def opuslib_packet(n_samples: int) -> bytes:
    """A packet of another duration, made by opuslib_next's own encoder."""
    encoder = opuslib_next.Encoder(SAMPLE_RATE, 1, "audio")
    return bytes(encoder.encode_float(sine(440, 1)[:n_samples].tobytes(), n_samples))


# --- round trip -----------------------------------------------------------------


@pytest.mark.parametrize("freq_hz", [440.0, 660.0])
def test_round_trip_keeps_frequency_and_level(freq_hz: float) -> None:
    source = sine(freq_hz, 50)
    decoded = OpusDecoder().decode_packets(encode(source))

    assert decoded.dtype == np.float32
    assert decoded.shape == source.shape
    steady = decoded[SETTLE_FRAMES * OPUS_FRAME_SAMPLES :]
    assert abs(dominant_hz(steady) - freq_hz) < 2.0
    assert rms(steady) == pytest.approx(rms(source), rel=0.1)


def test_decode_into_writes_only_its_view_of_a_larger_buffer() -> None:
    packets = encode(sine(440, 6))
    expected = OpusDecoder().decode_packets(packets)
    offset = 123  # deliberately not frame-aligned
    big = np.full(offset + len(packets) * OPUS_FRAME_SAMPLES + 500, 7.0, np.float32)

    decoder = OpusDecoder()
    for k, packet in enumerate(packets):
        start = offset + k * OPUS_FRAME_SAMPLES
        assert decoder.decode_into(packet, big[start : start + 2 * OPUS_FRAME_SAMPLES]) == 960

    end = offset + len(packets) * OPUS_FRAME_SAMPLES
    np.testing.assert_array_equal(big[offset:end], expected)
    assert np.all(big[:offset] == 7.0)
    assert np.all(big[end:] == 7.0)


def test_decode_packets_returns_960_samples_per_packet() -> None:
    packets = encode(sine(660, 7))
    reference = OpusDecoder()
    one_by_one = np.empty(7 * OPUS_FRAME_SAMPLES, np.float32)
    for k, packet in enumerate(packets):
        reference.decode_into(packet, one_by_one[k * 960 : (k + 1) * 960])

    decoded = OpusDecoder().decode_packets(packets)

    assert decoded.shape == (7 * OPUS_FRAME_SAMPLES,)
    np.testing.assert_array_equal(decoded, one_by_one)


def test_decode_packets_of_no_packets_is_empty() -> None:
    decoded = OpusDecoder().decode_packets([])
    assert decoded.shape == (0,)
    assert decoded.dtype == np.float32


def test_decode_packets_grows_for_long_packets() -> None:
    # 12 x 60 ms is more than the 20 ms-per-packet preallocation holds.
    packets = [opuslib_packet(2880)] * 12 + [opuslib_packet(480)]
    decoded = OpusDecoder().decode_packets(packets)
    assert decoded.shape == (12 * 2880 + 480,)
    assert np.all(np.isfinite(decoded))


@pytest.mark.parametrize("n_samples", [480, 1920, 2880])
def test_other_packet_durations_decode_when_out_has_room(n_samples: int) -> None:
    packet = opuslib_packet(n_samples)
    assert OpusDecoder().decode_into(packet, np.empty(n_samples, np.float32)) == n_samples


def test_packet_longer_than_out_is_rejected_with_sizes() -> None:
    with pytest.raises(CodecError, match=r"1920 samples \(40 ms\) but out has room for 960"):
        OpusDecoder().decode_into(opuslib_packet(1920), np.empty(960, np.float32))


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        b"\x03\x00",  # code-3 packet declaring zero frames
        b"\xff\xff\xff",  # code-3 packet whose padding runs past the end
        b"\x01" + b"\x00" * 3,  # code-1 (two equal frames) with an odd payload
    ],
)
def test_corrupt_packet_raises_and_decoder_survives(packet: bytes) -> None:
    decoder = OpusDecoder()
    out = np.empty(OPUS_FRAME_SAMPLES, np.float32)
    with pytest.raises(CodecError, match="corrupted stream"):
        decoder.decode_into(packet, out)
    assert decoder.decode_into(encode(sine(440, 1))[0], out) == 960


def test_empty_packet_raises_rather_than_concealing() -> None:
    with pytest.raises(CodecError, match="empty"):
        OpusDecoder().decode_into(b"", np.empty(OPUS_FRAME_SAMPLES, np.float32))


def test_packet_must_be_bytes() -> None:
    packet = bytearray(encode(sine(440, 1))[0])
    with pytest.raises(CodecError, match="bytearray"):
        OpusDecoder().decode_into(packet, np.empty(OPUS_FRAME_SAMPLES, np.float32))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "out",
    [
        np.empty(OPUS_FRAME_SAMPLES, np.float64),
        np.empty((1, OPUS_FRAME_SAMPLES), np.float32),
        np.empty(2 * OPUS_FRAME_SAMPLES, np.float32)[::2],
        np.frombuffer(bytes(4 * OPUS_FRAME_SAMPLES), np.float32),  # read-only
    ],
    ids=["float64", "2-D", "strided", "read-only"],
)
def test_unusable_out_buffer_is_rejected(out: Samples) -> None:
    with pytest.raises(CodecError, match="out must be"):
        OpusDecoder().decode_into(encode(sine(440, 1))[0], out)


# --- loss and restarts ----------------------------------------------------------


def test_reset_after_a_gap_decodes_a_fresh_stream_like_a_new_decoder() -> None:
    first, second = encode(sine(440, 10)), encode(sine(660, 10))
    fresh = OpusDecoder().decode_packets(second)

    reused = OpusDecoder()
    reused.decode_packets(first)
    reused.reset()
    np.testing.assert_array_equal(reused.decode_packets(second), fresh)

    # Without the reset the old state leaks into the new stream, so the
    # equality above really depends on reset().
    stale = OpusDecoder()
    stale.decode_packets(first)
    assert not np.array_equal(stale.decode_packets(second), fresh)


def test_conceal_fills_one_frame_and_decoding_continues() -> None:
    packets = encode(sine(440, 8))
    decoder = OpusDecoder()
    decoder.decode_packets(packets[:4])
    out = np.full(OPUS_FRAME_SAMPLES + 10, np.nan, np.float32)

    assert decoder.conceal(out) == 960

    assert np.all(np.isfinite(out[:960]))
    assert rms(out[:960]) > 0.01  # concealment continues the tone, not silence
    assert np.all(np.isnan(out[960:]))
    assert decoder.decode_packets(packets[5:]).shape == (3 * 960,)


def test_conceal_needs_room_for_a_whole_frame() -> None:
    with pytest.raises(CodecError, match="room for 959"):
        OpusDecoder().conceal(np.empty(959, np.float32))


def test_close_is_idempotent_and_closed_codecs_refuse_work() -> None:
    with OpusDecoder() as decoder, OpusEncoder() as encoder:
        pass
    decoder.close()
    encoder.close()
    with pytest.raises(RuntimeError, match="closed"):
        decoder.conceal(np.empty(OPUS_FRAME_SAMPLES, np.float32))
    with pytest.raises(RuntimeError, match="closed"):
        encoder.encode(sine(440, 1))


# --- encoder --------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros(OPUS_FRAME_SAMPLES - 1, np.float32),
        np.zeros(2 * OPUS_FRAME_SAMPLES, np.float32),
        np.zeros(OPUS_FRAME_SAMPLES, np.float64),
        np.zeros(OPUS_FRAME_SAMPLES, np.int16),
        np.zeros((1, OPUS_FRAME_SAMPLES), np.float32),
        [0.0] * OPUS_FRAME_SAMPLES,
    ],
    ids=["short", "long", "float64", "int16", "2-D", "list"],
)
def test_encoder_rejects_anything_but_960_float32(frame: Samples) -> None:
    with pytest.raises(CodecError, match=r"shape \(960,\)"):
        OpusEncoder().encode(frame)


def test_encoder_accepts_a_strided_frame() -> None:
    wide = np.repeat(sine(440, 1), 2)
    assert OpusEncoder().encode(wide[::2]) == OpusEncoder().encode(sine(440, 1))


def test_encode_frames_is_encode_per_frame() -> None:
    source = sine(440, 5)
    one_by_one = OpusEncoder()
    expected = [one_by_one.encode(source[i : i + 960]) for i in range(0, source.shape[0], 960)]
    assert OpusEncoder().encode_frames(source) == expected


def test_encode_frames_rejects_partial_frames() -> None:
    with pytest.raises(CodecError, match="not a multiple of 960"):
        OpusEncoder().encode_frames(np.zeros(1000, np.float32))


def test_encoder_reset_restarts_the_stream() -> None:
    source = sine(660, 4)
    encoder = OpusEncoder()
    first = encoder.encode_frames(source)
    encoder.reset()
    assert encoder.encode_frames(source) == first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bitrate": 5}, "outside"),
        ({"bitrate": 1_000_000}, "outside"),
        ({"complexity": 11}, "complexity 11 rejected"),
    ],
)
def test_encoder_settings_are_validated(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        OpusEncoder(**kwargs)


def test_bitrate_setting_takes_effect() -> None:
    source = sine(440, 50)
    low = sum(map(len, OpusEncoder(bitrate=16_000).encode_frames(source)))
    high = sum(map(len, OpusEncoder(bitrate=128_000).encode_frames(source)))
    assert low < high


# --- interop with opuslib_next's own classes ------------------------------------


def test_our_packets_decode_identically_in_opuslib_next() -> None:
    packets = encode(sine(440, 10))
    theirs = opuslib_next.Decoder(SAMPLE_RATE, 1)
    their_samples = np.concatenate(
        [np.frombuffer(theirs.decode_float(p, OPUS_FRAME_SAMPLES), np.float32) for p in packets]
    )
    np.testing.assert_array_equal(OpusDecoder().decode_packets(packets), their_samples)


def test_opuslib_next_packets_decode_identically_here() -> None:
    theirs = opuslib_next.Encoder(SAMPLE_RATE, 1, "audio")
    theirs.bitrate = 64_000
    source = sine(660, 10)
    packets = [
        bytes(theirs.encode_float(source[i : i + 960].tobytes(), 960))
        for i in range(0, source.shape[0], 960)
    ]
    # Same libopus, same settings: the two encoders agree bit for bit.
    assert packets == encode(source)

    their_decoder = opuslib_next.Decoder(SAMPLE_RATE, 1)
    expected = np.concatenate(
        [np.frombuffer(their_decoder.decode_float(p, 960), np.float32) for p in packets]
    )
    np.testing.assert_array_equal(OpusDecoder().decode_packets(packets), expected)


# --- PCM16 ----------------------------------------------------------------------


def test_pcm16_round_trips_every_value() -> None:
    data = np.arange(-32768, 32768, dtype="<i2").tobytes()
    samples = pcm16_to_float(data)
    assert samples.dtype == np.float32
    assert samples[0] == -1.0
    assert samples[-1] == 32767 / 32768
    assert float_to_pcm16(samples) == data


def test_pcm16_is_little_endian_and_accepts_memoryview() -> None:
    samples = pcm16_to_float(memoryview(b"\x01\x00\x00\x80\xff\x7f"))
    np.testing.assert_array_equal(samples, np.array([1, -32768, 32767], np.float32) / 32768)


def test_float_to_pcm16_clips_and_rounds() -> None:
    samples = np.array(
        [1.0, 1.5, np.inf, -1.0, -2.0, -np.inf, 0.4 / 32768, 0.6 / 32768, -0.6 / 32768, np.nan],
        np.float32,
    )
    values = np.frombuffer(float_to_pcm16(samples), "<i2")
    np.testing.assert_array_equal(
        values, [32767, 32767, 32767, -32768, -32768, -32768, 0, 1, -1, 0]
    )


def test_float_to_pcm16_rejects_other_dtypes() -> None:
    with pytest.raises(CodecError, match="float64"):
        float_to_pcm16(np.zeros(4, np.float64))


def test_pcm16_odd_byte_count_is_rejected() -> None:
    with pytest.raises(CodecError, match=r"odd byte count \(3\)"):
        pcm16_to_float(b"\x00\x01\x02")


def test_pcm16_non_contiguous_view_is_rejected() -> None:
    with pytest.raises(CodecError, match="contiguous"):
        pcm16_to_float(memoryview(bytes(8))[::2])


def test_int16_batch_decode_matches_the_float_decode() -> None:
    encoder = OpusEncoder()
    signal = (0.4 * np.sin(2 * np.pi * 440 * np.arange(960 * 8) / 48000)).astype(np.float32)
    packets = encoder.encode_frames(signal)
    as_float = OpusDecoder().decode_packets(packets)
    as_int16 = OpusDecoder().decode_frames_int16(packets)
    assert as_int16.dtype == np.dtype("<i2") and as_int16.shape == (960 * 8,)
    scaled = np.clip(np.round(as_float * 32768), -32768, 32767)
    assert np.abs(scaled - as_int16.astype(np.float64)).max() <= 2


def test_int16_batch_decode_rejects_bad_packets() -> None:
    decoder = OpusDecoder()
    good = OpusEncoder().encode_frames(np.zeros(960, np.float32))[0]
    with pytest.raises(CodecError, match="empty"):
        decoder.decode_frames_int16([good, b""])
    with pytest.raises(CodecError):
        decoder.decode_frames_int16([b"\xff\xff\xff\xff"])
    # Legal Opus, but not the 20 ms packets the protocol asks for.
    with pytest.raises(CodecError):
        decoder.decode_frames_int16([opuslib_packet(1920)])
    with pytest.raises(CodecError, match="480 samples"):
        decoder.decode_frames_int16([opuslib_packet(480)])


def test_int16_decode_into_the_reused_buffer_matches_a_fresh_decode() -> None:
    signal = (0.4 * np.sin(2 * np.pi * 440 * np.arange(960 * 12) / 48000)).astype(np.float32)
    packets = OpusEncoder().encode_frames(signal)
    fresh, reusing = OpusDecoder(), OpusDecoder()
    # Message sizes that shrink and grow: the buffer is reallocated only to grow,
    # and each call returns exactly its own samples.
    for start, stop in ((0, 2), (2, 3), (3, 8), (8, 12)):
        expected = fresh.decode_frames_int16(packets[start:stop])
        got = reusing.decode_frames_int16(packets[start:stop], reuse=True)
        assert got.dtype == np.dtype("<i2") and got.shape == expected.shape
        assert np.array_equal(got, expected)


def test_int16_decode_reuse_overwrites_the_previous_result() -> None:
    packets = OpusEncoder().encode_frames(sine(440, 2, 0.5))
    decoder = OpusDecoder()
    first = decoder.decode_frames_int16(packets[:1], reuse=True)
    kept = first.copy()
    second = decoder.decode_frames_int16(packets[1:], reuse=True)
    assert np.shares_memory(first, second)
    assert not np.array_equal(kept, second)  # the view was overwritten, as documented
