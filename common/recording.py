"""The sidecar of a finished recording (``<room>/<stem>.json``), typed once.

The recorder writes it last, after the files it names (recorder/files.py);
the gateway lists the sidecars and builds the stems ZIP from them
(gateway/recordings.py); retention reads ``created``. A sidecar is indented
JSON; decoding validates every field and raises
:class:`common.errors.ValidationError` with the path of the bad one.
"""

from __future__ import annotations

import json
from typing import Final

import msgspec

from common.errors import ValidationError

__all__ = ["MAX_SIDECAR_BYTES", "Recording", "StemFile", "decode_sidecar", "encode_sidecar"]

MAX_SIDECAR_BYTES: Final = 1 << 20
"""Largest sidecar read; a recording with a hundred stems has a few kilobytes."""


class StemFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file of a recording's stems: a singer's own audio, or the track (``singer`` None)."""

    singer: str | None
    name: str
    file: str


class Recording(msgspec.Struct, frozen=True, kw_only=True):
    """A finished recording of song ``song``: positions ``[start_pos, end_pos)``, its
    files (``flac``, ``ogg``, the ``stems`` and the ``lof`` / ``rpp`` projects)."""

    room: str
    song: int
    start_pos: int
    end_pos: int
    length_s: float = 0.0
    leader: str = ""
    created: float = 0.0
    """Unix time the take began: recordings list newest first, retention goes oldest first.

    Every field from ``length_s`` on has a default: sidecars of older recordings lack some."""
    track: str | None = None
    """The id of the backing track mixed in, if any."""
    metronome: bool = False
    """The metronome's clicks are in the mix."""
    flac: str = ""
    ogg: str = ""
    stems: list[StemFile] = msgspec.field(default_factory=list)
    lof: str | None = None
    rpp: str | None = None


def encode_sidecar(recording: Recording) -> str:
    """The sidecar's text (indented JSON, fields in their declared order)."""
    return json.dumps(msgspec.to_builtins(recording), indent=1)


def decode_sidecar(data: bytes | str) -> Recording:
    """Parse a sidecar; raises ValidationError naming the bad field."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise ValidationError(f"sidecar is {len(data)} bytes, limit {MAX_SIDECAR_BYTES}")
    try:
        return msgspec.json.decode(data, type=Recording)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise ValidationError(f"sidecar: {exc}") from None
