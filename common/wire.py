"""The internal wire format between gateways and mixers (version 1).

A message is one msgpack map (the header) followed directly by the raw
little-endian samples.  Two kinds travel this way:

* ``chunk``: a singer's audio, gateway -> mixer (stream ``bb:{room}:in``).
  Header ``{"v", "k": "chunk", "room", "singer", "stream", "seq", "start",
  "n", "dtype"}``; ``dtype`` is ``"<f4"`` or ``"<i2"``.
* ``tap``: a tap's mix window, mixer -> gateways (``bb:{room}:tap:{delay}``).
  Header ``{"v", "k": "tap", "room", "delay", "start", "n", "dtype", "clock",
  "mix"}``; ``n`` is a whole number of 960-sample frames, ``dtype`` is
  ``"<f4"`` and ``mix`` is ``"full"`` or ``"solo"`` (absent: full).

``start`` is an absolute sample position (48 kHz since the epoch) and ``n``
the sample count.  Decoding validates everything and raises
:class:`common.errors.WireError` with a precise message; no pickle, no
dtype or shape is trusted from the wire beyond the two allowed dtypes.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from common.constants import MAX_CHUNK_SAMPLES, OPUS_FRAME_SAMPLES, WIRE_VERSION
from common.errors import WireError
from common.names import check_id, check_room

Samples = npt.NDArray[np.float32]

_DTYPES: Final[dict[str, np.dtype[Any]]] = {"<f4": np.dtype("<f4"), "<i2": np.dtype("<i2")}
_MAX_HEADER_BYTES: Final = 512
_MAX_HEADER_FIELDS: Final = 16
_MAX_POSITION: Final = 1 << 62
MAX_TAP_SAMPLES: Final = 50 * OPUS_FRAME_SAMPLES
"""Largest tap window one message may carry (1 s)."""

_U32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)]
_Position = Annotated[int, msgspec.Meta(ge=0, le=_MAX_POSITION)]


class ChunkHeader(msgspec.Struct, frozen=True, kw_only=True):
    """A ``chunk`` message's header, in its wire order (the map's keys are the fields)."""

    v: int
    k: str
    room: str
    singer: str
    stream: _U32
    seq: _U32
    start: _Position
    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK_SAMPLES)]
    dtype: Literal["<f4", "<i2"]


class TapHeader(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A ``tap`` message's header, in its wire order; ``mix`` is left out when ``full``."""

    v: int
    k: str
    room: str
    delay: _Position
    start: _Position
    n: Annotated[int, msgspec.Meta(ge=OPUS_FRAME_SAMPLES, le=MAX_TAP_SAMPLES)]
    dtype: Literal["<f4"]
    clock: _Position
    mix: Literal["full", "solo"] = "full"


class _Envelope(msgspec.Struct, frozen=True):
    """Only the version and kind, read first so a wrong one gets its own message."""

    v: object = None
    k: object = None


_ENCODER: Final = msgspec.msgpack.Encoder()
_ENVELOPE: Final = msgspec.msgpack.Decoder(_Envelope)
_CHUNK: Final = msgspec.msgpack.Decoder(ChunkHeader)
_TAP: Final = msgspec.msgpack.Decoder(TapHeader)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A singer's audio for positions [start, start + len(samples))."""

    room: str
    singer: str
    stream: int
    seq: int
    start: int
    samples: Samples


@dataclass(frozen=True, slots=True)
class TapWindow:
    """A tap's normalised mix for positions [start, start + len(samples))."""

    room: str
    delay: int
    start: int
    clock: int
    samples: Samples
    mix: str = "full"


def encode_chunk(
    room: str,
    singer: str,
    stream: int,
    seq: int,
    start: int,
    samples: npt.NDArray[np.float32] | npt.NDArray[np.int16],
) -> bytes:
    """Frame a chunk; ``samples`` is 1-D float32 (in [-1, 1]) or int16."""
    dtype = _dtype_name(samples)
    header = ChunkHeader(
        v=WIRE_VERSION,
        k="chunk",
        room=room,
        singer=singer,
        stream=stream,
        seq=seq,
        start=start,
        n=samples.shape[0],
        dtype=dtype,
    )
    # One copy of the samples: straight into the message (no tobytes() in between).
    payload = np.ascontiguousarray(samples, _DTYPES[dtype]).data
    return b"".join((_ENCODER.encode(header), payload))


def encode_tap(
    room: str, delay: int, start: int, clock: int, samples: Samples, mix: str = "full"
) -> bytes:
    """Frame a tap window (float32, a whole number of 960-sample frames)."""
    if mix not in ("full", "solo"):
        raise WireError(f"tap mix must be 'full' or 'solo', got {mix!r:.20}")
    header = TapHeader(
        v=WIRE_VERSION,
        k="tap",
        room=room,
        delay=delay,
        start=start,
        n=samples.shape[0],
        dtype="<f4",
        clock=clock,
        mix="solo" if mix == "solo" else "full",
    )
    # One copy of the samples: straight into the message (no tobytes() in between).
    payload = np.ascontiguousarray(samples, "<f4").data
    return b"".join((_ENCODER.encode(header), payload))


def decode_chunk(data: bytes) -> Chunk:
    """Parse and validate a chunk; raises WireError."""
    header, payload = _split(data, "chunk", _CHUNK)
    samples = _samples(header.dtype, payload, header.n)
    try:
        room = check_room(header.room)
        singer = check_id(header.singer, "singer")
    except ValueError as exc:
        raise WireError(str(exc)) from None
    return Chunk(
        room=room,
        singer=singer,
        stream=header.stream,
        seq=header.seq,
        start=header.start,
        samples=samples,
    )


def decode_tap(data: bytes) -> TapWindow:
    """Parse and validate a tap window; raises WireError."""
    header, payload = _split(data, "tap", _TAP)
    n = header.n
    if n % OPUS_FRAME_SAMPLES:
        raise WireError(f"tap window of {n} samples is not a whole number of 960-sample frames")
    if header.start % OPUS_FRAME_SAMPLES:
        raise WireError(f"tap window start {header.start} is not on a 960-sample frame boundary")
    try:
        room = check_room(header.room)
    except ValueError as exc:
        raise WireError(str(exc)) from None
    return TapWindow(
        room=room,
        delay=header.delay,
        start=header.start,
        clock=header.clock,
        samples=_samples(header.dtype, payload, n),
        mix=header.mix,
    )


def _dtype_name(samples: npt.NDArray[Any]) -> Literal["<f4", "<i2"]:
    if samples.ndim != 1:
        raise WireError(f"samples must be 1-D, got shape {samples.shape}")
    if samples.dtype == np.float32:
        return "<f4"
    if samples.dtype == np.int16:
        return "<i2"
    raise WireError(f"samples must be float32 or int16, got {samples.dtype}")


_H = TypeVar("_H", ChunkHeader, TapHeader)


def _split(data: bytes, kind: str, decoder: msgspec.msgpack.Decoder[_H]) -> tuple[_H, memoryview]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"{kind} message must be bytes, got {type(data).__name__}")
    view = memoryview(data)
    # Decode only the header's bytes: msgspec refuses trailing data, and handing it
    # the samples would be work for nothing.
    offset = _header_length(view, kind)
    head = view[:offset]
    try:
        header = decoder.decode(head)
    except msgspec.ValidationError as exc:
        raise _refusal(head, kind, exc) from None
    except msgspec.DecodeError as exc:
        raise WireError(f"{kind} header is not a valid msgpack map: {exc}") from None
    if header.v != WIRE_VERSION or header.k != kind:
        raise _refusal(head, kind, None)
    return header, view[offset:]


def _refusal(head: memoryview, kind: str, exc: msgspec.ValidationError | None) -> WireError:
    """The error for a header that decodes but does not validate: version, kind, then field."""
    try:
        envelope = _ENVELOPE.decode(head)
    except msgspec.MsgspecError:
        envelope = _Envelope()
    if envelope.v != WIRE_VERSION or isinstance(envelope.v, bool):
        return WireError(
            f"unsupported wire version {envelope.v!r:.20} (this build speaks {WIRE_VERSION})"
        )
    if envelope.k != kind:
        return WireError(f"expected a {kind!r} message, got kind {envelope.k!r:.20}")
    return WireError(f"{kind} header: {exc}")


# Bytes each msgpack type byte takes before its payload, for the scalars a header may
# hold (maps and arrays, bin and ext are not among them: -1).
_FIXED: Final = tuple(
    1
    if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3)
    else 1 + (b & 0x1F)
    if 0xA0 <= b <= 0xBF
    else {0xCC: 2, 0xD0: 2, 0xCD: 3, 0xD1: 3, 0xCE: 5, 0xD2: 5, 0xCA: 5}.get(
        b, {0xCF: 9, 0xD3: 9, 0xCB: 9}.get(b, -1)
    )
    for b in range(256)
)


def _header_length(view: memoryview, kind: str) -> int:
    """Where the msgpack map at the start of ``view`` ends; raises WireError.

    Walks the map's scalars by their type bytes only; msgspec then decodes and
    validates exactly those bytes.
    """
    size = min(view.nbytes, _MAX_HEADER_BYTES)
    if size == 0:
        raise WireError(f"{kind} header is not a valid msgpack map: empty message")
    first = view[0]
    if 0x80 <= first <= 0x8F:
        items, offset = 2 * (first & 0x0F), 1
    elif first == 0xDE and size >= 3:
        items, offset = 2 * ((view[1] << 8) | view[2]), 3
    else:
        raise WireError(f"{kind} header must be a map, got type byte {first:#04x}")
    if items > 2 * _MAX_HEADER_FIELDS:
        raise WireError(f"{kind} header has {items // 2} fields, limit {_MAX_HEADER_FIELDS}")
    for _ in range(items):
        if offset >= size:
            break
        byte = view[offset]
        step = _FIXED[byte]
        if step < 0:
            if byte == 0xD9 and offset + 1 < size:
                step = 2 + view[offset + 1]
            elif byte == 0xDA and offset + 2 < size:
                step = 3 + ((view[offset + 1] << 8) | view[offset + 2])
            else:
                raise WireError(
                    f"{kind} header holds a value of msgpack type {byte:#04x}; "
                    "only strings, numbers, booleans and nil are allowed"
                )
        offset += step
    else:
        if offset <= size:
            return offset
    raise WireError(f"{kind} header is longer than {_MAX_HEADER_BYTES} bytes or cut short")


def _samples(dtype_name: str, payload: memoryview, n: int) -> Samples:
    dtype = _DTYPES[dtype_name]
    expected = n * dtype.itemsize
    if len(payload) != expected:
        raise WireError(
            f"payload is {len(payload)} bytes, header says {n} samples of {dtype.str} "
            f"({expected} bytes)"
        )
    raw = np.frombuffer(payload, dtype=dtype)
    if dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise WireError("samples contain NaN or infinity")
        return raw
    scaled: Samples = np.multiply(raw, np.float32(1 / 32768), dtype=np.float32)
    return scaled
