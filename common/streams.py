"""Typed views of Redis stream replies (the clients pin RESP2, bytes replies)."""

from typing import Any

Entry = tuple[bytes, dict[bytes, bytes]]
"""One stream entry: (id, fields)."""


def xread_entries(reply: Any) -> list[tuple[bytes, list[Entry]]]:
    """``XREAD`` reply as [(stream key, [(id, fields), ...]), ...]; empty on nil."""
    if not reply:
        return []
    out: list[tuple[bytes, list[Entry]]] = []
    for key, entries in reply:
        out.append((bytes(key), [(bytes(eid), dict(fields or {})) for eid, fields in entries]))
    return out


def range_entries(reply: Any) -> list[Entry]:
    """``XRANGE``/``XREVRANGE`` reply as [(id, fields), ...]."""
    return [(bytes(eid), dict(fields or {})) for eid, fields in reply or []]
