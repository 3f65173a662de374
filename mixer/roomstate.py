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
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

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

__all__ = ["CommandError", "Member", "Role", "RoomConfig", "RoomState", "Song"]

_MIN_DELAY_MARGIN: Final = seconds_to_samples(0.25)
"""A delay must exceed the downlink lead by this much, or frames would be read before written."""

_MAX_DELAY_MARGIN: Final = seconds_to_samples(5.0)
"""A delay must stay this far inside the ring, so late writes and reads still fit in it."""

SILENCE_DB: Final = -120.0
"""The level reported for silence (and the floor of every level)."""


class Role(StrEnum):
    SINGER = "singer"
    SPECTATOR = "spectator"


class CommandError(BrigadeError):
    """A command the room refused; ``code`` is for machines, ``message`` for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- validation of msgpack records -------------------------------------------------------


def _mapping(data: object, what: str) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise ValidationError(f"{what} must be a map, got {type(data).__name__}")
    return data


def _required(d: Mapping[str, object], key: str, what: str) -> object:
    if key not in d:
        raise ValidationError(f"{what}: missing field {key!r}")
    return d[key]


def _int(value: object, key: str, what: str, *, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what}: {key!r} must be an integer, got {type(value).__name__}")
    if low is not None and value < low:
        raise ValidationError(f"{what}: {key!r} = {value} is below {low}")
    return value


def _opt_int(value: object, key: str, what: str, *, low: int | None = None) -> int | None:
    return None if value is None else _int(value, key, what, low=low)


def _bool(value: object, key: str, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{what}: {key!r} must be a boolean, got {type(value).__name__}")
    return value


def _float(value: object, key: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{what}: {key!r} must be a finite number, got {value!r:.40}")
    return float(value)


# --- records --------------------------------------------------------------------------------


@dataclass
class Member:
    """One member of a room: identity, place in the chain, live counters.

    ``joined`` is the clock of the first join; it orders members when
    delays are spread. ``late``, ``chunks``, ``rejected`` and ``level_db``
    are maintained by the mixer per chunk.
    """

    singer_id: str
    name: str
    role: Role
    delay: int
    bucket: int | None
    joined: int
    muted: bool = False
    connected: bool = True
    disconnected_at: int | None = None
    late: int = 0
    chunks: int = 0
    rejected: int = 0
    level_db: float = SILENCE_DB

    def to_dict(self) -> dict[str, object]:
        """The member as a msgpack-friendly map (str/int/float/bool/None values)."""
        return {
            "singer_id": self.singer_id,
            "name": self.name,
            "role": self.role.value,
            "delay": self.delay,
            "bucket": self.bucket,
            "joined": self.joined,
            "muted": self.muted,
            "connected": self.connected,
            "disconnected_at": self.disconnected_at,
            "late": self.late,
            "chunks": self.chunks,
            "rejected": self.rejected,
            "level_db": self.level_db,
        }

    @classmethod
    def from_dict(cls, data: object) -> Member:
        """Parse a map made by :meth:`to_dict`; raises ValidationError.

        Identity and place are required; flags and counters default when absent.
        """
        what = "member"
        d = _mapping(data, what)
        role = _required(d, "role", what)
        if role not in ("singer", "spectator"):
            raise ValidationError(
                f"{what}: 'role' must be 'singer' or 'spectator', got {role!r:.40}"
            )
        try:
            singer_id = check_id(_required(d, "singer_id", what), "singer_id")
            name = check_display_name(_required(d, "name", what))
        except ValidationError as exc:
            raise ValidationError(f"{what}: {exc}") from None
        return cls(
            singer_id=singer_id,
            name=name,
            role=Role(role),
            delay=_int(_required(d, "delay", what), "delay", what, low=0),
            bucket=_opt_int(_required(d, "bucket", what), "bucket", what, low=0),
            joined=_int(_required(d, "joined", what), "joined", what),
            muted=_bool(d.get("muted", False), "muted", what),
            connected=_bool(d.get("connected", True), "connected", what),
            disconnected_at=_opt_int(d.get("disconnected_at"), "disconnected_at", what),
            late=_int(d.get("late", 0), "late", what, low=0),
            chunks=_int(d.get("chunks", 0), "chunks", what, low=0),
            rejected=_int(d.get("rejected", 0), "rejected", what, low=0),
            level_db=_float(d.get("level_db", SILENCE_DB), "level_db", what),
        )


@dataclass
class Song:
    """The song state: input is mixed only inside ``[start_pos, end_pos)``.

    Both positions are in the leader's frame: the ring position the leader
    was playing when they pressed start (or stop). ``end_pos`` is None while
    the song runs; after a stop the window stays, so chunks still in flight
    for the song's last seconds are mixed. ``stopped_by`` is the member who
    stopped or halted the last song (None while one runs, and when it ended
    because its leader left), so every page can say who ended it.
    """

    running: bool = False
    leader: str | None = None
    start_pos: int | None = None
    end_pos: int | None = None
    number: int = 0
    stopped_by: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The song as a msgpack-friendly map."""
        return {
            "running": self.running,
            "leader": self.leader,
            "start_pos": self.start_pos,
            "end_pos": self.end_pos,
            "number": self.number,
            "stopped_by": self.stopped_by,
        }

    @classmethod
    def from_dict(cls, data: object) -> Song:
        """Parse a map made by :meth:`to_dict`; raises ValidationError."""
        what = "song"
        d = _mapping(data, what)
        leader = d.get("leader")
        if leader is not None:
            leader = check_id(leader, "song leader")
        stopped_by = d.get("stopped_by")
        if stopped_by is not None:
            stopped_by = check_id(stopped_by, "song stopped_by")
        song = cls(
            running=_bool(d.get("running", False), "running", what),
            leader=leader,
            start_pos=_opt_int(d.get("start_pos"), "start_pos", what),
            end_pos=_opt_int(d.get("end_pos"), "end_pos", what),
            number=_int(d.get("number", 0), "number", what, low=0),
            stopped_by=stopped_by,
        )
        if song.running and (song.start_pos is None or song.end_pos is not None):
            raise ValidationError("song: a running song needs start_pos and no end_pos")
        if song.end_pos is not None and song.start_pos is None:
            raise ValidationError("song: end_pos without start_pos")
        return song


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


@dataclass
class _TapsCache:
    version: int = -1
    taps: list[int] = field(default_factory=list)


class RoomState:
    """Members and song of one room, changed only through its commands.

    ``version`` increases with every change a client should see (members,
    roles, delays, mutes, connection, song). The mixer's per-chunk counters
    on members (``late``, ``chunks``, ``rejected``, ``level_db``) do not
    bump it: they are published with the stats, not as state changes.
    """

    def __init__(
        self,
        config: RoomConfig,
        members: dict[str, Member] | None = None,
        song: Song | None = None,
    ) -> None:
        self.config = config
        self.members: dict[str, Member] = dict(members or {})
        self.song = song if song is not None else Song()
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

    # --- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        """Members, song and version as a msgpack-friendly map."""
        return {
            "version": self.version,
            "members": {sid: m.to_dict() for sid, m in self.members.items()},
            "song": self.song.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: object, config: RoomConfig | None = None) -> RoomState:
        """Parse a map made by :meth:`to_dict`; raises ValidationError.

        ``config`` is not part of the record (it comes from the room's
        settings); the default config is used when it is None.
        """
        d = _mapping(data, "room state")
        raw_members = _mapping(d.get("members", {}), "room members")
        members: dict[str, Member] = {}
        for key, raw in raw_members.items():
            members[key] = Member.from_dict(raw)
        song = Song.from_dict(d.get("song", {}))
        state = cls(config if config is not None else RoomConfig(), members, song)
        state.version = _int(d.get("version", 0), "version", "room state", low=0)
        return state

    # --- queries ----------------------------------------------------------------------------

    def member(self, singer_id: str) -> Member:
        """The member ``singer_id``; CommandError ``unknown_singer`` if absent."""
        member = self.members.get(singer_id)
        if member is None:
            raise CommandError("unknown_singer", f"{singer_id!r:.80} is not in this room")
        return member

    def taps(self) -> list[int]:
        """Sorted distinct delays of the connected members (cached per version)."""
        cache = self._taps
        if cache.version != self.version:
            cache.taps = sorted({m.delay for m in self.members.values() if m.connected})
            cache.version = self.version
        return list(cache.taps)

    def buckets(self) -> list[list[str]]:
        """Connected member ids per bucket, in join order (members on custom delays omitted)."""
        result: list[list[str]] = [[] for _ in range(self.config.n_buckets)]
        for m in sorted(self.members.values(), key=_join_order):
            if m.connected and m.bucket is not None:
                result[m.bucket].append(m.singer_id)
        return result

    # --- membership -------------------------------------------------------------------------

    def join(self, singer_id: str, name: str, role: Role, now: int) -> Member:
        """Add a member, or reconnect one already present (keeping their place).

        New spectators go to the last bucket, new singers to the least
        populated of buckets ``1 .. n - 2`` (lowest on ties). A reconnect
        keeps delay and bucket; if the role changed, the member is placed as
        a new member of that role would be (a leader turning spectator gives
        up the lead, halting a running song). Capacity counts connected
        members: CommandError ``room_full``. Invalid ids or names raise
        ValidationError.
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
            member = Member(singer_id, name, role, delay=0, bucket=None, joined=now)
            self._place(member, self._bucket_for_new(role))
            self.members[singer_id] = member
        else:
            member.name = name
            member.connected = True
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
        if gone:
            self._changed()
        return gone

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
        self.song.running = True
        self.song.start_pos = now - leader.delay
        self.song.end_pos = None
        self.song.number += 1
        self.song.stopped_by = None
        self._changed()

    def stop_song(self, singer_id: str, now: int) -> None:
        """Leader only: end the running song at the leader's current ring position."""
        self._leader(singer_id)
        if not self.song.running:
            raise CommandError("no_song", "no song is running")
        self._halt(now, singer_id)

    def halt(self, singer_id: str, now: int) -> None:
        """Leader only: stop the running song now; a no-op without one.

        Ending the song for everyone is the leader's decision: anyone else
        gets ``not_leader`` (they can ask the leader, or leave).
        """
        self._leader(singer_id)
        if self.song.running:
            self._halt(now, singer_id)

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
        low, high = self.config.min_delay, self.config.max_delay
        if (
            isinstance(delay_samples, bool)
            or not isinstance(delay_samples, int)
            or not low <= delay_samples <= high
        ):
            raise CommandError(
                "bad_delay", f"delay must be {low} .. {high} samples, got {delay_samples!r:.40}"
            )
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

    def _leader(self, singer_id: str) -> Member:
        member = self.member(singer_id)
        if self.song.leader != singer_id:
            raise CommandError("not_leader", "only the leader can start or stop the song")
        return member

    def _halt(self, now: int, stopped_by: str | None) -> None:
        leader = self.members.get(self.song.leader) if self.song.leader is not None else None
        delay = leader.delay if leader is not None else self.config.bucket_delay(0)
        self.song.end_pos = now - delay
        self.song.running = False
        self.song.stopped_by = stopped_by
        self._changed()

    def _drop_leader(self, now: int) -> None:
        if self.song.running:
            self._halt(now, None)
        self.song.leader = None

    def _remove(self, singer_id: str, now: int) -> None:
        if self.song.leader == singer_id:
            self._drop_leader(now)
        del self.members[singer_id]
