"""A member's link: the connection they joined through (``bb:{R}:links``), typed once.

The owning mixer writes one per joined singer (``GATEWAY_ID CONN``, one space)
so it can tell a stale ``disconnect`` from a replaced connection and find
the members of a gateway that died. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from common.errors import ValidationError

__all__ = ["Link", "parse_links"]


class Link(NamedTuple):
    """The gateway and connection a singer joined through (either may be empty in tests)."""

    gateway: str
    conn: str

    def encode(self) -> str:
        """The value stored in ``bb:{R}:links``."""
        return f"{self.gateway} {self.conn}"

    @classmethod
    def decode(cls, raw: bytes | str) -> Link:
        """Parse a stored value; raises ValidationError unless it is two space-separated ids."""
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        parts = text.split(" ")
        if len(parts) != 2:
            raise ValidationError(f"a link is 'GATEWAY CONN', got {text!r:.80}")
        return cls(parts[0], parts[1])

    @property
    def complete(self) -> bool:
        """Both ids are known (links written by tests and old records may lack one)."""
        return bool(self.gateway and self.conn)


def parse_links(raw: Mapping[bytes, bytes] | Mapping[str, str] | None) -> dict[str, Link]:
    """``bb:{R}:links`` as read by HGETALL; unreadable entries are left out."""
    links: dict[str, Link] = {}
    for singer, value in (raw or {}).items():
        try:
            link = Link.decode(value)
        except ValidationError:
            continue
        links[singer.decode(errors="replace") if isinstance(singer, bytes) else singer] = link
    return links
