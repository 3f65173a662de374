"""One room's persisted state: members, their delays and buckets, and the song.

Pure: no I/O and no clock; ``now`` (absolute samples at 48 kHz since the
epoch) is an argument wherever time matters. Commands a room refuses raise
:class:`CommandError` with a machine-readable ``code``; records that fail to
parse raise :class:`common.errors.ValidationError`.

Buckets are numbered ``0 .. n_buckets - 1``: bucket 0 is the leader's,
buckets ``1 .. n - 2`` are spread among the singers, the last one holds the
listen-only spectators. Bucket ``i`` has delay ``(i + 1) * bucket_spacing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import msgspec

from common.codes import Code
from common.constants import (
    DEFAULT_BUCKET_SPACING_S,
    DEFAULT_LEAD_S,
    DEFAULT_N_BUCKETS,
    DEFAULT_RING_S,
    OCC_FRAME_SAMPLES,
    SAMPLE_RATE,
    seconds_to_samples,
)
from common.errors import BrigadeError, ValidationError
from common.names import check_display_name, check_id
from common.records import (
    MAX_CUES,
    MAX_EARLIER_SONGS,
    MAX_ROOM_TRACKS,
    SILENCE_DB,
    Cue,
    EndReason,
    Image,
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
    check_gain_db,
)
from common.tracks import song_end

__all__ = [
    "SILENCE_DB",
    "CommandError",
    "Member",
    "Role",
    "RoomConfig",
    "RoomState",
    "Rounds",
    "Song",
    "Tap",
]

_MIN_DELAY_MARGIN: Final = seconds_to_samples(0.25)
"""A delay must exceed the downlink lead by this much, or frames would be read before written."""

_MAX_DELAY_MARGIN: Final = seconds_to_samples(5.0)
"""A delay must stay this far inside the ring, so late writes and reads still fit in it."""

_REPEAT_SLACK: Final = seconds_to_samples(1.0)

_CUE_AHEAD: Final = seconds_to_samples(0.5)
_CUE_BEHIND: Final = seconds_to_samples(10.0)
"""A lyric cue's position must lie within this of the leader's position when it arrives."""
"""Margin kept between the last repeat's source and the ring's oldest sample (late taps)."""


class CommandError(BrigadeError):
    """A command the room refused; ``code`` is for machines, ``message`` for humans."""

    def __init__(self, code: Code | str, message: str) -> None:
        super().__init__(message)
        self.code = Code(code)
        self.message = message


class Tap(NamedTuple):
    """A subscription to a room's audio: the mix as heard at ``delay``."""

    delay: int
    mix: Mix = "full"


@dataclass(frozen=True)
class RoomConfig:
    """A room's timing and size; all durations in samples.

    Invariants (checked at construction, ValidationError otherwise): the
    ring is a positive multiple of 128 samples, the lead is positive, there
    are at least 3 buckets (leader, singers, spectators), and every bucket's
    delay lies in ``[min_delay, max_delay]``.
    """

    ring_samples: int = DEFAULT_RING_S * SAMPLE_RATE
    lead_samples: int = seconds_to_samples(DEFAULT_LEAD_S)
    bucket_spacing: int = seconds_to_samples(DEFAULT_BUCKET_SPACING_S)
    n_buckets: int = DEFAULT_N_BUCKETS
    capacity: int = 100

    def __post_init__(self) -> None:
        for name in ("ring_samples", "lead_samples", "bucket_spacing", "n_buckets", "capacity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{name} must be an integer, got {type(value).__name__}")
        if self.ring_samples <= 0 or self.ring_samples % OCC_FRAME_SAMPLES:
            raise ValidationError(
                f"ring_samples must be a positive multiple of {OCC_FRAME_SAMPLES}, "
                f"got {self.ring_samples}"
            )
        if self.lead_samples <= 0:
            raise ValidationError(f"lead_samples must be positive, got {self.lead_samples}")
        if self.bucket_spacing <= 0:
            raise ValidationError(f"bucket_spacing must be positive, got {self.bucket_spacing}")
        if self.n_buckets < 3:
            raise ValidationError(f"n_buckets must be at least 3, got {self.n_buckets}")
        if self.capacity < 1:
            raise ValidationError(f"capacity must be at least 1, got {self.capacity}")
        if self.bucket_delay(0) < self.min_delay:
            raise ValidationError(
                f"bucket 0's delay {self.bucket_delay(0)} is below the minimum {self.min_delay} "
                "(lead + 0.25 s)"
            )
        last = self.bucket_delay(self.n_buckets - 1)
        if last > self.max_delay:
            raise ValidationError(
                f"the last bucket's delay {last} exceeds the maximum {self.max_delay} (ring - 5 s)"
            )

    @property
    def min_delay(self) -> int:
        """Smallest delay a member may have: the lead plus 0.25 s."""
        return self.lead_samples + _MIN_DELAY_MARGIN

    @property
    def max_delay(self) -> int:
        """Largest delay a member may have: the ring minus 5 s."""
        return self.ring_samples - _MAX_DELAY_MARGIN

    @property
    def spectator_bucket(self) -> int:
        return self.n_buckets - 1

    def bucket_delay(self, bucket: int) -> int:
        """The delay of bucket ``bucket`` (0-based): ``(bucket + 1) * bucket_spacing``."""
        return (bucket + 1) * self.bucket_spacing


def _join_order(member: Member) -> tuple[int, str]:
    return member.joined, member.singer_id


def db_to_gain(gain_db: float) -> float:
    """A level in dB as a linear factor (``-inf`` is 0)."""
    return 0.0 if gain_db == -math.inf else 10.0 ** (gain_db / 20.0)


@dataclass
class _TapsCache:
    version: int = -1
    taps: list[Tap] = field(default_factory=list)
    soloing: bool = False


@dataclass
class Subscription:
    """A tap asked for by a non-member (a recorder), alive until ``expires``."""

    tap: Tap
    expires: int


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


class RoomState:
    """Members, song and console of one room, changed only through its commands.

    ``version`` increases with every change a client should see (members,
    roles, delays, mutes, gains, solo, connection, song). The mixer's
    per-chunk counters on members (``late``, ``chunks``, ``rejected``,
    ``level_db``) do not bump it: they are published with the stats, not as
    state changes.
    """

    def __init__(
        self,
        config: RoomConfig,
        members: dict[str, Member] | None = None,
        song: Song | None = None,
        material: Material | None = None,
    ) -> None:
        self.config = config
        self.members: dict[str, Member] = dict(members or {})
        self.song = song if song is not None else Song()
        self.material = material if material is not None else Material()
        self.material_version = 0
        """Bumped when :attr:`material` changes (it is persisted only then: lyrics are big)."""
        self.discarded: list[tuple[str, str]] = []
        """``(kind, id)`` of tracks and images the room no longer lists: their bytes can go."""
        self.subscriptions: dict[str, Subscription] = {}
        self.version = 0
        self._taps = _TapsCache()
        self._fit_to_config()

    def _fit_to_config(self) -> None:
        # Records may come from Redis written under another config (fewer
        # buckets, a shorter ring): pull every delay back inside this one so
        # that taps always read inside the ring.
        config = self.config
        for key, member in self.members.items():
            if key != member.singer_id:
                raise ValidationError(
                    f"member stored under {key!r:.80} has id {member.singer_id!r}"
                )
            if member.bucket is not None:
                member.bucket = min(member.bucket, config.spectator_bucket)
                member.delay = config.bucket_delay(member.bucket)
            else:
                member.delay = min(max(member.delay, config.min_delay), config.max_delay)
        if self.song.leader is not None and self.song.leader not in self.members:
            self.song.leader = None
        if not self._rounds_fit(self.song.rounds, self._largest_delay()):
            self.song.rounds = Rounds(bpm=self.song.rounds.bpm, beats=self.song.rounds.beats)
        if self.song.track is not None and not self.song.running:
            self.song.track = self.material.find(self.song.track.id)

    # --- queries ----------------------------------------------------------------------------

    def member(self, singer_id: str) -> Member:
        """The member ``singer_id``; CommandError ``unknown_singer`` if absent."""
        member = self.members.get(singer_id)
        if member is None:
            raise CommandError("unknown_singer", f"{singer_id!r:.80} is not in this room")
        return member

    def taps(self) -> list[Tap]:
        """The taps in use: connected members' (delay, mix heard) plus live subscriptions.

        Sorted and distinct; cached per version. A solo tap exists only while
        someone is soloed.
        """
        cache = self._refresh()
        return list(cache.taps)

    @property
    def soloing(self) -> bool:
        """Whether anyone is in the solo mix (else the solo mix does not exist)."""
        return self._refresh().soloing

    def hears(self, member: Member) -> Mix:
        """The mix ``member`` hears: their choice, but the solo mix only while someone solos."""
        return "solo" if member.mix == "solo" and self.soloing else "full"

    def gain(self, member: Member) -> float:
        """The linear factor applied to ``member``'s voice: their fader, plus the leader's boost."""
        gain_db = member.gain_db
        if member.singer_id == self.song.leader:
            gain_db += self.song.leader_boost_db
        return 1.0 if gain_db == 0.0 else db_to_gain(gain_db)

    def _refresh(self) -> _TapsCache:
        cache = self._taps
        if cache.version != self.version:
            soloing = any(m.soloed for m in self.members.values())
            cache.soloing = soloing
            taps = {
                Tap(m.delay, "solo" if soloing and m.mix == "solo" else "full")
                for m in self.members.values()
                if m.connected
            }
            taps.update(
                sub.tap for sub in self.subscriptions.values() if sub.tap.mix == "full" or soloing
            )
            cache.taps = sorted(taps)
            cache.version = self.version
        return cache

    def buckets(self) -> list[list[str]]:
        """Connected member ids per bucket, in join order (members on custom delays omitted)."""
        result: list[list[str]] = [[] for _ in range(self.config.n_buckets)]
        for m in sorted(self.members.values(), key=_join_order):
            if m.connected and m.bucket is not None:
                result[m.bucket].append(m.singer_id)
        return result

    # --- membership -------------------------------------------------------------------------

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
        check_id(singer_id, "singer_id")
        name = check_display_name(name)
        if role not in (Role.SINGER, Role.SPECTATOR):
            raise ValidationError(f"role must be 'singer' or 'spectator', got {role!r:.40}")
        role = Role(role)
        member = self.members.get(singer_id)
        if (member is None or not member.connected) and self._connected() >= self.config.capacity:
            raise CommandError("room_full", f"the room is full ({self.config.capacity} members)")
        if member is None:
            member = Member(
                singer_id=singer_id,
                name=name,
                role=role,
                delay=0,
                bucket=None,
                joined=now,
                token_digest=token_digest,
            )
            self._place(member, self._bucket_for_new(role))
            self.members[singer_id] = member
        else:
            member.name = name
            member.connected = True
            member.token_digest = token_digest or member.token_digest
            member.disconnected_at = None
            if member.role is not role:
                member.role = role
                if role is Role.SPECTATOR and self.song.leader == singer_id:
                    self._drop_leader(now)
                self._place(member, self._bucket_for_new(role, exclude=member))
        self._changed()
        return member

    def disconnect(self, singer_id: str, now: int) -> None:
        """Mark a member disconnected; they keep their place until :meth:`expire`."""
        member = self.member(singer_id)
        if member.connected:
            member.connected = False
            member.disconnected_at = now
            self._changed()

    def leave(self, singer_id: str, now: int) -> None:
        """Remove a member now (no reconnect grace); a leader leaving halts the song."""
        self.member(singer_id)
        self._remove(singer_id, now)
        self._changed()

    def expire(self, now: int, grace_samples: int) -> list[str]:
        """Remove members disconnected for longer than ``grace_samples``; returns their ids.

        A leader removed this way loses the lead and a running song is halted.
        Tap subscriptions past their time go too.
        """
        gone = [
            m.singer_id
            for m in self.members.values()
            if not m.connected
            and m.disconnected_at is not None
            and now - m.disconnected_at > grace_samples
        ]
        for singer_id in gone:
            self._remove(singer_id, now)
        stale = [name for name, sub in self.subscriptions.items() if sub.expires <= now]
        for name in stale:
            del self.subscriptions[name]
        if gone or stale:
            self._changed()
        return gone

    def subscribe_tap(self, subscriber: str, delay: int, mix: Mix, now: int, ttl: int) -> None:
        """Keep a tap ``(delay, mix)`` for ``subscriber`` (not a member) for ``ttl`` samples."""
        check_id(subscriber, "subscriber")
        self._check_delay(delay)
        tap = Tap(delay, mix)
        old = self.subscriptions.get(subscriber)
        self.subscriptions[subscriber] = Subscription(tap, now + ttl)
        if old is None or old.tap != tap:
            self._changed()

    # --- song -------------------------------------------------------------------------------

    def request_lead(self, singer_id: str, now: int) -> None:
        """Make ``singer_id`` the leader in bucket 0 and reassign everyone's delay.

        The other singers are dealt round robin over buckets ``1 .. n - 2``
        in join order, spectators go to the last bucket; custom delays are
        reset. Refused for spectators and while a song runs.
        """
        leader = self.member(singer_id)
        if leader.role is Role.SPECTATOR:
            raise CommandError("spectator_cannot_lead", "spectators cannot lead")
        if self.song.running:
            raise CommandError("song_running", "cannot change the leader while a song runs")
        self.song.leader = singer_id
        self._place(leader, 0)
        singer_buckets = self.config.n_buckets - 2
        dealt = 0
        for m in sorted(self.members.values(), key=_join_order):
            if m is leader:
                continue
            if m.role is Role.SPECTATOR:
                self._place(m, self.config.spectator_bucket)
            else:
                self._place(m, 1 + dealt % singer_buckets)
                dealt += 1
        self._changed()

    def start_song(self, singer_id: str, now: int) -> None:
        """Leader only: start a song at the leader's current ring position."""
        leader = self._leader(singer_id)
        if self.song.running:
            raise CommandError("song_running", "a song is already running")
        song = self.song
        start = now - leader.delay
        before = song.previous  # whose cues are material.previous_cues
        song.earlier = still_audible(song, start, now - self.config.ring_samples)
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
        material = self.material
        older = material.older_cues
        if material.previous_cues and before is not None:
            older = [SongCues(start_pos=before.start_pos, cues=material.previous_cues), *older]
        # The cues of the songs still audible beyond the one before (earlier[1:]).
        audible = {span.start_pos for span in song.earlier[1:]}
        older = [c for c in older if c.start_pos in audible]
        if material.cues or material.previous_cues or older != material.older_cues:
            material.older_cues = older
            material.previous_cues, material.cues = material.cues, []
            self._material_changed()
        self._changed()

    def stop_song(self, singer_id: str, now: int) -> None:
        """Leader only: end the running song at the leader's current ring position."""
        self._leader(singer_id)
        if not self.song.running:
            raise CommandError("no_song", "no song is running")
        self._halt(singer_id, now, EndReason.STOPPED)

    def halt(self, singer_id: str, now: int) -> None:
        """Leader only: stop the running song now; a no-op without one.

        Ending the song for everyone is the leader's decision: anyone else
        gets ``not_leader`` (they can ask the leader, or leave).
        """
        self._leader(singer_id, "halt the song")
        if self.song.running:
            self._halt(singer_id, now, EndReason.HALTED)

    def set_rounds(self, singer_id: str, rounds: Rounds) -> None:
        """Leader only, between songs: the round settings of the songs to come.

        Refused (``bad_rounds``) when ``repeats`` periods plus the largest
        delay in use do not fit in the ring: the last bucket must still find
        the first voice of its last repeat there.
        """
        self._leader(singer_id, "set the rounds")
        if self.song.running:
            raise CommandError("song_running", "rounds cannot change while a song runs")
        if not self._rounds_fit(rounds, self._largest_delay()):
            room = (self._room_for_repeats(self._largest_delay())) / SAMPLE_RATE
            raise CommandError(
                "bad_rounds",
                f"{rounds.repeats} repeats of {rounds.period_samples / SAMPLE_RATE:g} s do not "
                f"fit in the ring behind the largest delay: at most {room:.1f} s of repeats",
            )
        if rounds != self.song.rounds:
            self.song.rounds = rounds
            self._changed()

    def set_leader_boost(self, singer_id: str, boost_db: float) -> None:
        """Leader only: how much louder the leader's voice is in every mix."""
        self._leader(singer_id, "set the leader's boost")
        if not 0 <= boost_db <= 12:
            raise CommandError("bad_gain", f"boost must be 0 .. 12 dB, got {boost_db!r:.20}")
        if boost_db != self.song.leader_boost_db:
            self.song.leader_boost_db = float(boost_db)
            self._changed()

    def end_with_track(self, now: int) -> bool:
        """End the running song when the leader's position passes the end of its track.

        The window closes exactly at the track's last sample; nobody stopped
        it (``stopped_by`` is None). Returns whether the song ended.
        """
        song = self.song
        played = song.played()
        if not song.running or played.track is None or song.start_pos is None:
            return False
        leader = self.members.get(song.leader) if song.leader is not None else None
        delay = leader.delay if leader is not None else self.config.bucket_delay(0)
        end = song_end(song.start_pos, played.metronome, played.track.samples)
        if now - delay < end:
            return False
        song.end_pos = end
        song.running = False
        song.stopped_by = None
        song.ended = EndReason.TRACK
        self._changed()
        return True

    # --- song material ----------------------------------------------------------------------

    def add_track(self, singer_id: str, track: Track) -> None:
        """Leader, between songs: list ``track`` and choose it for the next songs.

        A room lists at most :data:`MAX_ROOM_TRACKS`; the oldest one that is
        neither chosen nor a still audible song's (the newest first) goes (its
        bytes with it, through :attr:`discarded`).
        """
        self._leader(singer_id, "add a backing track")
        self._between_songs("the track")
        tracks = [t for t in self.material.tracks if t.id != track.id]
        tracks.append(track)
        # The last songs' tracks stay too, newest first while there is room: later
        # buckets (and pages that reload) still play them.
        keep = {track.id}
        played = [self.song.played().track]
        played += [s.started_with.track for s in self.song.earlier if s.started_with is not None]
        for t in played:
            if t is not None and len(keep) < MAX_ROOM_TRACKS:
                keep.add(t.id)
        while len(tracks) > MAX_ROOM_TRACKS:
            old = next(t for t in tracks if t.id not in keep)
            tracks.remove(old)
            self.discarded.append(("track", old.id))
        self.material.tracks = tracks
        self.song.track = track
        self._material_changed()
        self._changed()

    def set_track(self, singer_id: str, track_id: str | None) -> None:
        """Leader, between songs: back the next songs with the track ``track_id`` (or none)."""
        self._leader(singer_id, "choose the backing track")
        self._between_songs("the track")
        track = None
        if track_id is not None:
            track = self.material.find(track_id)
            if track is None:
                raise CommandError("bad_track", f"the room has no track {track_id!r:.40}")
        if track != self.song.track:
            self.song.track = track
            self._changed()

    def set_metronome(self, singer_id: str, metronome: Metronome) -> None:
        """Leader, between songs: the metronome of the next songs."""
        self._leader(singer_id, "set the metronome")
        self._between_songs("the metronome")
        if metronome != self.song.metronome:
            self.song.metronome = metronome
            self._changed()

    def set_recording(self, singer_id: str, recording: RecordingOptions) -> None:
        """Leader, between songs: what the recorder writes of the next songs."""
        self._leader(singer_id, "choose what is recorded")
        self._between_songs("the recording options")
        if recording != self.song.recording:
            self.song.recording = recording
            self._changed()

    def set_lyrics(self, singer_id: str, text: str) -> None:
        """Leader: the lyrics everyone sees (empty clears them); allowed during a song."""
        self._leader(singer_id, "set the lyrics")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if any(ord(c) < 32 and c not in "\n\t" for c in text):
            raise CommandError("bad_lyrics", "lyrics may not contain control characters")
        if text != self.material.lyrics:
            self.material.lyrics = text
            self._material_changed()
            self._changed()

    def cue_lyrics(self, singer_id: str, line: int, pos: int, now: int) -> None:
        """Leader, during a song: line ``line`` is current from the leader's position ``pos`` on.

        ``pos`` is where the leader's playback was when they advanced; it must
        lie in the song, near the leader's position now, and not before the
        previous cue.
        """
        leader = self._leader(singer_id, "advance the lyrics")
        song = self.song
        if not song.running or song.start_pos is None:
            raise CommandError("no_song", "lyric lines advance during a song")
        here = now - leader.delay
        cues = self.material.cues
        if not (max(song.start_pos, here - _CUE_BEHIND) <= pos <= here + _CUE_AHEAD):
            raise CommandError(
                "bad_lyrics", f"cue position {pos} is not near your position now ({here})"
            )
        lines = self.material.lyrics.rstrip("\n").count("\n") + 1 if self.material.lyrics else 0
        if line >= lines:
            raise CommandError("bad_lyrics", f"the lyrics have no line {line} ({lines} lines)")
        if cues and pos < cues[-1].pos:
            raise CommandError("bad_lyrics", "a cue cannot come before the previous one")
        if len(cues) >= MAX_CUES:
            raise CommandError("bad_lyrics", f"at most {MAX_CUES} cues in one song")
        self.material.cues = [*cues, Cue(pos, line)]
        self._material_changed()
        self._changed()

    def set_image(self, singer_id: str, image: Image) -> None:
        """Leader: show ``image`` to everyone (replacing the previous one)."""
        self._leader(singer_id, "set the image")
        old = self.material.image
        if old is not None and old.id != image.id:
            self.discarded.append(("image", old.id))
        self.material.image = image
        self._material_changed()
        self._changed()

    def clear_image(self, singer_id: str) -> None:
        """Leader: take the image down."""
        self._leader(singer_id, "clear the image")
        old = self.material.image
        if old is not None:
            self.discarded.append(("image", old.id))
            self.material.image = None
            self._material_changed()
            self._changed()

    def forget_material(self, track_ids: set[str], image_ids: set[str]) -> None:
        """Drop tracks and images whose bytes expired from Redis while nobody was here."""
        material = self.material
        tracks = [t for t in material.tracks if t.id not in track_ids]
        image = material.image if material.image and material.image.id not in image_ids else None
        if tracks == material.tracks and image == material.image:
            return
        material.tracks = tracks
        material.image = image
        # A running song keeps its track's record: the pages already hold the audio.
        track = self.song.track
        if track is not None and track.id in track_ids and not self.song.running:
            self.song.track = None
        self._material_changed()
        self._changed()

    def _between_songs(self, what: str) -> None:
        if self.song.running:
            raise CommandError("song_running", f"{what} cannot change while a song runs")

    def _material_changed(self) -> None:
        self.material_version += 1

    # --- console ----------------------------------------------------------------------------

    def set_gain(self, singer_id: str, target: str, gain_db: float) -> None:
        """Set ``target``'s mic gain: the leader may set anyone's, a singer only their own."""
        self.member(singer_id)
        member = self.member(target)
        if singer_id not in (target, self.song.leader):
            raise CommandError("not_leader", "only the leader can set another singer's gain")
        try:
            gain_db = check_gain_db(gain_db)
        except ValidationError as exc:
            raise CommandError("bad_gain", str(exc)) from None
        if member.gain_db != gain_db:
            member.gain_db = gain_db
            self._changed()

    def solo(self, singer_id: str, target: str, on: bool) -> None:
        """Leader only: put ``target`` in (or out of) the solo mix."""
        self._leader(singer_id, "solo singers")
        member = self.member(target)
        if member.soloed != on:
            member.soloed = on
            self._changed()

    def set_mix(self, singer_id: str, mix: Mix) -> None:
        """Choose the mix to hear: ``full`` or ``solo`` (the full mix while nobody solos)."""
        member = self.member(singer_id)
        if mix not in ("full", "solo"):
            raise CommandError("bad_message", f"mix must be 'full' or 'solo', got {mix!r:.20}")
        if member.mix != mix:
            member.mix = mix
            self._changed()

    # --- places -----------------------------------------------------------------------------

    def join_bucket(self, singer_id: str, bucket: int) -> None:
        """Move a member to bucket ``bucket`` (0 .. n - 1) and its delay."""
        member = self.member(singer_id)
        if (
            isinstance(bucket, bool)
            or not isinstance(bucket, int)
            or not 0 <= bucket < self.config.n_buckets
        ):
            raise CommandError(
                "bad_bucket", f"bucket must be 0 .. {self.config.n_buckets - 1}, got {bucket!r:.40}"
            )
        if member.bucket != bucket:
            self._place(member, bucket)
            self._changed()

    def set_delay(self, singer_id: str, delay_samples: int) -> None:
        """Give a member a custom delay in ``[min_delay, max_delay]`` samples (no bucket)."""
        member = self.member(singer_id)
        self._check_delay(delay_samples)
        if member.delay != delay_samples or member.bucket is not None:
            member.delay = delay_samples
            member.bucket = None
            self._changed()

    def set_muted(self, singer_id: str, muted: bool) -> None:
        """Server-side mute: a muted member's audio is not mixed."""
        member = self.member(singer_id)
        if member.muted != bool(muted):
            member.muted = bool(muted)
            self._changed()

    # --- internals --------------------------------------------------------------------------

    def _changed(self) -> None:
        self.version += 1

    def _connected(self) -> int:
        return sum(1 for m in self.members.values() if m.connected)

    def _check_delay(self, delay: int) -> None:
        low, high = self.config.min_delay, self.config.max_delay
        if isinstance(delay, bool) or not isinstance(delay, int) or not low <= delay <= high:
            raise CommandError(
                "bad_delay", f"delay must be {low} .. {high} samples, got {delay!r:.40}"
            )
        if not self._rounds_fit(self.song.rounds, delay):
            raise CommandError(
                "bad_delay",
                f"a delay of {delay / SAMPLE_RATE:g} s leaves no room in the ring for the "
                "rounds; turn repeats down first",
            )

    def largest_delay(self) -> int:
        """The largest delay a tap may have now: the last bucket, or a larger one in use."""
        return self._largest_delay()

    def _largest_delay(self) -> int:
        delays = [m.delay for m in self.members.values()]
        delays.extend(sub.tap.delay for sub in self.subscriptions.values())
        return max([self.config.bucket_delay(self.config.spectator_bucket), *delays])

    def _room_for_repeats(self, delay: int) -> int:
        # A tap at `delay` reads position p at p + delay - lead (up to 50 frames late),
        # and its last repeat needs p - span still inside the ring then.
        return self.config.ring_samples - delay + self.config.lead_samples - _REPEAT_SLACK

    def _rounds_fit(self, rounds: Rounds, delay: int) -> bool:
        return rounds.span_samples <= self._room_for_repeats(delay)

    def _place(self, member: Member, bucket: int) -> None:
        member.bucket = bucket
        member.delay = self.config.bucket_delay(bucket)

    def _bucket_for_new(self, role: Role, exclude: Member | None = None) -> int:
        if role is Role.SPECTATOR:
            return self.config.spectator_bucket
        counts = [0] * self.config.n_buckets
        for m in self.members.values():
            if m is not exclude and m.connected and m.role is Role.SINGER and m.bucket is not None:
                counts[m.bucket] += 1
        singer_buckets = range(1, self.config.n_buckets - 1)
        return min(singer_buckets, key=lambda b: (counts[b], b))

    def _leader(self, singer_id: str, what: str = "start or stop the song") -> Member:
        member = self.member(singer_id)
        if self.song.leader != singer_id:
            raise CommandError("not_leader", f"only the leader can {what}")
        return member

    def _halt(self, singer_id: str | None, now: int, reason: EndReason) -> None:
        leader = self.members.get(self.song.leader) if self.song.leader is not None else None
        delay = leader.delay if leader is not None else self.config.bucket_delay(0)
        self.song.end_pos = now - delay
        self.song.running = False
        self.song.stopped_by = singer_id
        self.song.ended = reason
        self._changed()

    def _drop_leader(self, now: int) -> None:
        # The song ends because its leader left: nobody stopped it.
        if self.song.running:
            self._halt(None, now, EndReason.LEADER_LEFT)
        self.song.leader = None

    def _remove(self, singer_id: str, now: int) -> None:
        if self.song.leader == singer_id:
            self._drop_leader(now)
        del self.members[singer_id]
