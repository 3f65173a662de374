"""The Redis key schema, in one place (documented key by key in docs/redis.md).

Every per-room key carries the room in a hash tag, ``bb:{room}:...``, so that
a room's keys share one Redis Cluster slot.  Callers pass room names that
``common.names.check_room`` accepted (no braces or colons can appear).
"""

from typing import Final

PREFIX: Final = "bb"

ROOMS: Final = f"{PREFIX}:rooms"
"""Set of all room names."""

ACTIVE_ROOMS: Final = f"{PREFIX}:rooms:active"
"""Set of the rooms that want a mixer: a gateway adds a room with every command it
sends; the owning mixer removes it when it releases the room (nobody connected)."""

IDLE_ROOMS: Final = f"{PREFIX}:rooms:idle"
"""Sorted set: room -> unix time it became idle (created, or released by its mixer).
A room idle for longer than the mixers' ``room_idle_delete_s`` is deleted with its keys."""

MIXERS: Final = f"{PREFIX}:mixers"
"""Sorted set: mixer id -> last heartbeat (unix seconds)."""

GATEWAYS: Final = f"{PREFIX}:gateways"
"""Sorted set: gateway id -> last heartbeat (unix seconds)."""

EVENTS_MAXLEN: Final = 500
"""``MAXLEN ~`` of every room's events stream (writers: the mixer, gateways for chat)."""

CTL_MAXLEN: Final = 1000
"""``MAXLEN ~`` of every room's control stream (writers: gateways)."""


def _room(room: str) -> str:
    return f"{PREFIX}:{{{room}}}"


def room_meta(room: str) -> str:
    """Hash: the room's settings (capacity, password hash, created_at, ...)."""
    return f"{_room(room)}:meta"


def room_members(room: str) -> str:
    """Hash: singer id -> msgpack member record (name, role, delay, ...)."""
    return f"{_room(room)}:members"


def room_song(room: str) -> str:
    """Hash: the song state (leader, running, start/end positions)."""
    return f"{_room(room)}:song"


def room_in(room: str) -> str:
    """Stream: audio chunks from gateways to the owning mixer (MAXLEN-bounded)."""
    return f"{_room(room)}:in"


def room_ctl(room: str) -> str:
    """Stream: control commands (lead, start, join bucket, ...) for the owning mixer."""
    return f"{_room(room)}:ctl"


def room_events(room: str) -> str:
    """Stream: room state changes and chat, for gateways to push to browsers."""
    return f"{_room(room)}:events"


def room_tap(room: str, delay: int, mix: str = "full") -> str:
    """Stream: the mix windows of one tap (a delay in samples, and the full or solo mix).

    ``bb:{R}:tap:{delay}`` for the full mix, ``bb:{R}:tap:solo:{delay}`` for the solo mix.
    """
    if mix == "full":
        return f"{_room(room)}:tap:{delay}"
    return f"{_room(room)}:tap:{mix}:{delay}"


def room_occupancy(room: str) -> str:
    """String: msgpack occupancy snapshot (packed bitmap + its clock)."""
    return f"{_room(room)}:occ"


def room_stats(room: str) -> str:
    """Hash: the owning mixer's counters for the room (chunks, rejects, late, ...)."""
    return f"{_room(room)}:stats"


def room_lease(room: str) -> str:
    """String with a TTL: the id of the mixer that owns the room."""
    return f"{_room(room)}:lease"


def mixer_heartbeat(mixer_id: str) -> str:
    """String with a TTL: a live mixer's status (msgpack)."""
    return f"{PREFIX}:mixer:{mixer_id}"


def recorder_heartbeat(recorder_id: str) -> str:
    """String with a TTL: a live recorder's status (msgpack)."""
    return f"{PREFIX}:recorder:{recorder_id}"


def keeper_heartbeat(keeper_id: str) -> str:
    """String with a TTL: a live keeper's status (msgpack)."""
    return f"{PREFIX}:keeper:{keeper_id}"


def room_reclease(room: str) -> str:
    """String with a TTL: the id of the recorder that records the room's songs."""
    return f"{_room(room)}:reclease"


def gateway_heartbeat(gateway_id: str) -> str:
    """String with a TTL: a live gateway's status (msgpack)."""
    return f"{PREFIX}:gateway:{gateway_id}"


def room_checkpoint(room: str) -> str:
    """String with a TTL: msgpack checkpoint of the room's unplayed ring audio (failover)."""
    return f"{_room(room)}:ckpt"


def room_links(room: str) -> str:
    """Hash: singer id -> the :class:`common.link.Link` they joined through (``GW CONN``)."""
    return f"{_room(room)}:links"


def room_tokens(room: str) -> str:
    """Hash: singer id -> SHA-256 hex of the singer's resume token."""
    return f"{_room(room)}:tokens"


def room_guesses(room: str) -> str:
    """Hash: wrong-password book-keeping of a room (gateway/guard.py), TTL."""
    return f"{_room(room)}:guesses"


def room_guesser(room: str, address: str) -> str:
    """String counter: wrong passwords one client address tried for the room, TTL 1 h
    after the last (gateway/guard.py: the room's lock applies to it past a few)."""
    return f"{_room(room)}:guesses:{address}"


def client_guesses(address: str) -> str:
    """Hash: wrong-password book-keeping of one client address (gateway/guard.py), TTL."""
    return f"{PREFIX}:client:{address}:guesses"


def client_creations(address: str) -> str:
    """String counter: rooms one client address created in the current minute, TTL."""
    return f"{PREFIX}:client:{address}:creations"


def room_keys(room: str) -> list[str]:
    """Every fixed key of a room (its tap streams expire on their own)."""
    return [
        room_meta(room),
        room_members(room),
        room_song(room),
        room_in(room),
        room_ctl(room),
        room_events(room),
        room_occupancy(room),
        room_stats(room),
        room_lease(room),
        room_reclease(room),
        room_links(room),
        room_tokens(room),
        room_checkpoint(room),
        room_guesses(room),
    ]


def room_track(room: str, track_id: str) -> str:
    """String with a TTL: a backing track's audio (Ogg Opus, 48 kHz mono)."""
    return f"{_room(room)}:track:{track_id}"


def room_image(room: str, image_id: str) -> str:
    """String with a TTL: the room's image (PNG, JPEG or WebP bytes)."""
    return f"{_room(room)}:image:{image_id}"
