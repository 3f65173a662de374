"""The events of a room (``bb:{R}:events``), defined once.

The owning mixer publishes :class:`Reply` (the answer to one command),
:class:`State` (the public room state after a change) and :class:`Levels`;
gateways publish :class:`Chat`; the recorder publishes :class:`Recorded`.
Every gateway watching the room decodes them with :func:`decode_event` and
dispatches on the class.
"""

from __future__ import annotations

from typing import Final

import msgspec

from common.codes import Code
from common.errors import ValidationError
from common.roomview import PublicRoom

__all__ = [
    "Chat",
    "Event",
    "Levels",
    "Recorded",
    "Reply",
    "State",
    "decode_event",
    "encode_event",
]


class _Event(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    pass


class Reply(_Event, tag="reply", frozen=True, omit_defaults=True):
    """The mixer's answer to the command ``req`` that gateway ``gw`` sent for ``singer``.

    ``code`` says why a command was refused (None when ``ok``); fields at their
    defaults are left out, so a gateway built before ``code`` was typed reads it.
    """

    singer: str
    cmd: str
    ok: bool
    gw: str = ""
    req: int = 0
    code: Code | None = None
    message: str = ""


class State(_Event, tag="state", frozen=True):
    """The room's public state (docs/protocol.md, *Room state*) at ``version``."""

    version: int
    state: PublicRoom


class Chat(_Event, tag="chat", frozen=True):
    singer: str
    name: str
    text: str
    clock: int


class Levels(_Event, tag="levels", frozen=True):
    """The loudest singing members' levels in dBFS (at most 12: a singer not named is
    quieter than those named), about once a second during a song."""

    clock: int
    levels: dict[str, float]


class Recorded(_Event, tag="recording", frozen=True):
    """Song ``song`` (positions ``[start_pos, end_pos)``) is recorded: from now on the
    room's recordings list it, its mix in ``flac``."""

    song: int
    start_pos: int
    end_pos: int
    flac: str


Event = Reply | State | Chat | Levels | Recorded

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(Event)
_MAX_EVENT_BYTES: Final = 1 << 20


def encode_event(event: Event) -> bytes:
    """The event entry's ``d`` field."""
    return _ENCODER.encode(event)


def decode_event(data: object) -> Event:
    """Parse and validate one event; raises ValidationError."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) > _MAX_EVENT_BYTES:
        raise ValidationError("event is not a bytes value of a sane size")
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise ValidationError(f"event: {exc}") from None
