"""The public view of a room (docs/protocol.md, *Room state*), built in one place.

The mixer builds it from its live state for every ``state`` event; a gateway
builds it from the Redis records when it has no event yet. Both pass the
records of common/records.py.
"""

import math
from collections.abc import Iterable
from typing import Any

from common.records import Material, Member, Metronome, Song, SongMaterial, SongSpan, Track
from common.tracks import song_origin


def public_state(
    room: str,
    *,
    version: int,
    capacity: int,
    n_buckets: int,
    bucket_spacing: int,
    song: Song,
    members: Iterable[Member],
    material: Material | None = None,
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
    material = material if material is not None else Material()
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
            "ended": None if song.ended is None else song.ended.value,
            "rounds": {"bpm": rounds.bpm, "beats": rounds.beats, "repeats": rounds.repeats},
            "leader_boost_db": song.leader_boost_db,
            "track": _track(song.track),
            "metronome": _metronome(song.metronome),
            "recording": {"stems": song.recording.stems, "metronome": song.recording.metronome},
            # What the running (or last) song plays, and where its music (and track
            # sample 0) begins: start_pos, after a count-in bar.
            "started_with": None if song.start_pos is None else _played(song.played()),
            "origin": None
            if song.start_pos is None
            else song_origin(song.start_pos, song.played().metronome),
            # The songs before, still audible, newest first; `previous` is the first.
            "previous": _previous(song.previous),
            "earlier": [_previous(span) for span in song.earlier],
        },
        "material": {
            "tracks": [_track(t) for t in material.tracks],
            "lyrics": material.lyrics,
            "image": None
            if material.image is None
            else {
                "id": material.image.id,
                "content_type": material.image.content_type,
                "bytes": material.image.size_bytes,
            },
            "cues": [[cue.pos, cue.line] for cue in material.cues],
            "previous_cues": [[cue.pos, cue.line] for cue in material.previous_cues],
            # The songs' beyond the one before, still audible, newest first.
            "older_cues": [
                {"start_pos": c.start_pos, "cues": [[cue.pos, cue.line] for cue in c.cues]}
                for c in material.older_cues
            ],
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


def _metronome(metronome: Metronome) -> dict[str, Any]:
    return {
        "on": metronome.on,
        "bpm": metronome.bpm,
        "beats": metronome.beats,
        "count_in": metronome.count_in,
    }


def _played(played: SongMaterial) -> dict[str, Any]:
    return {"track": _track(played.track), "metronome": _metronome(played.metronome)}


def _previous(span: SongSpan | None) -> dict[str, Any] | None:
    if span is None:
        return None
    played = span.started_with
    return {
        "number": span.number,
        "start_pos": span.start_pos,
        "end_pos": span.end_pos,
        "ended": None if span.ended is None else span.ended.value,
        "started_with": None if played is None else _played(played),
        "origin": None if played is None else song_origin(span.start_pos, played.metronome),
    }


def _track(track: Track | None) -> dict[str, Any] | None:
    if track is None:
        return None
    return {
        "id": track.id,
        "name": track.name,
        "samples": track.samples,
        "bytes": track.size_bytes,
        "source": track.source,
    }
