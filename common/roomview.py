"""The public view of a room (docs/protocol.md, *Room state*), typed and built in one place.

The mixer builds a :class:`PublicRoom` from its live state for every ``state``
event; a gateway builds one from the Redis records when it has no event yet.
Both pass the records of common/records.py. The field order of each struct is
the order of the JSON object browsers read, and of the msgpack map in the
``state`` event (common/events.py): changing it changes bytes on the wire.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import msgspec

from common.listening import anyone_soloed, bucket_delay, hears
from common.records import (
    Cue,
    EndReason,
    Material,
    Member,
    Metronome,
    Mix,
    RecordingOptions,
    Role,
    Rounds,
    Song,
    SongCues,
    SongMaterial,
    SongSpan,
    Track,
    join_order,
)
from common.tracks import song_origin

__all__ = [
    "BucketsView",
    "ImageView",
    "MaterialView",
    "MemberView",
    "PlayedView",
    "PreviousSongView",
    "PublicRoom",
    "SongView",
    "TrackView",
    "public_state",
]


class TrackView(msgspec.Struct, frozen=True, kw_only=True):
    """A backing track as pages see it (``bytes``: its size)."""

    id: str
    name: str
    samples: int
    bytes: int
    source: Literal["upload", "library"]


class PlayedView(msgspec.Struct, frozen=True, kw_only=True):
    """What a song plays: its track and its metronome."""

    track: TrackView | None
    metronome: Metronome


class PreviousSongView(msgspec.Struct, frozen=True, kw_only=True):
    """The song before the current one, once it has ended."""

    number: int
    start_pos: int
    end_pos: int
    ended: EndReason | None
    started_with: PlayedView | None
    origin: int | None


class SongView(msgspec.Struct, frozen=True, kw_only=True):
    """The song: its window, the leader's settings for the next songs, what it plays."""

    running: bool
    number: int
    start_pos: int | None
    end_pos: int | None
    stopped_by: str | None
    ended: EndReason | None
    rounds: Rounds
    leader_boost_db: float
    track: TrackView | None
    metronome: Metronome
    recording: RecordingOptions
    started_with: PlayedView | None
    """What the running (or last) song plays (None before the first)."""
    origin: int | None
    """Where that song's music (and track sample 0) begins: start_pos, after a count-in bar."""
    previous: PreviousSongView | None
    earlier: list[PreviousSongView]
    """The songs before, still audible, newest first; ``previous`` is the first."""


class ImageView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    content_type: str
    bytes: int


class MaterialView(msgspec.Struct, frozen=True, kw_only=True):
    """The room's tracks, lyrics, image and lyric cues (``[pos, line]`` pairs)."""

    tracks: list[TrackView]
    lyrics: str
    image: ImageView | None
    cues: list[Cue]
    previous_cues: list[Cue]
    older_cues: list[SongCues]
    """The cues of the songs beyond the one before, still audible, newest first."""


class BucketsView(msgspec.Struct, frozen=True, kw_only=True):
    n: int
    spacing: int
    delays: list[int]


class MemberView(msgspec.Struct, frozen=True, kw_only=True):
    """A member as everyone in the room sees them (no counters, no token)."""

    singer_id: str
    name: str
    role: Role
    delay: int
    bucket: int | None
    muted: bool
    connected: bool
    late: int
    gain_db: float | None
    """The conductor's fader; None is silenced (JSON has no -inf)."""
    soloed: bool
    mix: Mix
    hears: Mix
    """The mix the member's tap carries: ``solo`` only if they chose it and someone solos."""


class PublicRoom(msgspec.Struct, frozen=True, kw_only=True):
    """Room state as browsers see it: members in join order, taps in use, the console."""

    room: str
    version: int
    capacity: int
    leader: str | None
    song: SongView
    material_version: int = 0
    """Increases with every change of ``material`` (persisted with it, so it keeps rising
    across mixers); pages get ``material`` in a message of its own, sent only when this
    changes, and see this number in each ``state`` instead (docs/protocol.md)."""
    material: MaterialView
    buckets: BucketsView
    solo: list[str]
    taps: list[int]
    members: list[MemberView]

    def taps_heard(self) -> dict[str, tuple[int, Mix]]:
        """Singer -> the tap (delay, mix) they hear."""
        return {m.singer_id: (m.delay, m.hears) for m in self.members}


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
    material_version: int = 0,
) -> PublicRoom:
    """Room state as browsers see it: members in join order, taps in use, the console."""
    ordered = sorted(members, key=join_order)
    soloing = anyone_soloed(ordered)
    listed = [
        MemberView(
            singer_id=m.singer_id,
            name=m.name,
            role=m.role,
            delay=m.delay,
            bucket=m.bucket,
            muted=m.muted,
            connected=m.connected,
            late=m.late,
            gain_db=None if m.gain_db == -math.inf else m.gain_db,
            soloed=m.soloed,
            mix=m.mix,
            hears=hears(m.mix, soloing),
        )
        for m in ordered
    ]
    material = material if material is not None else Material()
    started = song.start_pos
    return PublicRoom(
        room=room,
        version=version,
        capacity=capacity,
        leader=song.leader,
        song=SongView(
            running=song.running,
            number=song.number,
            start_pos=song.start_pos,
            end_pos=song.end_pos,
            stopped_by=song.stopped_by,
            ended=song.ended,
            rounds=song.rounds,
            leader_boost_db=song.leader_boost_db,
            track=_track(song.track),
            metronome=song.metronome,
            recording=song.recording,
            started_with=None if started is None else _played(song.played()),
            origin=None if started is None else song_origin(started, song.played().metronome),
            previous=_previous(song.previous),
            earlier=[v for span in song.earlier if (v := _previous(span)) is not None],
        ),
        material_version=material_version,
        material=MaterialView(
            tracks=[_track_view(t) for t in material.tracks],
            lyrics=material.lyrics,
            image=None
            if material.image is None
            else ImageView(
                id=material.image.id,
                content_type=material.image.content_type,
                bytes=material.image.size_bytes,
            ),
            cues=list(material.cues),
            previous_cues=list(material.previous_cues),
            older_cues=list(material.older_cues),
        ),
        buckets=BucketsView(
            n=n_buckets,
            spacing=bucket_spacing,
            delays=[bucket_delay(i, bucket_spacing) for i in range(n_buckets)],
        ),
        solo=[m.singer_id for m in ordered if m.soloed],
        taps=sorted({m.delay for m in ordered if m.connected}),
        members=listed,
    )


def _played(played: SongMaterial) -> PlayedView:
    return PlayedView(track=_track(played.track), metronome=played.metronome)


def _previous(span: SongSpan | None) -> PreviousSongView | None:
    if span is None:
        return None
    played = span.started_with
    return PreviousSongView(
        number=span.number,
        start_pos=span.start_pos,
        end_pos=span.end_pos,
        ended=span.ended,
        started_with=None if played is None else _played(played),
        origin=None if played is None else song_origin(span.start_pos, played.metronome),
    )


def _track(track: Track | None) -> TrackView | None:
    return None if track is None else _track_view(track)


def _track_view(track: Track) -> TrackView:
    return TrackView(
        id=track.id,
        name=track.name,
        samples=track.samples,
        bytes=track.size_bytes,
        source=track.source,
    )
