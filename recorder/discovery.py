"""Which rooms the recorder records, and what a new take records: pure decisions.

The adapter (recorder/service.py) reads the active rooms, the takes left on
disk and each room's song record, and asks :func:`wanted`; when a song gets
a take, :func:`new_take` says what it records from the song, the members and
the room's settings as read at its start.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from common.records import Member, RoomMeta, Song
from common.tracks import song_origin
from recorder.core import played_by, recording_delay
from recorder.take import TakeInfo

__all__ = ["Finished", "new_take", "wanted"]

Finished = tuple[str, int, int]
"""(room, song number, start position) of a take this process finished: never again."""


def wanted(
    room: str, song: Song | None, leftover: AbstractSet[str], finished: AbstractSet[Finished]
) -> bool:
    """Whether ``room`` needs a room task: a take a dead recorder left (finished even
    when its room is gone), or a running song not recorded yet."""
    if room in leftover:
        return True
    if song is None or song.start_pos is None:
        return False
    return song.running and (room, song.number, song.start_pos) not in finished


def new_take(
    room: str, song: Song, members: list[Member], meta: RoomMeta, created: float
) -> TakeInfo:
    """The take of ``song`` (which has started), as it is written next to its audio."""
    assert song.start_pos is not None
    leader = next((m.name for m in members if m.singer_id == song.leader), "")
    # The song's own material, not what the leader has chosen since it started.
    played = played_by(song, song.number, song.start_pos)
    return TakeInfo(
        room=room,
        number=song.number,
        start_pos=song.start_pos,
        delay=recording_delay(meta, members),
        leader=leader,
        created=created,
        track_id=played.track.id if played.track else None,
        origin=song_origin(song.start_pos, played.metronome) if played.track else None,
        stems=song.recording.stems,
        # Stems in bucket order: the leader first.
        singers={m.singer_id: m.name for m in sorted(members, key=lambda m: m.delay)}
        if song.recording.stems
        else {},
        clicks=played.metronome if song.recording.metronome and played.metronome.on else None,
    )
