"""The public view of a room (docs/protocol.md, *Room state*), built in one place.

The mixer builds it from its live state for every ``state`` event; a gateway
builds it from the Redis records when it has no event yet. Both pass the
records of common/records.py.
"""

import math
from collections.abc import Iterable
from typing import Any

from common.records import Member, Song


def public_state(
    room: str,
    *,
    version: int,
    capacity: int,
    n_buckets: int,
    bucket_spacing: int,
    song: Song,
    members: Iterable[Member],
) -> dict[str, Any]:
    """Room state as browsers see it: members in join order, taps in use, the console."""
    ordered = sorted(members, key=lambda m: (m.joined, m.singer_id))
    soloing = any(m.soloed for m in ordered)
    listed = [
        {
            "singer_id": m.singer_id,
            "name": m.name,
            "role": m.role.value,
            "delay": m.delay,
            "bucket": m.bucket,
            "muted": m.muted,
            "connected": m.connected,
            "late": m.late,
            # JSON has no -inf: null is a silenced fader.
            "gain_db": None if m.gain_db == -math.inf else m.gain_db,
            "soloed": m.soloed,
            "mix": m.mix,
            "hears": "solo" if soloing and m.mix == "solo" else "full",
        }
        for m in ordered
    ]
    rounds = song.rounds
    return {
        "room": room,
        "version": version,
        "capacity": capacity,
        "leader": song.leader,
        "song": {
            "running": song.running,
            "number": song.number,
            "start_pos": song.start_pos,
            "end_pos": song.end_pos,
            "stopped_by": song.stopped_by,
            "rounds": {"bpm": rounds.bpm, "beats": rounds.beats, "repeats": rounds.repeats},
            "leader_boost_db": song.leader_boost_db,
        },
        "buckets": {
            "n": n_buckets,
            "spacing": bucket_spacing,
            "delays": [bucket_spacing * (i + 1) for i in range(n_buckets)],
        },
        "solo": [m.singer_id for m in ordered if m.soloed],
        "taps": sorted({m.delay for m in ordered if m.connected}),
        "members": listed,
    }
