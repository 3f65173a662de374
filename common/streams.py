"""Typed views of Redis stream replies (clients pin RESP2 and bytes replies).

redis-py already returns these shapes; the functions only give them types
(no copies: the mixer reads thousands of entries per second).
"""

from typing import Any, cast

Entry = tuple[bytes, dict[bytes, bytes]]
"""One stream entry: (id, fields)."""


def xread_entries(reply: Any) -> list[tuple[bytes, list[Entry]]]:
    """``XREAD`` reply as [(stream key, [(id, fields), ...]), ...]; empty on nil."""
    return cast(list[tuple[bytes, list[Entry]]], reply or [])


def range_entries(reply: Any) -> list[Entry]:
    """``XRANGE``/``XREVRANGE`` reply as [(id, fields), ...]."""
    return cast(list[Entry], reply or [])
