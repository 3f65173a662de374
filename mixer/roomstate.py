"""One room's persisted state, composed of its concerns, and the version clients follow.

Pure: no I/O and no clock; ``now`` (absolute samples at 48 kHz since the
epoch) is an argument wherever time matters. Commands a room refuses raise
:class:`CommandError` with a machine-readable ``code``; records that fail to
parse raise :class:`common.errors.ValidationError`.

Each concern keeps its own rules in its own module: membership and buckets
(:mod:`mixer.members`), song and rounds (:mod:`mixer.songs`), the console
(:mod:`mixer.console`), the material (:mod:`mixer.material`) and the taps
(:mod:`mixer.taps`). :class:`RoomState` owns the version counters, applies a
command to the concerns it spans, and marks what changed.
"""

from __future__ import annotations

from typing import Final

from common.records import (
    SILENCE_DB,
    Image,
    Material,
    Member,
    Metronome,
    Mix,
    RecordingOptions,
    Role,
    Rounds,
    Song,
    Track,
)
from mixer.console import Console, db_to_gain, voice_gain
from mixer.material import Materials
from mixer.members import Members
from mixer.roomconfig import CommandError, RoomConfig
from mixer.songs import Songs, still_audible
from mixer.taps import Subscription, Tap, Taps

__all__ = [
    "SILENCE_DB",
    "CommandError",
    "Member",
    "Role",
    "RoomConfig",
    "RoomState",
    "Rounds",
    "Song",
    "Subscription",
    "Tap",
    "db_to_gain",
    "still_audible",
]


class RoomState:
    """Members, song, console, material and taps of one room, changed only through its commands.

    ``version`` increases with every change a client should see (members,
    roles, delays, mutes, gains, solo, connection, song). The mixer's
    per-chunk counters on members (``late``, ``chunks``, ``rejected``,
    ``level_db``) do not bump it: they are published with the stats, not as
    state changes. ``material_version`` increases when the material record
    changes (it is persisted only then: lyrics are big).
    """

    def __init__(
        self,
        config: RoomConfig,
        members: dict[str, Member] | None = None,
        song: Song | None = None,
        material: Material | None = None,
    ) -> None:
        self.config = config
        self.version = 0
        self.material_version = 0
        self.roster = Members(config, dict(members or {}))
        self.songs = Songs(self.roster, song if song is not None else Song())
        song = self.songs.song
        if song.leader is not None and song.leader not in self.roster.by_id:
            song.leader = None
        if not config.rounds_fit(song.rounds, self.roster.largest_delay()):
            song.rounds = Rounds(bpm=song.rounds.bpm, beats=song.rounds.beats)
        self.console = Console(self.songs)
        self.materials = Materials(self.songs, material if material is not None else Material())
        self.tapping = Taps(self.roster)
        # The concerns' records themselves (the same objects, never replaced), read
        # per chunk by the mixer: plain attributes, no property call on that path.
        self.members: Final = self.roster.by_id
        self.song: Final = song
        self.material: Final = self.materials.material
        self.subscriptions: Final = self.tapping.subscriptions

    # --- the records (persisted by mixer/store.py) ------------------------------------------

    @property
    def discarded(self) -> list[tuple[str, str]]:
        """``(kind, id)`` of tracks and images the room no longer lists: their bytes can go."""
        return self.materials.discarded

    @discarded.setter
    def discarded(self, value: list[tuple[str, str]]) -> None:
        self.materials.discarded = value

    # --- queries ----------------------------------------------------------------------------

    def member(self, singer_id: str) -> Member:
        """The member ``singer_id``; CommandError ``unknown_singer`` if absent."""
        return self.roster.member(singer_id)

    def taps(self) -> list[Tap]:
        """The taps in use: connected members' (delay, mix heard) plus live subscriptions.

        Sorted and distinct; cached per version. A solo tap exists only while
        someone is soloed.
        """
        return list(self.tapping.at(self.version).taps)

    @property
    def soloing(self) -> bool:
        """Whether anyone is in the solo mix (else the solo mix does not exist)."""
        return self.tapping.at(self.version).soloing

    def gain(self, member: Member) -> float:
        """The linear factor applied to ``member``'s voice: their fader, plus the leader's boost."""
        return voice_gain(member, self.song)

    def buckets(self) -> list[list[str]]:
        """Connected member ids per bucket, in join order (members on custom delays omitted)."""
        return self.roster.buckets()

    def largest_delay(self) -> int:
        """The largest delay a tap may have now: the last bucket, or a larger one in use."""
        return self.tapping.largest_delay()

    # --- membership (several concerns: a leader leaving ends the song) ----------------------

    def join(
        self, singer_id: str, name: str, role: Role, now: int, token_digest: str = ""
    ) -> Member:
        """Add a member, or reconnect one already present (keeping their place).

        New spectators go to the last bucket, new singers to the least
        populated of buckets ``1 .. n - 2`` (lowest on ties). A reconnect
        keeps delay, bucket and console settings; if the role changed, the
        member is placed as a new member of that role would be (a leader
        turning spectator gives up the lead, halting a running song).
        Capacity counts connected members: CommandError ``room_full``.
        Invalid ids or names raise ValidationError.
        """
        member, moved = self.roster.join(singer_id, name, role, now, token_digest)
        if moved:
            if member.role is Role.SPECTATOR and self.song.leader == singer_id:
                self._mark(self.songs.drop_leader(now))
            self.roster.place_new(member)
        self._changed()
        return member

    def disconnect(self, singer_id: str, now: int) -> None:
        """Mark a member disconnected; they keep their place until :meth:`expire`."""
        self._mark(self.roster.disconnect(singer_id, now))

    def leave(self, singer_id: str, now: int) -> None:
        """Remove a member now (no reconnect grace); a leader leaving halts the song."""
        self.roster.member(singer_id)
        self._remove(singer_id, now)
        self._changed()

    def expire(self, now: int, grace_samples: int) -> list[str]:
        """Remove members disconnected for longer than ``grace_samples``; returns their ids.

        A leader removed this way loses the lead and a running song is halted.
        Tap subscriptions past their time go too.
        """
        gone = self.roster.expired(now, grace_samples)
        for singer_id in gone:
            self._remove(singer_id, now)
        stale = self.tapping.expire(now)
        self._mark(bool(gone) or stale)
        return gone

    def subscribe_tap(self, subscriber: str, delay: int, mix: Mix, now: int, ttl: int) -> None:
        """Keep a tap ``(delay, mix)`` for ``subscriber`` (not a member) for ``ttl`` samples."""
        self._mark(self.tapping.subscribe(subscriber, delay, mix, now, ttl, self.song.rounds))

    # --- places -----------------------------------------------------------------------------

    def join_bucket(self, singer_id: str, bucket: int) -> None:
        """Move a member to bucket ``bucket`` (0 .. n - 1) and its delay."""
        self._mark(self.roster.join_bucket(singer_id, bucket))

    def set_delay(self, singer_id: str, delay_samples: int) -> None:
        """Give a member a custom delay in ``[min_delay, max_delay]`` samples (no bucket)."""
        self._mark(self.roster.set_delay(singer_id, delay_samples, self.song.rounds))

    def set_muted(self, singer_id: str, muted: bool) -> None:
        """Server-side mute: a muted member's audio is not mixed."""
        self._mark(self.roster.set_muted(singer_id, muted))

    # --- song -------------------------------------------------------------------------------

    def request_lead(self, singer_id: str, now: int) -> None:
        """Make ``singer_id`` the leader in bucket 0 and reassign everyone's delay.

        The other singers are dealt round robin over buckets ``1 .. n - 2``
        in join order, spectators go to the last bucket; custom delays are
        reset. Refused for spectators and while a song runs.
        """
        leader = self.roster.member(singer_id)
        self.songs.take_lead(leader)
        self.roster.deal(leader)
        self._changed()

    def start_song(self, singer_id: str, now: int) -> None:
        """Leader only: start a song at the leader's current ring position."""
        before = self.songs.start(singer_id, now, self.config.ring_samples)
        self._mark(True, material=self.materials.new_song(before))

    def stop_song(self, singer_id: str, now: int) -> None:
        """Leader only: end the running song at the leader's current ring position."""
        self.songs.stop(singer_id, now)
        self._changed()

    def halt(self, singer_id: str, now: int) -> None:
        """Leader only: stop the running song now; a no-op without one."""
        self._mark(self.songs.halt(singer_id, now))

    def set_rounds(self, singer_id: str, rounds: Rounds) -> None:
        """Leader only, between songs: the round settings of the songs to come."""
        self._mark(self.songs.set_rounds(singer_id, rounds, self.largest_delay()))

    def end_with_track(self, now: int) -> bool:
        """End the running song when the leader's position passes the end of its track."""
        ended = self.songs.end_with_track(now)
        self._mark(ended)
        return ended

    # --- console ----------------------------------------------------------------------------

    def set_gain(self, singer_id: str, target: str, gain_db: float) -> None:
        """Set ``target``'s mic gain: the leader may set anyone's, a singer only their own."""
        self._mark(self.console.set_gain(singer_id, target, gain_db))

    def set_leader_boost(self, singer_id: str, boost_db: float) -> None:
        """Leader only: how much louder the leader's voice is in every mix."""
        self._mark(self.console.set_leader_boost(singer_id, boost_db))

    def solo(self, singer_id: str, target: str, on: bool) -> None:
        """Leader only: put ``target`` in (or out of) the solo mix."""
        self._mark(self.console.solo(singer_id, target, on))

    def set_mix(self, singer_id: str, mix: Mix) -> None:
        """Choose the mix to hear: ``full`` or ``solo`` (the full mix while nobody solos)."""
        self._mark(self.console.set_mix(singer_id, mix))

    # --- song material ----------------------------------------------------------------------

    def add_track(self, singer_id: str, track: Track) -> None:
        """Leader, between songs: list ``track`` and choose it for the next songs."""
        self.materials.add_track(singer_id, track)
        self._mark(True, material=True)

    def set_track(self, singer_id: str, track_id: str | None) -> None:
        """Leader, between songs: back the next songs with the track ``track_id`` (or none)."""
        self._mark(self.materials.set_track(singer_id, track_id))

    def set_metronome(self, singer_id: str, metronome: Metronome) -> None:
        """Leader, between songs: the metronome of the next songs."""
        self._mark(self.materials.set_metronome(singer_id, metronome))

    def set_recording(self, singer_id: str, recording: RecordingOptions) -> None:
        """Leader, between songs: what the recorder writes of the next songs."""
        self._mark(self.materials.set_recording(singer_id, recording))

    def set_lyrics(self, singer_id: str, text: str) -> None:
        """Leader: the lyrics everyone sees (empty clears them); allowed during a song."""
        changed = self.materials.set_lyrics(singer_id, text)
        self._mark(changed, material=changed)

    def cue_lyrics(self, singer_id: str, line: int, pos: int, now: int) -> None:
        """Leader, during a song: line ``line`` is current from the leader's position ``pos`` on."""
        self.materials.cue_lyrics(singer_id, line, pos, now)
        self._mark(True, material=True)

    def set_image(self, singer_id: str, image: Image) -> None:
        """Leader: show ``image`` to everyone (replacing the previous one)."""
        self.materials.set_image(singer_id, image)
        self._mark(True, material=True)

    def clear_image(self, singer_id: str) -> None:
        """Leader: take the image down."""
        changed = self.materials.clear_image(singer_id)
        self._mark(changed, material=changed)

    def forget_material(self, track_ids: set[str], image_ids: set[str]) -> None:
        """Drop tracks and images whose bytes expired from Redis while nobody was here."""
        changed = self.materials.forget(track_ids, image_ids)
        self._mark(changed, material=changed)

    # --- internals --------------------------------------------------------------------------

    def _changed(self) -> None:
        self.version += 1

    def _mark(self, changed: bool, *, material: bool = False) -> None:
        if material:
            self.material_version += 1
        if changed:
            self.version += 1

    def _remove(self, singer_id: str, now: int) -> None:
        if self.song.leader == singer_id:
            self._mark(self.songs.drop_leader(now))
        self.roster.remove(singer_id)
