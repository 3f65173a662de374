"""A room's song material: backing tracks, metronome, recording options, lyrics, cues, image.

Pure: ``now`` is an argument. Mutators return whether anything changed;
:class:`mixer.roomstate.RoomState` counts versions (and the material's own version:
the material record is big and persisted only when it changed).
"""

from __future__ import annotations

from typing import Final

from common.constants import seconds_to_samples
from common.records import (
    MAX_CUES,
    MAX_ROOM_TRACKS,
    Cue,
    Image,
    Material,
    Metronome,
    RecordingOptions,
    Song,
    SongCues,
    SongSpan,
    Track,
)
from mixer.roomconfig import CommandError
from mixer.songs import Songs

__all__ = ["Materials"]

_CUE_AHEAD: Final = seconds_to_samples(0.5)
_CUE_BEHIND: Final = seconds_to_samples(10.0)
"""A lyric cue's position must lie within this of the leader's position when it arrives."""


class Materials:
    """The material record of one room and the rules that change it (mostly the leader's)."""

    def __init__(self, songs: Songs, material: Material) -> None:
        self.songs = songs
        self.material = material
        self.discarded: list[tuple[str, str]] = []
        """``(kind, id)`` of tracks and images the room no longer lists: their bytes can go."""
        song = songs.song
        if song.track is not None and not song.running:
            song.track = material.find(song.track.id)

    # --- the next songs' choices (song record; between songs) --------------------------------

    def add_track(self, singer_id: str, track: Track) -> None:
        """Leader, between songs: list ``track`` and choose it for the next songs.

        A room lists at most :data:`MAX_ROOM_TRACKS`; the oldest one that is
        neither chosen nor a still audible song's (the newest first) goes (its
        bytes with it, through :attr:`discarded`).
        """
        song = self._next_songs(singer_id, "add a backing track", "the track")
        tracks = [t for t in self.material.tracks if t.id != track.id]
        tracks.append(track)
        # The last songs' tracks stay too, newest first while there is room: later
        # buckets (and pages that reload) still play them.
        keep = {track.id}
        played = [song.played().track]
        played += [s.started_with.track for s in song.earlier if s.started_with is not None]
        for t in played:
            if t is not None and len(keep) < MAX_ROOM_TRACKS:
                keep.add(t.id)
        while len(tracks) > MAX_ROOM_TRACKS:
            old = next(t for t in tracks if t.id not in keep)
            tracks.remove(old)
            self.discarded.append(("track", old.id))
        self.material.tracks = tracks
        song.track = track

    def set_track(self, singer_id: str, track_id: str | None) -> bool:
        """Leader, between songs: back the next songs with the track ``track_id`` (or none)."""
        song = self._next_songs(singer_id, "choose the backing track", "the track")
        track = None
        if track_id is not None:
            track = self.material.find(track_id)
            if track is None:
                raise CommandError("bad_track", f"the room has no track {track_id!r:.40}")
        changed, song.track = track != song.track, track
        return changed

    def set_metronome(self, singer_id: str, metronome: Metronome) -> bool:
        """Leader, between songs: the metronome of the next songs."""
        song = self._next_songs(singer_id, "set the metronome", "the metronome")
        changed, song.metronome = metronome != song.metronome, metronome
        return changed

    def set_recording(self, singer_id: str, recording: RecordingOptions) -> bool:
        """Leader, between songs: what the recorder writes of the next songs."""
        song = self._next_songs(singer_id, "choose what is recorded", "the recording options")
        changed, song.recording = recording != song.recording, recording
        return changed

    def _next_songs(self, singer_id: str, action: str, what: str) -> Song:
        # Choices for the songs to come: the leader's, and only between songs.
        self.songs.leader(singer_id, action)
        self.songs.between_songs(what)
        return self.songs.song

    # --- the material record ----------------------------------------------------------------

    def set_lyrics(self, singer_id: str, text: str) -> bool:
        """Leader: the lyrics everyone sees (empty clears them); allowed during a song."""
        self.songs.leader(singer_id, "set the lyrics")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if any(ord(c) < 32 and c not in "\n\t" for c in text):
            raise CommandError("bad_lyrics", "lyrics may not contain control characters")
        if text == self.material.lyrics:
            return False
        self.material.lyrics = text
        return True

    def cue_lyrics(self, singer_id: str, line: int, pos: int, now: int) -> None:
        """Leader, during a song: line ``line`` is current from the leader's position ``pos`` on.

        ``pos`` is where the leader's playback was when they advanced; it must
        lie in the song, near the leader's position now, and not before the
        previous cue.
        """
        leader = self.songs.leader(singer_id, "advance the lyrics")
        song = self.songs.song
        if not song.running or song.start_pos is None:
            raise CommandError("no_song", "lyric lines advance during a song")
        here = now - leader.delay
        material = self.material
        cues = material.cues
        if not (max(song.start_pos, here - _CUE_BEHIND) <= pos <= here + _CUE_AHEAD):
            raise CommandError(
                "bad_lyrics", f"cue position {pos} is not near your position now ({here})"
            )
        lines = material.lyrics.rstrip("\n").count("\n") + 1 if material.lyrics else 0
        if line >= lines:
            raise CommandError("bad_lyrics", f"the lyrics have no line {line} ({lines} lines)")
        if cues and pos < cues[-1].pos:
            raise CommandError("bad_lyrics", "a cue cannot come before the previous one")
        if len(cues) >= MAX_CUES:
            raise CommandError("bad_lyrics", f"at most {MAX_CUES} cues in one song")
        material.cues = [*cues, Cue(pos, line)]

    def new_song(self, before: SongSpan | None) -> bool:
        """A song started: its cues start empty, the last ones become ``previous_cues``.

        ``before`` is the song before (whose cues were ``previous_cues``); the
        cues of songs no longer audible go. Returns whether the record changed.
        """
        material = self.material
        older = material.older_cues
        if material.previous_cues and before is not None:
            older = [SongCues(start_pos=before.start_pos, cues=material.previous_cues), *older]
        # The cues of the songs still audible beyond the one before (earlier[1:]).
        audible = {span.start_pos for span in self.songs.song.earlier[1:]}
        older = [c for c in older if c.start_pos in audible]
        if not (material.cues or material.previous_cues or older != material.older_cues):
            return False
        material.older_cues = older
        material.previous_cues, material.cues = material.cues, []
        return True

    def set_image(self, singer_id: str, image: Image) -> None:
        """Leader: show ``image`` to everyone (replacing the previous one)."""
        self.songs.leader(singer_id, "set the image")
        old = self.material.image
        if old is not None and old.id != image.id:
            self.discarded.append(("image", old.id))
        self.material.image = image

    def clear_image(self, singer_id: str) -> bool:
        """Leader: take the image down."""
        self.songs.leader(singer_id, "clear the image")
        old = self.material.image
        if old is None:
            return False
        self.discarded.append(("image", old.id))
        self.material.image = None
        return True

    def forget(self, track_ids: set[str], image_ids: set[str]) -> bool:
        """Drop tracks and images whose bytes expired from Redis while nobody was here."""
        material = self.material
        tracks = [t for t in material.tracks if t.id not in track_ids]
        image = material.image if material.image and material.image.id not in image_ids else None
        if tracks == material.tracks and image == material.image:
            return False
        material.tracks = tracks
        material.image = image
        # A running song keeps its track's record: the pages already hold the audio.
        song = self.songs.song
        if song.track is not None and song.track.id in track_ids and not song.running:
            song.track = None
        return True
