"""A room's members and their places: who is in, their bucket and delay, who may lead.

Pure: no I/O and no clock; ``now`` is an argument. Mutators return whether anything a
client sees changed; the composing :class:`mixer.roomstate.RoomState` counts versions.
"""

from __future__ import annotations

from common.constants import SAMPLE_RATE
from common.errors import ValidationError
from common.names import check_display_name, check_id
from common.records import Member, Role, Rounds, join_order
from mixer.roomconfig import CommandError, RoomConfig

__all__ = ["Members"]


class Members:
    """The members of one room, by id, and the rules that place them in buckets."""

    def __init__(self, config: RoomConfig, members: dict[str, Member]) -> None:
        self.config = config
        self.by_id = members
        for key, member in members.items():
            if key != member.singer_id:
                raise ValidationError(
                    f"member stored under {key!r:.80} has id {member.singer_id!r}"
                )
            # Records may come from Redis written under another config (fewer
            # buckets, a shorter ring): pull every delay back inside this one so
            # that taps always read inside the ring.
            if member.bucket is not None:
                member.bucket = min(member.bucket, config.spectator_bucket)
                member.delay = config.bucket_delay(member.bucket)
            else:
                member.delay = min(max(member.delay, config.min_delay), config.max_delay)

    # --- queries ----------------------------------------------------------------------------

    def member(self, singer_id: str) -> Member:
        """The member ``singer_id``; CommandError ``unknown_singer`` if absent."""
        member = self.by_id.get(singer_id)
        if member is None:
            raise CommandError("unknown_singer", f"{singer_id!r:.80} is not in this room")
        return member

    def leader(self, singer_id: str, leader: str | None, what: str) -> Member:
        """The member ``singer_id`` if they are ``leader``; CommandError ``not_leader`` if not."""
        member = self.member(singer_id)
        if leader != singer_id:
            raise CommandError("not_leader", f"only the leader can {what}")
        return member

    def delay_of(self, singer_id: str | None) -> int:
        """The delay of ``singer_id`` (the leader's, usually), or bucket 0's without them."""
        member = self.by_id.get(singer_id) if singer_id is not None else None
        return member.delay if member is not None else self.config.bucket_delay(0)

    def buckets(self) -> list[list[str]]:
        """Connected member ids per bucket, in join order (members on custom delays omitted)."""
        result: list[list[str]] = [[] for _ in range(self.config.n_buckets)]
        for m in sorted(self.by_id.values(), key=join_order):
            if m.connected and m.bucket is not None:
                result[m.bucket].append(m.singer_id)
        return result

    def largest_delay(self) -> int:
        """The last bucket's delay, or a larger one a member has."""
        delays = [m.delay for m in self.by_id.values()]
        return max([self.config.bucket_delay(self.config.spectator_bucket), *delays])

    def check_delay(self, delay: int, rounds: Rounds) -> None:
        """CommandError ``bad_delay`` unless a tap at ``delay`` fits the ring and ``rounds``."""
        low, high = self.config.min_delay, self.config.max_delay
        if isinstance(delay, bool) or not isinstance(delay, int) or not low <= delay <= high:
            raise CommandError(
                "bad_delay", f"delay must be {low} .. {high} samples, got {delay!r:.40}"
            )
        if not self.config.rounds_fit(rounds, delay):
            raise CommandError(
                "bad_delay",
                f"a delay of {delay / SAMPLE_RATE:g} s leaves no room in the ring for the "
                "rounds; turn repeats down first",
            )

    # --- membership -------------------------------------------------------------------------

    def join(
        self, singer_id: str, name: str, role: Role, now: int, token_digest: str
    ) -> tuple[Member, bool]:
        """Add a member, or reconnect one already present; returns it and whether its role changed.

        A new member is placed (:meth:`place_new`); one whose role changed is
        not yet: the caller settles the lead first, then places it.
        """
        check_id(singer_id, "singer_id")
        name = check_display_name(name)
        if role not in (Role.SINGER, Role.SPECTATOR):
            raise ValidationError(f"role must be 'singer' or 'spectator', got {role!r:.40}")
        role = Role(role)
        member = self.by_id.get(singer_id)
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
            self.place_new(member)
            self.by_id[singer_id] = member
            return member, False
        member.name = name
        member.connected = True
        member.token_digest = token_digest or member.token_digest
        member.disconnected_at = None
        moved = member.role is not role
        member.role = role
        return member, moved

    def place_new(self, member: Member) -> None:
        """Place ``member`` as a new member of its role: spectators last, singers spread.

        New singers go to the least populated of buckets ``1 .. n - 2`` (lowest on ties).
        """
        if member.role is Role.SPECTATOR:
            self._place(member, self.config.spectator_bucket)
            return
        counts = [0] * self.config.n_buckets
        for m in self.by_id.values():
            if m is not member and m.connected and m.role is Role.SINGER and m.bucket is not None:
                counts[m.bucket] += 1
        singer_buckets = range(1, self.config.n_buckets - 1)
        self._place(member, min(singer_buckets, key=lambda b: (counts[b], b)))

    def disconnect(self, singer_id: str, now: int) -> bool:
        """Mark a member disconnected; they keep their place until they expire."""
        member = self.member(singer_id)
        if not member.connected:
            return False
        member.connected = False
        member.disconnected_at = now
        return True

    def expired(self, now: int, grace_samples: int) -> list[str]:
        """Members disconnected for longer than ``grace_samples``."""
        return [
            m.singer_id
            for m in self.by_id.values()
            if not m.connected
            and m.disconnected_at is not None
            and now - m.disconnected_at > grace_samples
        ]

    def remove(self, singer_id: str) -> None:
        del self.by_id[singer_id]

    def deal(self, leader: Member) -> None:
        """Put ``leader`` in bucket 0 and deal everyone else out again.

        The other singers go round robin over buckets ``1 .. n - 2`` in join
        order, spectators to the last bucket; custom delays are reset.
        """
        self._place(leader, 0)
        singer_buckets = self.config.n_buckets - 2
        dealt = 0
        for m in sorted(self.by_id.values(), key=join_order):
            if m is leader:
                continue
            if m.role is Role.SPECTATOR:
                self._place(m, self.config.spectator_bucket)
            else:
                self._place(m, 1 + dealt % singer_buckets)
                dealt += 1

    # --- places -----------------------------------------------------------------------------

    def join_bucket(self, singer_id: str, bucket: int) -> bool:
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
        if member.bucket == bucket:
            return False
        self._place(member, bucket)
        return True

    def set_delay(self, singer_id: str, delay_samples: int, rounds: Rounds) -> bool:
        """Give a member a custom delay in ``[min_delay, max_delay]`` samples (no bucket)."""
        member = self.member(singer_id)
        self.check_delay(delay_samples, rounds)
        if member.delay == delay_samples and member.bucket is None:
            return False
        member.delay = delay_samples
        member.bucket = None
        return True

    def set_muted(self, singer_id: str, muted: bool) -> bool:
        """Server-side mute: a muted member's audio is not mixed."""
        member = self.member(singer_id)
        if member.muted == bool(muted):
            return False
        member.muted = bool(muted)
        return True

    def _connected(self) -> int:
        return sum(1 for m in self.by_id.values() if m.connected)

    def _place(self, member: Member, bucket: int) -> None:
        member.bucket = bucket
        member.delay = self.config.bucket_delay(bucket)
