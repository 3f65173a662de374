"""The browser WebSocket protocol (docs/protocol.md), as a pure codec.

Control messages are JSON text frames; audio travels in binary frames with a
fixed little-endian header.  This module validates what clients send
(:func:`parse_client_message`, :func:`parse_upstream`), builds what servers
send (the ``*_message`` builders, :func:`encode_downstream_opus`, ...), and
offers the client side of both (:func:`encode_upstream_opus`,
:func:`parse_downstream`) for the load generator and the tests.

No I/O, no clock, no asyncio.  Every rejection is a :class:`ProtocolError`
carrying the protocol's error ``code``; nothing else escapes the parsers.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec

from common.codes import FATAL_CODES, Code
from common.commands import (
    CLIENT_COMMANDS,
    MAX_DELAY_S,
    ClientCommand,
    parse_client_command,
)
from common.constants import OPUS_FRAME_SAMPLES, PROTOCOL_VERSION, SAMPLE_RATE
from common.errors import ValidationError
from common.names import MAX_DISPLAY_NAME, check_display_name, check_id, check_room
from common.records import MAX_LYRICS_CHARS, Cue, Role
from common.roomview import MaterialView, PublicRoom
from common.tracks import (
    MAX_IMAGE_BYTES,
    MAX_TRACK_BYTES,
    MAX_TRACK_RATE,
    MAX_TRACK_S,
    MIN_TRACK_RATE,
)

# --- limits -----------------------------------------------------------------------

MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Largest WebSocket message (text or binary) a client may send by default."""

MAX_PACKETS: Final = 50
"""Most Opus packets in one upstream message (1 s)."""

MAX_PCM_SAMPLES: Final = SAMPLE_RATE
"""Most pcm16 samples in one upstream message (1 s)."""

MAX_OPUS_PACKET_BYTES: Final = 1500
"""Largest Opus packet accepted; a 20 ms packet at Opus's top bitrate is 1276 bytes."""

MAX_CHAT_CHARS: Final = 500
MAX_PASSWORD_CHARS: Final = 128
MAX_TOKEN_CHARS: Final = 128
MAX_REQ: Final = 2**53 - 1
"""Largest ``req`` / ``ping.id``: integers a JavaScript client can represent exactly."""


MESSAGES_PER_S: Final = 60
"""Default per-connection message rate limit."""

HELLO_TIMEOUT_S: Final = 10.0
"""A connection must send ``hello`` within this time."""


# --- error codes: common/codes.py -------------------------------------------------


class ProtocolError(ValidationError):
    """A client message was refused; ``code`` is the protocol's error code."""

    def __init__(self, code: Code, message: str, *, req: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.req = req

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES


# --- client -> server JSON ---------------------------------------------------------

CodecName = Literal["opus", "pcm16"]
Req = Annotated[int, msgspec.Meta(ge=0, le=MAX_REQ)]


class Resume(msgspec.Struct, frozen=True):
    """``hello.resume``: take back a place kept for a disconnected singer."""

    singer: str
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOKEN_CHARS)]


HelloRole = Literal["singer", "spectator", "listener"]
"""Who a connection joins as: a member of the room (``singer``, ``spectator``), or a
``listener`` of its concert, who is no member: the mixer never hears of it."""


class Hello(msgspec.Struct, frozen=True, tag="hello", tag_field="type"):
    """The first message of a connection: who joins which room, how."""

    version: int
    room: str
    name: str
    role: HelloRole
    codec: CodecName
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD_CHARS)] | None = (
        None
    )
    resume: Resume | None = None
    req: Req | None = None


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type"):
    """A clock probe: ``t`` is the page's clock, echoed in the ``pong``."""

    id: Req
    t: float
    req: Req | None = None


class ChatLine(msgspec.Struct, frozen=True, tag="chat", tag_field="type"):
    """A line of chat from a member (trimmed, printable, 1-500 characters)."""

    text: str
    req: Req | None = None


@dataclass(frozen=True, slots=True)
class RoomCommand:
    """A room command from the browser (common/commands.py), with its ``req``."""

    cmd: ClientCommand
    req: int | None = None


ClientMessage = Hello | Ping | RoomCommand | ChatLine

_SESSION_MESSAGES: Final[dict[str, type[Hello] | type[Ping] | type[ChatLine]]] = {
    "hello": Hello,
    "ping": Ping,
    "chat": ChatLine,
}
_HELLO_CODES: Final = {
    "version": Code.VERSION,
    "room": Code.BAD_ROOM,
    "name": Code.BAD_NAME,
    "role": Code.BAD_ROLE,
    "codec": Code.BAD_CODEC,
    "password": Code.BAD_PASSWORD,
    "resume": Code.BAD_RESUME,
}
_FIELD: Final = re.compile(r"at `\$\.(\w+)")


class _Req(msgspec.Struct):
    req: Req | None = None


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Validate one JSON text frame from a client; raises :class:`ProtocolError`."""
    try:
        obj = _JSON.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(Code.BAD_MESSAGE, "message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            Code.BAD_MESSAGE, f"message must be a JSON object, got {type(obj).__name__}"
        )
    req = _optional_req(obj)
    kind = obj.get("type")
    try:
        if isinstance(kind, str) and kind in _SESSION_MESSAGES:
            return _session_message(obj, _SESSION_MESSAGES[kind])
        if isinstance(kind, str) and kind in CLIENT_COMMANDS:
            try:
                return RoomCommand(parse_client_command(obj), req)
            except msgspec.ValidationError as exc:
                code = Code(CLIENT_COMMANDS[kind].error_code)
                raise ProtocolError(code, f"{kind}: {exc}") from None
    except ProtocolError as exc:
        exc.req = req
        raise
    raise ProtocolError(Code.BAD_MESSAGE, f"unknown message type {kind!r:.40}", req=req)


def _session_message(
    obj: dict[str, Any], kind: type[Hello] | type[Ping] | type[ChatLine]
) -> ClientMessage:
    if kind is Hello:
        version = obj.get("version")
        if version != PROTOCOL_VERSION or isinstance(version, bool):
            raise ProtocolError(
                Code.VERSION,
                f"protocol version {version!r:.20} is not supported; this server speaks "
                f"{PROTOCOL_VERSION}",
            )
    try:
        message = msgspec.convert(obj, kind)
    except msgspec.ValidationError as exc:
        field = _FIELD.search(str(exc))
        code = Code.BAD_MESSAGE
        if kind is Hello and field is not None:
            code = _HELLO_CODES.get(field.group(1), Code.BAD_MESSAGE)
        raise ProtocolError(code, f"{obj['type']}: {exc}") from None
    if isinstance(message, Hello):
        return _checked_hello(message)
    if isinstance(message, Ping):
        if not math.isfinite(message.t):
            raise ProtocolError(Code.BAD_MESSAGE, "t must be finite")
        return message
    return msgspec.structs.replace(message, text=_chat_text(message.text))


def _checked_hello(hello: Hello) -> Hello:
    """The names in ``hello`` checked and normalised (common/names.py)."""
    try:
        room = check_room(hello.room)
    except ValidationError as exc:
        raise ProtocolError(Code.BAD_ROOM, str(exc)) from None
    try:
        name = check_display_name(hello.name)
    except ValidationError as exc:
        raise ProtocolError(Code.BAD_NAME, str(exc)) from None
    if hello.resume is not None:
        try:
            check_id(hello.resume.singer, "resume.singer")
        except ValidationError as exc:
            raise ProtocolError(Code.BAD_RESUME, str(exc)) from None
    return msgspec.structs.replace(hello, room=room, name=name)


def _chat_text(value: str) -> str:
    text = value.strip()
    if not 0 < len(text) <= MAX_CHAT_CHARS:
        raise ProtocolError(
            Code.BAD_MESSAGE, f"chat text must be 1-{MAX_CHAT_CHARS} characters, got {len(text)}"
        )
    if not text.isprintable():
        raise ProtocolError(Code.BAD_MESSAGE, "chat text must be printable (no control characters)")
    return text


def _optional_req(obj: dict[str, Any]) -> int | None:
    try:
        return msgspec.convert(obj, _Req).req
    except msgspec.ValidationError as exc:
        raise ProtocolError(Code.BAD_MESSAGE, str(exc)) from None


_JSON: Final = msgspec.json.Decoder()


def hello_message(
    room: str,
    name: str,
    *,
    role: Role | HelloRole = Role.SINGER,
    codec: CodecName = "opus",
    password: str | None = None,
    resume: Resume | None = None,
    req: int | None = None,
) -> dict[str, object]:
    """A client's ``hello`` (for the load generator and tests)."""
    msg: dict[str, object] = {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "room": room,
        "name": name,
        "role": str(role),
        "codec": codec,
    }
    if password is not None:
        msg["password"] = password
    if resume is not None:
        msg["resume"] = {"singer": resume.singer, "token": resume.token}
    if req is not None:
        msg["req"] = req
    return msg


# --- server -> client JSON ----------------------------------------------------------


def dumps(message: Mapping[str, object]) -> str:
    """Compact JSON for a text frame (NaN and infinity are refused, not sent)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def error_message(
    code: Code, message: str, *, req: int | None = None, fatal: bool | None = None
) -> dict[str, object]:
    msg: dict[str, object] = {
        "type": "error",
        "code": str(code),
        "message": message,
        "fatal": code in FATAL_CODES if fatal is None else fatal,
    }
    if req is not None:
        msg["req"] = req
    return msg


def ack_message(req: int) -> dict[str, object]:
    return {"type": "ack", "req": req}


def pong_message(ping: Ping, clock: int) -> dict[str, object]:
    return {"type": "pong", "id": ping.id, "t": ping.t, "clock": clock}


def welcome_message(
    *,
    room: str,
    singer: str,
    token: str,
    clock: int,
    constants: Mapping[str, object],
    state: PublicRoom | None,
) -> dict[str, object]:
    return {
        "type": "welcome",
        "version": PROTOCOL_VERSION,
        "room": room,
        "singer": singer,
        "token": token,
        "clock": clock,
        "constants": dict(constants),
        "state": None if state is None else page_state(state),
    }


_NO_MATERIAL: Final = MaterialView(
    tracks=[], lyrics="", image=None, cues=[], previous_cues=[], older_cues=[]
)


def page_state(state: PublicRoom) -> dict[str, object]:
    """``state`` as pages get it: without ``material`` (up to 10 000 characters of lyrics
    and thousands of cues), which goes in a ``material`` message of its own only when
    ``material_version`` changes: a ``state`` goes to every member and listener at every
    change, so material in it cost its bytes x changes x connections."""
    body: dict[str, object] = msgspec.to_builtins(
        msgspec.structs.replace(state, material=_NO_MATERIAL)
    )
    del body["material"]
    return body


def state_message(version: int, state: PublicRoom) -> dict[str, object]:
    return {"type": "state", "version": version, "state": page_state(state)}


def material_message(version: int, material: MaterialView) -> dict[str, object]:
    """The room's material at ``version`` (the ``material_version`` of the states that
    follow): sent before the first ``state`` or ``welcome`` that names that version."""
    return {"type": "material", "version": version, "material": msgspec.to_builtins(material)}


def cues_message(version: int, base: int, start: int, cues: Sequence[Cue]) -> dict[str, object]:
    """Lyric cues appended to ``material.cues``: the material at ``base`` with ``cues``
    from index ``start`` on (``start``: how many it held) is the material at ``version``.
    Sent instead of ``material`` to a page holding ``base`` (gateway/roommaterial.py)."""
    return {
        "type": "cues",
        "version": version,
        "base": base,
        "start": start,
        "cues": msgspec.to_builtins(list(cues)),
    }


def chat_message(singer: str, name: str, text: str, clock: int) -> dict[str, object]:
    return {"type": "chat", "singer": singer, "name": name, "text": text, "clock": clock}


def levels_message(clock: int, levels: Mapping[str, float]) -> dict[str, object]:
    return {"type": "levels", "clock": clock, "levels": dict(levels)}


def recording_message(song: int, start_pos: int, end_pos: int, flac: str) -> dict[str, object]:
    return {
        "type": "recording",
        "song": song,
        "start_pos": start_pos,
        "end_pos": end_pos,
        "flac": flac,
    }


# --- binary audio -------------------------------------------------------------------

KIND_UPSTREAM: Final = 0x01
KIND_DOWNSTREAM: Final = 0x02
CODEC_OPUS: Final = 1
CODEC_PCM16: Final = 2
CODEC_IDS: Final[dict[CodecName, int]] = {"opus": CODEC_OPUS, "pcm16": CODEC_PCM16}

UPSTREAM_HEADER: Final = struct.Struct("<BBHIIq")
"""kind, codec, count, stream, seq, start: 20 bytes."""

DOWNSTREAM_HEADER: Final = struct.Struct("<BBHIq")
"""kind, codec, count, delay, start: 16 bytes."""

_PACKET_LEN: Final = struct.Struct("<H")
_MAX_POSITION: Final = 1 << 62


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream audio message: a singer's audio for [start, start + samples)."""

    codec: int
    stream: int
    seq: int
    start: int
    packets: tuple[bytes, ...]
    """Opus packets (empty for pcm16)."""
    pcm: bytes
    """Little-endian int16 samples (empty for Opus)."""

    @property
    def samples(self) -> int:
        """Samples covered: 960 per Opus packet, or the pcm16 sample count."""
        if self.codec == CODEC_OPUS:
            return len(self.packets) * OPUS_FRAME_SAMPLES
        return len(self.pcm) // 2


@dataclass(frozen=True, slots=True)
class Downstream:
    """One downstream audio message: a tap's frames for [start, start + samples)."""

    codec: int
    delay: int
    start: int
    packets: tuple[bytes, ...]
    pcm: bytes

    @property
    def samples(self) -> int:
        if self.codec == CODEC_OPUS:
            return len(self.packets) * OPUS_FRAME_SAMPLES
        return len(self.pcm) // 2


def parse_upstream(data: bytes | bytearray | memoryview) -> Upstream:
    """Validate a client's binary audio frame; raises :class:`ProtocolError` (``bad_audio``)."""
    view = memoryview(data)
    if view.nbytes < UPSTREAM_HEADER.size:
        raise _bad_audio(f"audio message is {view.nbytes} bytes, shorter than its 20-byte header")
    kind, codec, count, stream, seq, start = UPSTREAM_HEADER.unpack_from(view)
    if kind != KIND_UPSTREAM:
        raise _bad_audio(f"audio message kind must be 0x01, got {kind:#04x}")
    if not 0 <= start <= _MAX_POSITION:
        raise _bad_audio(f"start {start} is not a valid position")
    payload = view[UPSTREAM_HEADER.size :]
    if codec == CODEC_OPUS:
        packets = _split_packets(payload, count, MAX_PACKETS)
        return Upstream(CODEC_OPUS, stream, seq, start, packets, b"")
    if codec == CODEC_PCM16:
        if not 0 < count <= MAX_PCM_SAMPLES:
            raise _bad_audio(f"pcm16 count must be 1-{MAX_PCM_SAMPLES}, got {count}")
        if payload.nbytes != 2 * count:
            raise _bad_audio(
                f"pcm16 payload is {payload.nbytes} bytes, header says {count} samples "
                f"({2 * count} bytes)"
            )
        return Upstream(CODEC_PCM16, stream, seq, start, (), payload.tobytes())
    raise _bad_audio(f"codec must be 1 (Opus) or 2 (pcm16), got {codec}")


def parse_downstream(data: bytes | bytearray | memoryview) -> Downstream:
    """Validate a server's binary audio frame (client side); raises :class:`ProtocolError`."""
    view = memoryview(data)
    if view.nbytes < DOWNSTREAM_HEADER.size:
        raise _bad_audio(f"audio message is {view.nbytes} bytes, shorter than its 16-byte header")
    kind, codec, count, delay, start = DOWNSTREAM_HEADER.unpack_from(view)
    if kind != KIND_DOWNSTREAM:
        raise _bad_audio(f"audio message kind must be 0x02, got {kind:#04x}")
    payload = view[DOWNSTREAM_HEADER.size :]
    if codec == CODEC_OPUS:
        return Downstream(CODEC_OPUS, delay, start, _split_packets(payload, count, 0xFFFF), b"")
    if codec == CODEC_PCM16:
        if payload.nbytes != 2 * count:
            raise _bad_audio(f"pcm16 payload is {payload.nbytes} bytes for {count} samples")
        return Downstream(CODEC_PCM16, delay, start, (), payload.tobytes())
    raise _bad_audio(f"codec must be 1 (Opus) or 2 (pcm16), got {codec}")


def encode_upstream_opus(stream: int, seq: int, start: int, packets: Sequence[bytes]) -> bytes:
    """A client's Opus audio message (each packet one 20 ms frame)."""
    header = UPSTREAM_HEADER.pack(KIND_UPSTREAM, CODEC_OPUS, len(packets), stream, seq, start)
    return header + _join_packets(packets)


def encode_upstream_pcm16(stream: int, seq: int, start: int, pcm: bytes) -> bytes:
    """A client's pcm16 audio message (``pcm``: little-endian int16 samples)."""
    header = UPSTREAM_HEADER.pack(KIND_UPSTREAM, CODEC_PCM16, len(pcm) // 2, stream, seq, start)
    return header + pcm


def encode_downstream_opus(delay: int, start: int, packets: Sequence[bytes]) -> bytes:
    """A tap's frames for clients that chose Opus: one packet per 960-sample frame."""
    header = DOWNSTREAM_HEADER.pack(KIND_DOWNSTREAM, CODEC_OPUS, len(packets), delay, start)
    return header + _join_packets(packets)


def encode_downstream_pcm16(delay: int, start: int, pcm: bytes) -> bytes:
    """A tap's frames for clients that chose pcm16 (``pcm``: little-endian int16)."""
    header = DOWNSTREAM_HEADER.pack(KIND_DOWNSTREAM, CODEC_PCM16, len(pcm) // 2, delay, start)
    return header + pcm


def _join_packets(packets: Sequence[bytes]) -> bytes:
    parts: list[bytes] = []
    for packet in packets:
        if not 0 < len(packet) <= 0xFFFF:
            raise ValidationError(f"an Opus packet must be 1-65535 bytes, got {len(packet)}")
        parts.append(_PACKET_LEN.pack(len(packet)))
        parts.append(packet)
    return b"".join(parts)


def _split_packets(payload: memoryview, count: int, limit: int) -> tuple[bytes, ...]:
    if not 0 < count <= limit:
        raise _bad_audio(f"Opus packet count must be 1-{limit}, got {count}")
    packets: list[bytes] = []
    offset = 0
    end = payload.nbytes
    for index in range(count):
        if end - offset < 2:
            raise _bad_audio(f"payload ends before the length of packet {index} of {count}")
        (length,) = _PACKET_LEN.unpack_from(payload, offset)
        offset += 2
        if not 0 < length <= MAX_OPUS_PACKET_BYTES:
            raise _bad_audio(
                f"packet {index} is {length} bytes; packets must be 1-{MAX_OPUS_PACKET_BYTES}"
            )
        if end - offset < length:
            raise _bad_audio(f"packet {index} says {length} bytes, only {end - offset} remain")
        packets.append(payload[offset : offset + length].tobytes())
        offset += length
    if offset != end:
        raise _bad_audio(f"{end - offset} bytes after the last of {count} packets")
    return tuple(packets)


def _bad_audio(message: str) -> ProtocolError:
    return ProtocolError(Code.BAD_AUDIO, message)


def limits_json(
    max_message_bytes: int = MAX_MESSAGE_BYTES, messages_per_s: int = MESSAGES_PER_S
) -> dict[str, int | float]:
    """The limits a client must respect, as served with the constants."""
    return {
        "max_message_bytes": max_message_bytes,
        "max_messages_per_s": messages_per_s,
        "max_packets": MAX_PACKETS,
        "max_pcm_samples": MAX_PCM_SAMPLES,
        "max_opus_packet_bytes": MAX_OPUS_PACKET_BYTES,
        "max_chat_chars": MAX_CHAT_CHARS,
        "max_name_chars": MAX_DISPLAY_NAME,
        "max_delay_s": MAX_DELAY_S,
        "hello_timeout_s": HELLO_TIMEOUT_S,
        "max_lyrics_chars": MAX_LYRICS_CHARS,
        "max_track_bytes": MAX_TRACK_BYTES,
        "max_track_s": MAX_TRACK_S,
        "min_track_rate": MIN_TRACK_RATE,
        "max_track_rate": MAX_TRACK_RATE,
        "max_image_bytes": MAX_IMAGE_BYTES,
    }
