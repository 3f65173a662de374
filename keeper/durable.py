"""Which keys are the rooms' durable state, and how the keeper names its own (pure).

The audio Redis keeps no file: a restart empties it.  What must survive is
small and changes seldom: each room's meta (the password hash), members,
song and console, resume tokens, links, backing tracks and image.  The
keeper copies exactly those keys, named here, to a small Redis with an
append-only file, and puts them back into an empty audio Redis.  The global
sets (``bb:rooms``, ``bb:rooms:idle``) are not copied: they are rebuilt from
the rooms restored (a room is in them when its meta is).
"""

import re
from typing import Final

from common import keys

SUFFIXES: Final = ("meta", "members", "song", "tokens", "links")
"""The fixed per-room keys kept (``bb:{R}:SUFFIX``)."""

BLOBS: Final = ("track", "image")
"""The per-room blob keys kept (``bb:{R}:track:ID``, ``bb:{R}:image:ID``, with their TTL)."""

_DURABLE: Final = re.compile(
    r"^"
    + re.escape(keys.PREFIX)
    + r":\{(?P<room>[A-Za-z0-9_-]{1,40})\}:(?:"
    + "|".join(SUFFIXES)
    + r"|(?:"
    + "|".join(BLOBS)
    + r"):[^:{}]+)$"
)

MARKER: Final = f"{keys.PREFIX}:keeper"
"""String in the audio Redis: the keeper has restored (or checked) this server's
contents. A Redis that lacks it was restarted empty (or is new): the keeper
restores the copy into it before writing the marker."""

SCAN_MATCH: Final = f"{keys.PREFIX}:{{*}}:*"
"""``SCAN MATCH`` pattern that finds every per-room key (filtered by :func:`room_of`)."""

NOTIFY_CLASSES: Final = "Kg$hx"
"""Keyspace notifications the keeper needs: keyspace channel (K), generic commands
such as DEL and EXPIRE (g), strings (``$``), hashes (h), expirations (x). Streams (t),
the audio, are not asked for: an XADD costs no notification."""

CHANNEL_PREFIX: Final = "__keyspace@"


def room_of(key: str) -> str | None:
    """The room of a durable key; None for every other key (audio, counters, leases)."""
    match = _DURABLE.match(key)
    return match.group("room") if match else None


def is_meta(key: str) -> bool:
    room = room_of(key)
    return room is not None and key == keys.room_meta(room)


def patterns() -> list[str]:
    """``PSUBSCRIBE`` patterns for the durable keys' keyspace channels (any database)."""
    base = f"{CHANNEL_PREFIX}*__:{keys.PREFIX}:{{*}}:"
    return [base + s for s in SUFFIXES] + [f"{base}{b}:*" for b in BLOBS]


def key_of_channel(channel: str) -> str | None:
    """The key a keyspace channel (``__keyspace@0__:KEY``) is about; None if durable it is not."""
    if not channel.startswith(CHANNEL_PREFIX):
        return None
    _, sep, key = channel.partition("__:")
    if not sep or room_of(key) is None:
        return None
    return key


def merged_classes(current: str) -> str:
    """``notify-keyspace-events`` with the keeper's classes added to what was set.

    ``A`` stands for every class but K, E, m and n; it is kept as it is.
    """
    flags = set(current)
    if "A" in flags:
        flags |= {"K"}
        return "".join(sorted(flags))
    flags |= set(NOTIFY_CLASSES)
    return "".join(sorted(flags))
