"""Validation of the identifiers that appear in Redis keys and on the wire."""

import re

from common.errors import ValidationError

_ROOM_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_DISPLAY_NAME = 40


def check_room(room: object) -> str:
    """A room name: 1-40 of ``A-Z a-z 0-9 _ -`` (it is embedded in key names).

    Returned in lower case: room names are case-insensitive, so "Choir" and
    "choir" are one room (a choir member who types the name differently from
    the organiser must not end up alone in a new room).
    """
    if not isinstance(room, str) or not _ROOM_RE.fullmatch(room):
        raise ValidationError(f"room name must be 1-40 of A-Z a-z 0-9 _ -, got {room!r:.60}")
    return room.lower()


def check_id(value: object, what: str = "id") -> str:
    """A singer or process id: 1-64 of ``A-Z a-z 0-9 _ -``."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValidationError(f"{what} must be 1-64 of A-Z a-z 0-9 _ -, got {value!r:.80}")
    return value


def check_display_name(name: object) -> str:
    """A singer's display name: printable, trimmed, 1-40 characters."""
    if not isinstance(name, str):
        raise ValidationError(f"name must be a string, got {type(name).__name__}")
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_DISPLAY_NAME or not cleaned.isprintable():
        raise ValidationError(f"name must be 1-{MAX_DISPLAY_NAME} printable characters")
    return cleaned
