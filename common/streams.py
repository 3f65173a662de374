"""The shapes of Redis stream replies, checked once (every client pins RESP2).

redis-py types its replies loosely; these helpers turn them into plain typed
tuples and reject anything else, so a protocol change (say, RESP3 maps)
fails loudly in one place instead of silently misreading audio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from redis.typing import KeyT, StreamIdT

from common.errors import ValidationError

FIELD: Final = b"d"
"""The one field of every stream entry (docs/redis.md)."""

Entry = tuple[bytes, bytes | None]
"""(entry id, value of field ``d`` or None)."""


def xread_streams(keys: Mapping[str, bytes]) -> dict[KeyT, StreamIdT]:
    """The ``streams`` argument of XREAD, typed the way redis-py wants it."""
    streams: dict[KeyT, StreamIdT] = {}
    streams.update(keys)
    return streams


def parse_xread(reply: object) -> list[tuple[str, list[Entry]]]:
    """``XREAD`` (RESP2): ``[[key, [(id, {field: value}), ...]], ...]`` or None."""
    if reply is None:
        return []
    if not isinstance(reply, list):
        raise ValidationError(f"XREAD reply must be a list, got {type(reply).__name__}")
    streams: list[tuple[str, list[Entry]]] = []
    for item in reply:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValidationError("XREAD reply item must be [key, entries]")
        key, entries = item
        if not isinstance(key, bytes) or not isinstance(entries, list):
            raise ValidationError("XREAD reply item must be [bytes key, list of entries]")
        streams.append((key.decode(), parse_entries(entries)))
    return streams


def parse_entries(entries: object) -> list[Entry]:
    """``XRANGE``/``XREVRANGE`` entries: ``[(id, {field: value}), ...]``."""
    if not isinstance(entries, list):
        raise ValidationError(f"stream entries must be a list, got {type(entries).__name__}")
    parsed: list[Entry] = []
    for entry in entries:
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            raise ValidationError("stream entry must be (id, fields)")
        entry_id, fields = entry
        if not isinstance(entry_id, bytes):
            raise ValidationError("stream entry id must be bytes")
        value = fields.get(FIELD) if isinstance(fields, dict) else None
        parsed.append((entry_id, value if isinstance(value, bytes) else None))
    return parsed


def newest_id(entries: object) -> bytes:
    """The id of an ``XREVRANGE ... COUNT 1`` reply, or ``0-0`` for an empty stream."""
    parsed = parse_entries(entries)
    return parsed[0][0] if parsed else b"0-0"
