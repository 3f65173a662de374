"""The records kept in Redis, defined once (docs/redis.md).

Each record is a typed :mod:`msgspec` struct with one encoder and one
decoder; the owning mixer writes them, gateways and ``brigade inspect`` read
them, and nobody parses them by hand. Decoding validates every field and
raises :class:`common.errors.ValidationError` with the path of the bad field.

* :class:`Member` (``bb:{R}:members``, one msgpack value per singer) and
  :class:`Song` (``bb:{R}:song`` field ``state``): written by the mixer.
* :class:`Material` (``bb:{R}:song`` field ``material``): the room's
  tracks, lyrics, image and the current song's lyric cues, written by the
  mixer only when they change; the audio and image bytes themselves live in
  keys of their own (``bb:{R}:track:{id}``, ``bb:{R}:image:{id}``).
* :class:`RoomMeta` (``bb:{R}:meta``, a hash of strings): written once by the
  gateway that creates the room.
* :class:`Occupancy` (``bb:{R}:occ``) and :class:`MixerStatus` /
  :class:`GatewayStatus` (heartbeat keys): snapshots with a TTL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from common.constants import (
    DEFAULT_BUCKET_SPACING_S,
    DEFAULT_N_BUCKETS,
    SAMPLE_RATE,
)
from common.errors import ValidationError
from common.names import check_display_name, check_id

__all__ = [
    "MAX_CUES",
    "MAX_EARLIER_SONGS",
    "MAX_GAIN_DB",
    "MAX_LYRICS_CHARS",
    "MAX_ROOM_TRACKS",
    "MIN_GAIN_DB",
    "SILENCE_DB",
    "Checkpoint",
    "CheckpointPart",
    "Cue",
    "EndReason",
    "GatewayStatus",
    "Image",
    "Material",
    "Member",
    "Metronome",
    "Mix",
    "MixerStatus",
    "Occupancy",
    "RecordingOptions",
    "Role",
    "RoomMeta",
    "Rounds",
    "Song",
    "SongCues",
    "SongMaterial",
    "SongSpan",
    "Track",
    "decode",
    "decode_meta",
    "encode",
    "meta_fields",
]

SILENCE_DB: Final = -120.0
"""The level reported for silence (and the floor of every level)."""

MAX_GAIN_DB: Final = 12.0
"""Loudest mic gain the console allows."""

MIN_GAIN_DB: Final = -60.0
"""Quietest mic gain short of silenced (-inf, ``null`` on the wire); lower ones are refused."""

DEFAULT_LEADER_BOOST_DB: Final = 6.0
"""The leader's voice is this much louder in everyone's mix (the original used ~2x)."""

MAX_LEADER_BOOST_DB: Final = 12.0

Mix = Literal["full", "solo"]
"""Which mix of a room a tap carries: everyone, or only the soloed singers."""

NonNegative = Annotated[int, msgspec.Meta(ge=0)]

MAX_ROOM_TRACKS: Final = 3
"""Tracks a room keeps (uploaded or taken from the library); the oldest unused goes first."""

MAX_LYRICS_CHARS: Final = 10_000
MAX_CUES: Final = 1000
"""Lyric cues kept for one song (a line change every 2 s for half an hour)."""

MAX_EARLIER_SONGS: Final = 8
"""Ended songs a song record keeps besides the running (or last) one (``Song.earlier``)."""

MaterialId = Annotated[str, msgspec.Meta(pattern=r"^[a-z]-[0-9a-f]{12}$")]
"""A track's or an image's id: its kind's letter, ``-``, 12 hex digits."""


class Role(StrEnum):
    SINGER = "singer"
    SPECTATOR = "spectator"


class Member(msgspec.Struct, kw_only=True):
    """One member of a room: identity, place in the chain, console, live counters.

    ``joined`` is the clock of the first join; it orders members when delays
    are spread. ``gain_db`` is the conductor's fader (``-inf``: silenced);
    ``soloed`` puts the member in the room's solo mix; ``mix`` is what the
    member chose to hear. ``late``, ``chunks``, ``rejected`` and ``level_db``
    are maintained by the mixer per chunk.
    """

    singer_id: str
    name: str
    role: Role
    delay: NonNegative
    bucket: NonNegative | None
    joined: int
    muted: bool = False
    connected: bool = True
    disconnected_at: int | None = None
    late: NonNegative = 0
    chunks: NonNegative = 0
    rejected: NonNegative = 0
    level_db: float = SILENCE_DB
    gain_db: float = 0.0
    soloed: bool = False
    mix: Mix = "full"
    token_digest: str = ""
    """SHA-256 hex of the member's resume token (never shown in the public view)."""

    def __post_init__(self) -> None:
        check_id(self.singer_id, "member singer_id")
        self.name = check_display_name(self.name)
        if not math.isfinite(self.level_db):
            raise ValidationError(f"member level_db must be finite, got {self.level_db}")
        if self.gain_db < MIN_GAIN_DB:
            # Records written before the lower bound existed (-1000 was stored): silenced.
            self.gain_db = -math.inf
        check_gain_db(self.gain_db)


def join_order(member: Member) -> tuple[int, str]:
    """Sort key: members in the order they joined (ties by id), as every list shows them."""
    return member.joined, member.singer_id


def check_gain_db(gain_db: float) -> float:
    """A console gain: ``-inf`` (silenced) or :data:`MIN_GAIN_DB` .. :data:`MAX_GAIN_DB`.

    Raises ValidationError for anything else (NaN, +inf, below the range, above it).
    """
    if gain_db != -math.inf and not MIN_GAIN_DB <= gain_db <= MAX_GAIN_DB:
        raise ValidationError(
            f"gain_db must be {MIN_GAIN_DB:g} .. +{MAX_GAIN_DB:g} dB or silenced, got {gain_db}"
        )
    return float(gain_db)


class Rounds(msgspec.Struct, frozen=True, kw_only=True):
    """Round settings: every voice is heard again ``repeats`` times, one period apart.

    The period is ``beats * 60 / bpm`` seconds. ``repeats == 0`` is off.
    """

    bpm: Annotated[float, msgspec.Meta(ge=20, le=300)] = 120.0
    beats: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    repeats: Annotated[int, msgspec.Meta(ge=0, le=20)] = 0

    @property
    def period_samples(self) -> int:
        """One repeat's length in samples, ``beats * 60 / bpm`` seconds."""
        return round(self.beats * 60 * SAMPLE_RATE / self.bpm)

    @property
    def span_samples(self) -> int:
        """How far back the last repeat reaches: ``repeats`` periods."""
        return self.repeats * self.period_samples

    def offsets(self) -> tuple[int, ...]:
        """The ring offsets summed into a tap: 0 (the voice) and each repeat."""
        period = self.period_samples
        return tuple(k * period for k in range(self.repeats + 1))


class Metronome(msgspec.Struct, frozen=True, kw_only=True):
    """The leader's metronome for the songs to come: clicks made by each page.

    ``beats`` per bar, the first accented; ``count_in`` adds one bar of
    clicks before the music (common/tracks.py has the positions).
    """

    on: bool = False
    bpm: Annotated[float, msgspec.Meta(ge=20, le=300)] = 100.0
    beats: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    count_in: bool = False


class RecordingOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The leader's recording options for the songs to come (``brigade recorder``).

    ``stems``: each singer's own audio to its own file as well as the mix;
    ``metronome``: the metronome's clicks in the mix (the pages make them,
    so a recording has none unless asked).
    """

    stems: bool = False
    metronome: bool = False


class Track(msgspec.Struct, frozen=True, kw_only=True):
    """A backing track of the room: 48 kHz mono, ``samples`` long, in ``bb:{R}:track:{id}``."""

    id: MaterialId
    name: Annotated[str, msgspec.Meta(max_length=200)]
    samples: Annotated[int, msgspec.Meta(gt=0)]
    size_bytes: NonNegative = 0
    source: Literal["upload", "library"] = "upload"


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """The room's image, in ``bb:{R}:image:{id}``, served with its ``content_type``."""

    id: MaterialId
    content_type: Literal["image/png", "image/jpeg", "image/webp"]
    size_bytes: NonNegative = 0


class Cue(msgspec.Struct, frozen=True, array_like=True):
    """A lyric line change: from song position ``pos`` on, line ``line`` is current."""

    pos: int
    line: NonNegative


class SongCues(msgspec.Struct, frozen=True, kw_only=True):
    """The lyric cues of the song that started at ``start_pos``."""

    start_pos: int
    cues: Annotated[list[Cue], msgspec.Meta(max_length=MAX_CUES)] = msgspec.field(
        default_factory=list
    )


class Material(msgspec.Struct, kw_only=True):
    """The room's song material besides the song record: tracks, lyrics, image, cues.

    ``cues`` belong to the current (or last) song and are in increasing
    position order; when the next song starts they move to ``previous_cues``
    (a later bucket still sees the last song's lines change while the leader
    sings the next one), and those to ``older_cues`` (newest first), kept
    while their songs are in ``Song.earlier`` (beyond the one before).
    """

    tracks: list[Track] = msgspec.field(default_factory=list)
    lyrics: Annotated[str, msgspec.Meta(max_length=MAX_LYRICS_CHARS)] = ""
    image: Image | None = None
    cues: Annotated[list[Cue], msgspec.Meta(max_length=MAX_CUES)] = msgspec.field(
        default_factory=list
    )
    previous_cues: Annotated[list[Cue], msgspec.Meta(max_length=MAX_CUES)] = msgspec.field(
        default_factory=list
    )
    older_cues: Annotated[list[SongCues], msgspec.Meta(max_length=MAX_EARLIER_SONGS)] = (
        msgspec.field(default_factory=list)
    )

    def __post_init__(self) -> None:
        if len(self.tracks) > MAX_ROOM_TRACKS:
            raise ValidationError(f"material: {len(self.tracks)} tracks, at most {MAX_ROOM_TRACKS}")

    def find(self, track_id: str) -> Track | None:
        return next((t for t in self.tracks if t.id == track_id), None)

    def blob_ids(self) -> tuple[list[str], list[str]]:
        """The ids whose bytes live in keys of their own: (tracks, images)."""
        return [t.id for t in self.tracks], [self.image.id] if self.image else []


class SongMaterial(msgspec.Struct, frozen=True, kw_only=True):
    """What a song plays at its positions, fixed when it starts (DESIGN.md, *Material
    belongs to its song*): its backing track and its metronome (count-in included).

    What the leader chooses afterwards (``Song.track``, ``Song.metronome``) is for
    the next song; pages keep playing this until their playback passes the song's end.
    """

    track: Track | None = None
    metronome: Metronome = msgspec.field(default_factory=Metronome)
    rounds: Rounds | None = None
    """Its rounds (None in records from before songs kept theirs: the room's)."""


class EndReason(StrEnum):
    """Why a song ended (``Song.ended``)."""

    TRACK = "track"
    """It reached the end of its backing track."""
    STOPPED = "stopped"
    """The leader pressed Stop song (``stop``)."""
    HALTED = "halted"
    """The leader sent ``halt`` (stop at once)."""
    LEADER_LEFT = "leader_left"
    """Its leader left the room, or became a listener."""


class SongSpan(msgspec.Struct, frozen=True, kw_only=True):
    """The positions ``[start_pos, end_pos)`` of song ``number``, once it has ended,
    with the material it played and why it ended (None in records from before)."""

    number: NonNegative
    start_pos: int
    end_pos: int
    started_with: SongMaterial | None = None
    ended: EndReason | None = None

    def __post_init__(self) -> None:
        if self.end_pos < self.start_pos:
            raise ValidationError("song span: end_pos before start_pos")


class Song(msgspec.Struct, kw_only=True):
    """The song state: input is mixed only inside ``[start_pos, end_pos)``.

    Both positions are in the leader's frame: the ring position the leader
    was playing when they pressed start (or stop). ``end_pos`` is None while
    the song runs; after a stop the window stays, so chunks still in flight
    for the song's last seconds are mixed. ``stopped_by`` is the member who
    stopped or halted the last song (None while one runs, and when it ended
    because its leader left); ``ended`` says why the last song ended (None
    while one runs, and before the first). ``rounds`` and ``leader_boost_db``
    are the leader's settings for the songs to come; so are ``track`` and
    ``metronome``, while ``started_with`` is what the running (or last) song
    plays.
    """

    running: bool = False
    leader: str | None = None
    start_pos: int | None = None
    end_pos: int | None = None
    number: NonNegative = 0
    stopped_by: str | None = None
    rounds: Rounds = msgspec.field(default_factory=Rounds)
    leader_boost_db: Annotated[float, msgspec.Meta(ge=0, le=MAX_LEADER_BOOST_DB)] = (
        DEFAULT_LEADER_BOOST_DB
    )
    earlier: Annotated[list[SongSpan], msgspec.Meta(max_length=MAX_EARLIER_SONGS)] = msgspec.field(
        default_factory=list
    )
    """The songs before this one that are still audible, newest first: later buckets
    still sing their last seconds after the leader starts the next (a 5 s song and
    the next one can both be ahead of the last bucket). Each span's window stays open
    for their chunks, pages play each one's own material, and the recorder reads each
    one's end here. The mixer drops a span once its end has left the ring, and keeps
    at most :data:`MAX_EARLIER_SONGS`."""
    track: Track | None = None
    """The backing track chosen for the songs to come (and the running one)."""
    metronome: Metronome = msgspec.field(default_factory=Metronome)
    recording: RecordingOptions = msgspec.field(default_factory=RecordingOptions)
    started_with: SongMaterial | None = None
    """The material the running (or last) song started with; None before the first."""
    ended: EndReason | None = None

    @property
    def previous(self) -> SongSpan | None:
        """The song just before this one, if it is still audible (``earlier[0]``)."""
        return self.earlier[0] if self.earlier else None

    def spans(self) -> list[SongSpan]:
        """Every song still audible with an end, newest first: this one (once it has
        ended) and :attr:`earlier`."""
        own = self.span()
        return self.earlier if own is None else [own, *self.earlier]

    def find(self, number: int, start_pos: int) -> SongSpan | None:
        """Song ``number`` that started at ``start_pos``, once it has ended, if still kept."""
        return next(
            (s for s in self.spans() if (s.number, s.start_pos) == (number, start_pos)), None
        )

    def played(self) -> SongMaterial:
        """What the running (or last) song plays: ``started_with``, or for a record
        written before songs kept their material, the leader's current choice."""
        if self.started_with is not None:
            return self.started_with
        return SongMaterial(track=self.track, metronome=self.metronome)

    def rounds_from(self, lo: int, hi: int) -> list[tuple[int, Rounds]]:
        """The rounds each part of positions ``[lo, hi)`` is emitted with, as
        ``(from, rounds)`` in position order, the first ``from`` being ``lo``.

        A position has the rounds of the newest song started at or before it
        (its repeats ring on after its end, until the next song starts): a
        change between songs never reaches the tail of the song before, which
        later buckets may still be hearing. Before the oldest kept song, and in
        records from before songs kept theirs, the room's (``rounds``).
        """
        starts: list[tuple[int, Rounds]] = []
        if self.start_pos is not None:
            starts.append((self.start_pos, self.played().rounds or self.rounds))
        for span in self.earlier:
            own = span.started_with.rounds if span.started_with is not None else None
            starts.append((span.start_pos, own or self.rounds))
        parts: list[tuple[int, Rounds]] = []
        edge = hi
        for start, rounds in starts:  # newest first
            if start < edge:
                parts.append((max(lo, start), rounds))
                edge = start
            if edge <= lo:
                break
        if edge > lo:
            parts.append((lo, self.rounds))
        parts.reverse()
        return parts

    def longest_repeats(self) -> int:
        """How far back the repeats of any kept song (or the next one) reach, in samples."""
        own = [
            self.played().rounds,
            *(s.started_with.rounds for s in self.earlier if s.started_with),
        ]
        return max([self.rounds.span_samples, *(r.span_samples for r in own if r is not None)])

    def span(self) -> SongSpan | None:
        """This song as one of the next one's :attr:`earlier` (None unless it has ended)."""
        if self.start_pos is None or self.end_pos is None:
            return None
        return SongSpan(
            number=self.number,
            start_pos=self.start_pos,
            end_pos=self.end_pos,
            started_with=self.started_with,
            ended=self.ended,
        )

    def __post_init__(self) -> None:
        if self.leader is not None:
            check_id(self.leader, "song leader")
        if self.stopped_by is not None:
            check_id(self.stopped_by, "song stopped_by")
        if self.running and (self.start_pos is None or self.end_pos is not None):
            raise ValidationError("song: a running song needs start_pos and no end_pos")
        if self.end_pos is not None and self.start_pos is None:
            raise ValidationError("song: end_pos without start_pos")

    def window(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The part of positions ``[lo, hi)`` that is mixed: inside this song's window
        or an earlier song's; None when none holds any of it.

        A chunk across two songs that touch (the next one started where the last one
        was cut) is mixed whole; across a gap, the newer song's part.
        """
        if not self.earlier:  # one song (every chunk of a first song): no parts to join
            if self.start_pos is None:
                return None
            a, b = max(lo, self.start_pos), hi if self.end_pos is None else min(hi, self.end_pos)
            return (a, b) if a < b else None
        parts: list[tuple[int, int]] = []
        if self.start_pos is not None:
            a, b = max(lo, self.start_pos), hi if self.end_pos is None else min(hi, self.end_pos)
            if a < b:
                parts.append((a, b))
        for span in self.earlier:
            a, b = max(lo, span.start_pos), min(hi, span.end_pos)
            if a < b:
                parts.append((a, b))
        if not parts:
            return None
        a, b = parts[0]
        for c, d in parts[1:]:  # older ones lie before: extend down while they touch
            if d < a:
                break
            a, b = min(a, c), max(b, d)
        return a, b


class RoomMeta(msgspec.Struct, frozen=True, kw_only=True):
    """``bb:{R}:meta``: the settings fixed when the room was created (a hash of strings)."""

    capacity: Annotated[int, msgspec.Meta(ge=1)] = 100
    listeners: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    """Most listeners (gateway/audience.py) at once; they are not members (``capacity``)."""
    password_hash: str = ""
    n_buckets: Annotated[int, msgspec.Meta(ge=3, le=64)] = DEFAULT_N_BUCKETS
    bucket_spacing_s: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_BUCKET_SPACING_S
    created_at: float = 0.0

    @property
    def has_password(self) -> bool:
        return bool(self.password_hash)


class LiveCounters(msgspec.Struct, frozen=True, kw_only=True):
    """``members`` field of ``bb:{R}:stats``: each member's counters as the mixer keeps them
    per chunk, written with the room's stats (every publish period while audio arrives).

    They are diagnostics, not state: the ``Member`` records in ``bb:{R}:members`` carry
    them only as of the room's last change, so a room that sings without changing is not
    rewritten (nor copied by the keeper) several times a second for its counters.
    """

    members: dict[str, tuple[int, int, int, float]]
    """Singer id -> (late, chunks, rejected, level_db)."""

    @classmethod
    def of(cls, members: Iterable[Member]) -> LiveCounters:
        return cls(
            members={m.singer_id: (m.late, m.chunks, m.rejected, m.level_db) for m in members}
        )

    def apply(self, member: Member) -> Member:
        """``member`` with these counters (itself when they do not name it)."""
        live = self.members.get(member.singer_id)
        if live is None:
            return member
        late, chunks, rejected, level_db = live
        return msgspec.structs.replace(
            member, late=late, chunks=chunks, rejected=rejected, level_db=level_db
        )


class Occupancy(msgspec.Struct, frozen=True, kw_only=True):
    """``bb:{R}:occ``: which 128-sample frames of the ring hold audio, at ``clock``."""

    clock: int
    ring_samples: int
    frame_samples: int
    occupied: int
    bitmap: bytes
    mixer: str = ""


class CheckpointPart(msgspec.Struct, frozen=True, array_like=True):
    """One span of a room's ring in a checkpoint: positions ``[start, start + n)`` as
    little-endian int16 audio (``n`` samples, times ``scale``: the span's peak over
    32767) and the voice counts as runs: ``runs`` the offsets (little-endian uint32)
    where each run after the first starts, ``counts`` each run's count (little-endian
    uint16, one more than ``runs`` holds offsets). ``scale`` 0 (entries written before
    it existed): the audio is little-endian float16."""

    start: int
    audio: bytes
    runs: bytes
    counts: bytes
    scale: float = 0.0


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """An entry of ``bb:{R}:ckpt``: what a new owner needs to carry on a room's audio
    after a failover.

    The key is a list: a **full** entry holds the ring's positions ``[start,
    clock)`` (what some tap has still to emit, repeats included); each later
    entry only the spans mixed since the entry before (``parts``). Applied in
    order, each span overwriting what an older entry said of the same
    positions, they give the ring as it was at the last entry's ``clock``.
    Each entry also carries each tap's next position (``delay``, ``mix``,
    ``position``), each singer's end of the last applied write, and the id of
    the last ``bb:{R}:in`` entry whose chunk is in it, so the new owner
    replays exactly the chunks that came after: the last entry's are the ones
    that count.
    """

    clock: int
    start: int
    parts: list[CheckpointPart]
    taps: list[tuple[int, Mix, int]]
    written: dict[str, int]
    full: bool = True
    """The entry holds every position from ``start`` on (the first of an owner or a song)."""
    in_cursor: str = "0-0"


class MixerStatus(msgspec.Struct, kw_only=True):
    """``bb:mixer:{id}``: a live mixer's heartbeat."""

    id: str
    nonce: str
    pid: int
    started: float
    rooms: list[str]
    counters: dict[str, int]
    max_rooms: int = 0
    """Most rooms it will own (``BB_MAX_ROOMS``); 0 from a mixer that does not say,
    which the others never hand a room to (mixer/planner.py)."""


class GatewayStatus(msgspec.Struct, kw_only=True):
    """``bb:gateway:{id}``: a live gateway's heartbeat."""

    id: str
    url: str
    connections: int
    counters: dict[str, int]


class RecorderStatus(msgspec.Struct, kw_only=True):
    """``bb:recorder:{id}``: a live recorder's heartbeat."""

    id: str
    pid: int
    started: float
    rooms: list[str]
    counters: dict[str, int]


class KeeperStatus(msgspec.Struct, kw_only=True):
    """``bb:keeper:{id}``: a live keeper's heartbeat."""

    id: str
    pid: int
    started: float
    servers: int
    """Audio Redis servers followed (a cluster's masters; 1 otherwise; 0 before the first)."""
    dirty: int
    """Changed keys waiting to be copied."""
    last_copy: float | None
    """Unix time a key was last written to (or deleted from) the state Redis; None: not yet."""
    last_restore: float | None
    """Unix time of the last restore into an emptied Redis; None: none since it started."""
    counters: dict[str, int]
    """``cycles``, ``restores``, ``keys_restored``, ``keys_copied``, ``keys_deleted``,
    ``bytes_copied``, ``redis_errors`` (keeper/service.py)."""


_ENCODER: Final = msgspec.msgpack.Encoder()
_T = TypeVar("_T")


def encode(record: msgspec.Struct) -> bytes:
    """A record as msgpack (the form stored in Redis)."""
    return _ENCODER.encode(record)


def decode(data: object, kind: type[_T]) -> _T:
    """Parse a msgpack record of type ``kind``; raises ValidationError naming the field."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(f"{kind.__name__} record must be bytes, got {type(data).__name__}")
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise ValidationError(f"{kind.__name__} record: {exc}") from None


def decode_meta(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> RoomMeta:
    """``bb:{R}:meta`` as read by HGETALL; unknown fields are ignored; raises ValidationError."""
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if name in RoomMeta.__struct_fields__ and text != "":
            fields[name] = text
    try:
        return msgspec.convert(fields, RoomMeta, strict=False)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise ValidationError(f"room meta is malformed: {exc}") from None


def meta_fields(meta: RoomMeta) -> dict[str, str]:
    """``meta`` as the strings of its Redis hash."""
    return {name: str(getattr(meta, name)) for name in meta.__struct_fields__}
