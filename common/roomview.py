"""The public view of a room (docs/protocol.md, *Room state*), built in one place.

The mixer builds it from its live state for every ``state`` event; a gateway
builds it from the Redis hashes when it has no event yet. Both pass plain
records: member and song maps as the mixer stores them in Redis.
"""

from collections.abc import Iterable, Mapping
from typing import Any


def public_state(
    room: str,
    *,
    version: int,
    capacity: int,
    n_buckets: int,
    bucket_spacing: int,
    song: Mapping[str, Any],
    members: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """Room state as browsers see it: members in join order, taps of connected members."""
    listed = [
        {
            "singer_id": m["singer_id"],
            "name": m.get("name", ""),
            "role": m.get("role", "singer"),
            "delay": m.get("delay", 0),
            "bucket": m.get("bucket"),
            "muted": bool(m.get("muted", False)),
            "connected": bool(m.get("connected", True)),
            "late": m.get("late", 0),
        }
        for m in sorted(members, key=lambda m: (m.get("joined") or 0, m["singer_id"]))
    ]
    return {
        "room": room,
        "version": version,
        "capacity": capacity,
        "leader": song.get("leader"),
        "song": {
            "running": bool(song.get("running", False)),
            "number": song.get("number", 0),
            "start_pos": song.get("start_pos"),
            "end_pos": song.get("end_pos"),
            "stopped_by": song.get("stopped_by"),
        },
        "buckets": {
            "n": n_buckets,
            "spacing": bucket_spacing,
            "delays": [bucket_spacing * (i + 1) for i in range(n_buckets)],
        },
        "taps": sorted(
            {m["delay"] for m in listed if isinstance(m["delay"], int) and m["connected"]}
        ),
        "members": listed,
    }
