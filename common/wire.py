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
from typing import Any, Final

import msgpack
import numpy as np
import numpy.typing as npt

from common.constants import MAX_CHUNK_SAMPLES, OPUS_FRAME_SAMPLES, WIRE_VERSION
from common.errors import WireError
from common.names import check_id, check_room

Samples = npt.NDArray[np.float32]

_DTYPES: Final[dict[str, np.dtype[Any]]] = {"<f4": np.dtype("<f4"), "<i2": np.dtype("<i2")}
_MAX_HEADER_BYTES: Final = 512
_MAX_POSITION: Final = 1 << 62
MAX_TAP_SAMPLES: Final = 50 * OPUS_FRAME_SAMPLES
"""Largest tap window one message may carry (1 s)."""


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
    header = {
        "v": WIRE_VERSION,
        "k": "chunk",
        "room": room,
        "singer": singer,
        "stream": stream,
        "seq": seq,
        "start": start,
        "n": samples.shape[0],
        "dtype": dtype,
    }
    return msgpack.packb(header) + samples.astype(_DTYPES[dtype], copy=False).tobytes()


def encode_tap(
    room: str, delay: int, start: int, clock: int, samples: Samples, mix: str = "full"
) -> bytes:
    """Frame a tap window (float32, a whole number of 960-sample frames)."""
    header: dict[str, object] = {
        "v": WIRE_VERSION,
        "k": "tap",
        "room": room,
        "delay": delay,
        "start": start,
        "n": samples.shape[0],
        "dtype": "<f4",
        "clock": clock,
    }
    if mix != "full":
        header["mix"] = mix
    return msgpack.packb(header) + samples.astype("<f4", copy=False).tobytes()


def decode_chunk(data: bytes) -> Chunk:
    """Parse and validate a chunk; raises WireError."""
    header, payload = _split(data, "chunk")
    n = _int_field(header, "n", 1, MAX_CHUNK_SAMPLES)
    samples = _samples(header, payload, n)
    try:
        room = check_room(header.get("room"))
        singer = check_id(header.get("singer"), "singer")
    except ValueError as exc:
        raise WireError(str(exc)) from None
    return Chunk(
        room=room,
        singer=singer,
        stream=_int_field(header, "stream", 0, 0xFFFF_FFFF),
        seq=_int_field(header, "seq", 0, 0xFFFF_FFFF),
        start=_int_field(header, "start", 0, _MAX_POSITION),
        samples=samples,
    )


def decode_tap(data: bytes) -> TapWindow:
    """Parse and validate a tap window; raises WireError."""
    header, payload = _split(data, "tap")
    n = _int_field(header, "n", OPUS_FRAME_SAMPLES, MAX_TAP_SAMPLES)
    if n % OPUS_FRAME_SAMPLES:
        raise WireError(f"tap window of {n} samples is not a whole number of 960-sample frames")
    start = _int_field(header, "start", 0, _MAX_POSITION)
    if start % OPUS_FRAME_SAMPLES:
        raise WireError(f"tap window start {start} is not on a 960-sample frame boundary")
    if header.get("dtype") != "<f4":
        raise WireError(f"tap dtype must be '<f4', got {header.get('dtype')!r:.20}")
    try:
        room = check_room(header.get("room"))
    except ValueError as exc:
        raise WireError(str(exc)) from None
    mix = header.get("mix", "full")
    if mix not in ("full", "solo"):
        raise WireError(f"tap mix must be 'full' or 'solo', got {mix!r:.20}")
    return TapWindow(
        room=room,
        delay=_int_field(header, "delay", 0, _MAX_POSITION),
        start=start,
        clock=_int_field(header, "clock", 0, _MAX_POSITION),
        samples=_samples(header, payload, n),
        mix=mix,
    )


def _dtype_name(samples: npt.NDArray[Any]) -> str:
    if samples.ndim != 1:
        raise WireError(f"samples must be 1-D, got shape {samples.shape}")
    if samples.dtype == np.float32:
        return "<f4"
    if samples.dtype == np.int16:
        return "<i2"
    raise WireError(f"samples must be float32 or int16, got {samples.dtype}")


def _split(data: bytes, kind: str) -> tuple[dict[str, Any], memoryview]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"{kind} message must be bytes, got {type(data).__name__}")
    # Feed only the prefix that may hold the header: feeding the whole message
    # would copy the samples into the unpacker's buffer for nothing.
    head = memoryview(data)[:_MAX_HEADER_BYTES]
    unpacker = msgpack.Unpacker(
        max_buffer_size=_MAX_HEADER_BYTES,
        max_str_len=_MAX_HEADER_BYTES,
        max_bin_len=0,
        max_array_len=0,
        max_map_len=16,
        max_ext_len=0,
    )
    try:
        unpacker.feed(head)
        header = unpacker.unpack()
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"{kind} header is not a valid msgpack map: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise WireError(f"{kind} header must be a map, got {type(header).__name__}")
    offset = unpacker.tell()
    if offset > _MAX_HEADER_BYTES:
        raise WireError(f"{kind} header is {offset} bytes, limit {_MAX_HEADER_BYTES}")
    version = header.get("v")
    if version != WIRE_VERSION:
        raise WireError(
            f"unsupported wire version {version!r:.20} (this build speaks {WIRE_VERSION})"
        )
    if header.get("k") != kind:
        raise WireError(f"expected a {kind!r} message, got kind {header.get('k')!r:.20}")
    return header, memoryview(data)[offset:]


def _int_field(header: dict[str, Any], name: str, low: int, high: int) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"field {name!r} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise WireError(f"field {name!r} = {value} is outside [{low}, {high}]")
    return value


def _samples(header: dict[str, Any], payload: memoryview, n: int) -> Samples:
    dtype = _DTYPES.get(header.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise WireError(f"dtype must be '<f4' or '<i2', got {header.get('dtype')!r:.20}")
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
