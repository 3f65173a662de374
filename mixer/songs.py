"""A room's song: who leads, starting and ending songs, the rounds.

Pure: ``now`` (absolute samples at 48 kHz) is an argument. Mutators return whether
anything a client sees changed; :class:`mixer.roomstate.RoomState` counts versions.
"""

from __future__ import annotations

import msgspec

from common.constants import SAMPLE_RATE
from common.records import (
    MAX_EARLIER_SONGS,
    EndReason,
    Member,
    Role,
    Rounds,
    Song,
    SongMaterial,
    SongSpan,
)
from common.tracks import song_end
from mixer.members import Members
from mixer.roomconfig import CommandError

__all__ = ["Songs", "still_audible"]


def still_audible(song: Song, start: int, oldest: int) -> list[SongSpan]:
    """The spans a song starting at ``start`` keeps as its ``earlier``, newest first:
    the last song (cut at ``start`` if it ran past it) and the earlier ones, without
    those whose end is before ``oldest`` (out of the ring: no bucket still sings
    them), at most :data:`MAX_EARLIER_SONGS`."""
    kept: list[SongSpan] = []
    for span in song.spans():
        cut = span
        if span.end_pos > start:
            cut = msgspec.structs.replace(span, end_pos=max(span.start_pos, start))
        if cut.end_pos > oldest:
            kept.append(cut)
    return kept[:MAX_EARLIER_SONGS]


class Songs:
    """The song record of one room and the rules that start, end and shape songs."""

    def __init__(self, members: Members, song: Song) -> None:
        self.members = members
        self.song = song

    def leader(self, singer_id: str, what: str = "start or stop the song") -> Member:
        """The member ``singer_id`` if they lead; CommandError ``not_leader`` if not."""
        return self.members.leader(singer_id, self.song.leader, what)

    def between_songs(self, what: str) -> None:
        """CommandError ``song_running`` while a song runs (``what`` cannot change then)."""
        if self.song.running:
            raise CommandError("song_running", f"{what} cannot change while a song runs")

    def take_lead(self, member: Member) -> None:
        """Make ``member`` the leader; refused for spectators and while a song runs."""
        if member.role is Role.SPECTATOR:
            raise CommandError("spectator_cannot_lead", "spectators cannot lead")
        if self.song.running:
            raise CommandError("song_running", "cannot change the leader while a song runs")
        self.song.leader = member.singer_id

    def start(self, singer_id: str, now: int, ring_samples: int) -> SongSpan | None:
        """Leader only: start a song at the leader's current ring position.

        Returns the span of the song before (whose cues are the material's ``previous_cues``).
        """
        leader = self.leader(singer_id)
        if self.song.running:
            raise CommandError("song_running", "a song is already running")
        song = self.song
        start = now - leader.delay
        before = song.previous
        song.earlier = still_audible(song, start, now - ring_samples)
        song.running = True
        song.start_pos = start
        song.end_pos = None
        song.stopped_by = None
        song.ended = None
        song.number += 1
        # The material this song plays until its end, whatever is chosen meanwhile.
        song.started_with = SongMaterial(
            track=song.track, metronome=song.metronome, rounds=song.rounds
        )
        return before

    def stop(self, singer_id: str, now: int) -> None:
        """Leader only: end the running song at the leader's current ring position."""
        self.leader(singer_id)
        if not self.song.running:
            raise CommandError("no_song", "no song is running")
        self.end(singer_id, now, EndReason.STOPPED)

    def halt(self, singer_id: str, now: int) -> bool:
        """Leader only: stop the running song now; a no-op without one.

        Ending the song for everyone is the leader's decision: anyone else
        gets ``not_leader`` (they can ask the leader, or leave).
        """
        self.leader(singer_id, "halt the song")
        if not self.song.running:
            return False
        self.end(singer_id, now, EndReason.HALTED)
        return True

    def end(self, singer_id: str | None, now: int, reason: EndReason) -> None:
        """End the song at the leader's position ``now``, stopped by ``singer_id``."""
        self.song.end_pos = now - self.members.delay_of(self.song.leader)
        self.song.running = False
        self.song.stopped_by = singer_id
        self.song.ended = reason

    def drop_leader(self, now: int) -> bool:
        """The leader leaves: the song ends (nobody stopped it); returns whether it ran."""
        ran = self.song.running
        if ran:
            self.end(None, now, EndReason.LEADER_LEFT)
        self.song.leader = None
        return ran

    def set_rounds(self, singer_id: str, rounds: Rounds, largest_delay: int) -> bool:
        """Leader only, between songs: the round settings of the songs to come.

        Refused (``bad_rounds``) when ``repeats`` periods plus ``largest_delay``
        do not fit in the ring: the last bucket must still find the first voice
        of its last repeat there.
        """
        self.leader(singer_id, "set the rounds")
        self.between_songs("rounds")
        config = self.members.config
        if not config.rounds_fit(rounds, largest_delay):
            room = config.room_for_repeats(largest_delay) / SAMPLE_RATE
            raise CommandError(
                "bad_rounds",
                f"{rounds.repeats} repeats of {rounds.period_samples / SAMPLE_RATE:g} s do not "
                f"fit in the ring behind the largest delay: at most {room:.1f} s of repeats",
            )
        if rounds == self.song.rounds:
            return False
        self.song.rounds = rounds
        return True

    def end_with_track(self, now: int) -> bool:
        """End the running song when the leader's position passes the end of its track.

        The window closes exactly at the track's last sample; nobody stopped
        it (``stopped_by`` is None). Returns whether the song ended.
        """
        song = self.song
        played = song.played()
        if not song.running or played.track is None or song.start_pos is None:
            return False
        end = song_end(song.start_pos, played.metronome, played.track.samples)
        if now - self.members.delay_of(song.leader) < end:
            return False
        song.end_pos = end
        song.running = False
        song.stopped_by = None
        song.ended = EndReason.TRACK
        return True
