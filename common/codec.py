"""Opus (48 kHz mono, 20 ms frames) and PCM16 conversion: the gateway, the load generator, benches.

Both directions call libopus through ctypes with a pointer straight into the
numpy buffer: opuslib_next's own ``decode_float`` copies every sample through
a Python list, which costs about as much as the decode itself.  The library
handle and the state constructors come from ``opuslib_next.api``; the
functions called per frame are declared here, once, in one block.

One :class:`OpusDecoder` per singer stream and one :class:`OpusEncoder` per
tap: libopus state is per stream and not safe to share between threads.
libopus calls release the GIL, so codec work can run in a thread pool.
"""

import ctypes
import weakref
from collections.abc import Callable, Sequence
from typing import Final, Self

import numpy as np
import numpy.typing as npt
import opuslib_next.api
import opuslib_next.api.decoder
import opuslib_next.api.encoder

from common.constants import OPUS_FRAME_SAMPLES, SAMPLE_RATE
from common.errors import ValidationError

Samples = npt.NDArray[np.float32]

MAX_PACKET_SAMPLES: Final = 6 * OPUS_FRAME_SAMPLES
"""The longest legal Opus packet: 120 ms, 5760 samples at 48 kHz."""

_FRAME_BYTES_INT16: Final = 2 * OPUS_FRAME_SAMPLES

MIN_BITRATE: Final = 6_000
MAX_BITRATE: Final = 510_000
"""Opus's useful bitrate range (b/s); libopus would silently clamp values outside it."""

MAX_PACKET_BYTES: Final = 4000
"""Output buffer per encoded packet, the size the libopus documentation recommends."""

# From opus_defines.h.
_OPUS_OK: Final = 0
_OPUS_BUFFER_TOO_SMALL: Final = -2
_OPUS_APPLICATION_AUDIO: Final = 2049
_OPUS_SET_BITRATE_REQUEST: Final = 4002
_OPUS_SET_COMPLEXITY_REQUEST: Final = 4010
_OPUS_RESET_STATE: Final = 4028


class CodecError(ValidationError):
    """A packet or sample buffer was rejected, or libopus reported an error."""


# --- ctypes declarations (the only place argtypes/restype are set) -----------

_LIB: Final[ctypes.CDLL] = opuslib_next.api.libopus
_DECODER_P: Final = opuslib_next.api.decoder.DecoderPointer
_ENCODER_P: Final = opuslib_next.api.encoder.EncoderPointer


def _declare(name: str, restype: type | None, *argtypes: type) -> "ctypes._NamedFuncPointer":
    # CDLL[name] returns a fresh function object, unlike CDLL.name which is
    # cached and shared with opuslib_next: our argtypes (c_void_p for numpy
    # addresses) must not change the declarations opuslib_next relies on.
    func = _LIB[name]
    func.restype = restype
    func.argtypes = argtypes
    return func


_DECODE_FLOAT: Final = _declare(
    "opus_decode_float",
    ctypes.c_int,
    _DECODER_P,
    ctypes.c_char_p,  # data (None = lost packet)
    ctypes.c_int32,  # len
    ctypes.c_void_p,  # pcm: a numpy buffer address
    ctypes.c_int,  # frame_size
    ctypes.c_int,  # decode_fec
)
_DECODE_INT16: Final = _declare(
    "opus_decode",
    ctypes.c_int,
    _DECODER_P,
    ctypes.c_char_p,  # data
    ctypes.c_int32,  # len
    ctypes.c_void_p,  # pcm: a numpy int16 buffer address
    ctypes.c_int,  # frame_size
    ctypes.c_int,  # decode_fec
)
_ENCODE_FLOAT: Final = _declare(
    "opus_encode_float",
    ctypes.c_int32,
    _ENCODER_P,
    ctypes.c_void_p,  # pcm: a numpy buffer address
    ctypes.c_int,  # frame_size
    ctypes.c_void_p,  # data out
    ctypes.c_int32,  # max_data_bytes
)
# The ctl functions are variadic: declare only the fixed arguments and pass
# the value as an extra c_int, which is what the C ABI expects for an int.
_DECODER_CTL: Final = _declare("opus_decoder_ctl", ctypes.c_int, _DECODER_P, ctypes.c_int)
_ENCODER_CTL: Final = _declare("opus_encoder_ctl", ctypes.c_int, _ENCODER_P, ctypes.c_int)
_DECODER_DESTROY: Final = _declare("opus_decoder_destroy", None, _DECODER_P)
_ENCODER_DESTROY: Final = _declare("opus_encoder_destroy", None, _ENCODER_P)
_PACKET_GET_NB_SAMPLES: Final = _declare(
    "opus_packet_get_nb_samples", ctypes.c_int, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int
)
_STRERROR: Final = _declare("opus_strerror", ctypes.c_char_p, ctypes.c_int)


def _strerror(code: int) -> str:
    message = _STRERROR(code)
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else "unknown"
    return f"{text} ({code})"


def _create_decoder() -> object:
    try:
        return opuslib_next.api.decoder.create_state(SAMPLE_RATE, 1)
    except opuslib_next.OpusError as exc:
        raise CodecError(f"opus_decoder_create failed: {_strerror(exc.code)}") from exc


def _create_encoder() -> object:
    try:
        return opuslib_next.api.encoder.create_state(SAMPLE_RATE, 1, _OPUS_APPLICATION_AUDIO)
    except opuslib_next.OpusError as exc:
        raise CodecError(f"opus_encoder_create failed: {_strerror(exc.code)}") from exc


def _check_out(out: Samples) -> None:
    # libopus writes through a raw address, so anything but a writable,
    # contiguous float32 vector would be silently corrupted or copied away.
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.ndim != 1:
        raise CodecError(f"out must be a 1-D float32 array, got {_describe(out)}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise CodecError("out must be C-contiguous and writeable")


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


# --- decoder ------------------------------------------------------------------


class _OpusState:
    """A libopus encoder or decoder state: freed on close() or garbage collection."""

    def __init__(
        self, state: object, destroy: Callable[[object], None], ctl: Callable[..., int]
    ) -> None:
        self._state: object | None = state
        self._ctl_func = ctl
        self._free = weakref.finalize(self, destroy, state)

    def reset(self) -> None:
        """Return to a freshly created state (settings such as the bitrate are kept)."""
        code = int(self._ctl_func(self._live(), _OPUS_RESET_STATE))
        if code != _OPUS_OK:
            raise CodecError(f"OPUS_RESET_STATE failed: {_strerror(code)}")

    def close(self) -> None:
        """Free the libopus state; safe to call more than once."""
        self._state = None
        self._free()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _live(self) -> object:
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__} is closed")
        return self._state


class OpusDecoder(_OpusState):
    """One per singer stream (decoder state is per stream).

    Decodes 48 kHz mono float32.  Call :meth:`close` (or use ``with``) to free
    the libopus state early; otherwise it is freed when garbage-collected.
    """

    def __init__(self) -> None:
        super().__init__(_create_decoder(), _DECODER_DESTROY, _DECODER_CTL)
        self._buffer: npt.NDArray[np.int16] = np.empty(0, dtype="<i2")
        """decode_frames_int16's reused output (``reuse=True``), and its address."""
        self._buffer_address = 0

    def decode_into(self, packet: bytes, out: Samples) -> int:
        """Decode one packet into ``out`` and return the number of samples written.

        ``out`` is a 1-D, C-contiguous, writeable float32 array (a view into a
        larger buffer is fine).  A 20 ms packet writes 960 samples; 10, 40 or
        60 ms packets are accepted when ``out`` has room for them.  Raises
        :class:`CodecError` for an empty or corrupt packet or an unusable ``out``.
        """
        state = self._live()
        _check_out(out)
        if not isinstance(packet, bytes):
            raise CodecError(f"packet must be bytes, got {type(packet).__name__}")
        if not packet:
            # libopus would treat an empty packet as a lost one and conceal it;
            # loss is the caller's decision (conceal()), not the wire's.
            raise CodecError("empty Opus packet")
        frame_size = min(out.shape[0], MAX_PACKET_SAMPLES)
        n = int(_DECODE_FLOAT(state, packet, len(packet), out.ctypes.data, frame_size, 0))
        if n < 0:
            raise CodecError(_decode_error(n, packet, out.shape[0]))
        return n

    def decode_packets(self, packets: Sequence[bytes]) -> Samples:
        """Decode consecutive packets into one new float32 array (all samples, in order)."""
        # Room for every packet at 20 ms plus one maximal packet at the end, so
        # a stream of 20 ms packets never reallocates; longer ones grow it.
        buf = np.empty(len(packets) * OPUS_FRAME_SAMPLES + MAX_PACKET_SAMPLES, np.float32)
        pos = 0
        for packet in packets:
            if buf.shape[0] - pos < MAX_PACKET_SAMPLES:
                grown = np.empty(max(2 * buf.shape[0], pos + MAX_PACKET_SAMPLES), np.float32)
                grown[:pos] = buf[:pos]
                buf = grown
            pos += self.decode_into(packet, buf[pos : pos + MAX_PACKET_SAMPLES])
        return buf[:pos]

    def decode_frames_int16(
        self, packets: Sequence[bytes], *, reuse: bool = False
    ) -> npt.NDArray[np.int16]:
        """Decode 20 ms packets straight to int16, 960 samples each, in order.

        For the internal wire, which carries int16: libopus's own int16 output
        saves scaling, clipping and converting a float buffer per message.
        The samples go into a new array; with ``reuse``, into this decoder's
        own buffer instead (grown when needed), returned as a view that the
        next call overwrites: for a caller that copies the samples out at
        once, it saves an allocation and an address lookup per call.  Raises
        :class:`CodecError` for an empty or corrupt packet, or one that is
        not 20 ms.
        """
        state = self._live()
        count = len(packets) * OPUS_FRAME_SAMPLES
        if not reuse:
            out = np.empty(count, dtype="<i2")
            base = out.ctypes.data
        else:
            if self._buffer.shape[0] < count:
                self._buffer = np.empty(count, dtype="<i2")
                self._buffer_address = self._buffer.ctypes.data
            out, base = self._buffer, self._buffer_address
        for index, packet in enumerate(packets):
            if not isinstance(packet, bytes) or not packet:
                raise CodecError(f"packet {index} is empty or not bytes")
            address = base + index * _FRAME_BYTES_INT16
            n = _DECODE_INT16(state, packet, len(packet), address, OPUS_FRAME_SAMPLES, 0)
            if n != OPUS_FRAME_SAMPLES:
                if n < 0:
                    raise CodecError(_decode_error(n, packet, OPUS_FRAME_SAMPLES))
                raise CodecError(
                    f"packet {index} holds {n} samples; every packet must be 20 ms "
                    f"({OPUS_FRAME_SAMPLES} samples)"
                )
        return out[:count]

    def conceal(self, out: Samples) -> int:
        """Write 960 samples of packet-loss concealment for one missing 20 ms frame."""
        state = self._live()
        _check_out(out)
        if out.shape[0] < OPUS_FRAME_SAMPLES:
            raise CodecError(f"out has room for {out.shape[0]} samples, need {OPUS_FRAME_SAMPLES}")
        n = int(_DECODE_FLOAT(state, None, 0, out.ctypes.data, OPUS_FRAME_SAMPLES, 0))
        if n < 0:
            raise CodecError(f"opus_decode_float (concealment) failed: {_strerror(n)}")
        return n


def _decode_error(code: int, packet: bytes, room: int) -> str:
    if code == _OPUS_BUFFER_TOO_SMALL:
        needed = int(_PACKET_GET_NB_SAMPLES(packet, len(packet), SAMPLE_RATE))
        if needed > 0:
            return (
                f"packet holds {needed} samples ({needed * 1000 // SAMPLE_RATE} ms) "
                f"but out has room for {room}"
            )
    return f"opus_decode_float failed on a {len(packet)}-byte packet: {_strerror(code)}"


# --- encoder ------------------------------------------------------------------


class OpusEncoder(_OpusState):
    """One per tap per gateway: 48 kHz mono float32 in, one packet per 20 ms frame.

    Uses OPUS_APPLICATION_AUDIO (music, not speech).  ``bitrate`` in b/s,
    ``complexity`` 0-10 (None keeps the libopus default); CodecError otherwise.
    """

    def __init__(self, bitrate: int = 64_000, complexity: int | None = None) -> None:
        if not MIN_BITRATE <= bitrate <= MAX_BITRATE:
            raise CodecError(f"bitrate {bitrate} b/s is outside [{MIN_BITRATE}, {MAX_BITRATE}]")
        super().__init__(_create_encoder(), _ENCODER_DESTROY, _ENCODER_CTL)
        self._out = (ctypes.c_char * MAX_PACKET_BYTES)()
        try:
            self._ctl(_OPUS_SET_BITRATE_REQUEST, bitrate, f"bitrate {bitrate}")
            if complexity is not None:
                self._ctl(_OPUS_SET_COMPLEXITY_REQUEST, complexity, f"complexity {complexity}")
        except CodecError:
            self.close()
            raise

    def encode(self, frame: Samples) -> bytes:
        """Encode exactly 960 float32 samples (nominally in [-1, 1]) as one packet."""
        state = self._live()
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.float32
            or frame.shape != (OPUS_FRAME_SAMPLES,)
        ):
            raise CodecError(
                f"expected a float32 array of shape ({OPUS_FRAME_SAMPLES},), got {_describe(frame)}"
            )
        if not frame.flags.c_contiguous:
            frame = np.ascontiguousarray(frame)
        n = int(
            _ENCODE_FLOAT(state, frame.ctypes.data, OPUS_FRAME_SAMPLES, self._out, MAX_PACKET_BYTES)
        )
        if n < 0:
            raise CodecError(f"opus_encode_float failed: {_strerror(n)}")
        return ctypes.string_at(self._out, n)

    def encode_frames(self, samples: Samples) -> list[bytes]:
        """Encode a 1-D float32 array whose length is a multiple of 960, one packet per frame."""
        if not isinstance(samples, np.ndarray) or samples.dtype != np.float32 or samples.ndim != 1:
            raise CodecError(f"expected a 1-D float32 array, got {_describe(samples)}")
        if samples.shape[0] % OPUS_FRAME_SAMPLES:
            raise CodecError(
                f"{samples.shape[0]} samples is not a multiple of {OPUS_FRAME_SAMPLES}"
            )
        return [
            self.encode(samples[i : i + OPUS_FRAME_SAMPLES])
            for i in range(0, samples.shape[0], OPUS_FRAME_SAMPLES)
        ]

    def _ctl(self, request: int, value: int, what: str) -> None:
        code = int(_ENCODER_CTL(self._live(), request, ctypes.c_int(value)))
        if code != _OPUS_OK:
            raise CodecError(f"{what} rejected by libopus: {_strerror(code)}")


# --- PCM16 --------------------------------------------------------------------


def pcm16_to_float(data: bytes | memoryview) -> Samples:
    """Little-endian int16 samples to float32 in [-1, 1) (divided by 32768)."""
    try:
        raw = memoryview(data).cast("B")
    except TypeError as exc:
        raise CodecError(f"PCM16 data must be a contiguous buffer: {exc}") from exc
    if raw.nbytes % 2:
        raise CodecError(f"PCM16 data has an odd byte count ({raw.nbytes})")
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32)
    samples *= np.float32(1 / 32768)
    return samples


def float_to_pcm16(samples: Samples) -> bytes:
    """1-D float32 to little-endian int16: clipped to [-1, 1), rounded; NaN becomes 0."""
    if not isinstance(samples, np.ndarray) or samples.dtype != np.float32 or samples.ndim != 1:
        raise CodecError(f"expected a 1-D float32 array, got {_describe(samples)}")
    scaled = samples * np.float32(32768)
    # A NaN from upstream must not become a full-scale click (its int cast is undefined).
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    return scaled.astype("<i2").tobytes()
