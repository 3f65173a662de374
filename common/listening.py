"""What a member hears: at which delay, and which mix. Each rule is written here once.

Pure. The mixer (taps to write), the room view (``hears``), and ``brigade inspect`` (taps
expected, who hears each) all ask these functions, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from common.commands import MAX_DELAY_S
from common.constants import SAMPLE_RATE
from common.records import Member, Mix, Role

__all__ = ["anyone_soloed", "bucket_delay", "heard", "hears", "last_voice_tap", "listeners"]

_MAX_DELAY: Final = round(MAX_DELAY_S * SAMPLE_RATE)


def bucket_delay(bucket: int, spacing: int) -> int:
    """The delay of bucket ``bucket`` (0-based): ``(bucket + 1) * spacing`` samples."""
    return (bucket + 1) * spacing


def last_voice_tap(spacing: int, n_buckets: int, members: Iterable[tuple[Role, int]]) -> int:
    """The tap that hears every voice as the last occupied bucket hears it (what the
    recorder records and a concert's listeners hear), from the members' ``(role, delay)``.

    A spectator hears every singer ahead of it: its own delay will do. A singer's
    voice reaches the mix only after its bucket has played the position, so a tap
    hears it one bucket spacing later. The latest of those over the members (the
    last bucket when there are none), never beyond the largest delay the mixer
    accepts.
    """
    heard = [delay if role is Role.SPECTATOR else delay + spacing for role, delay in members]
    return min(max(heard, default=n_buckets * spacing), _MAX_DELAY)


def anyone_soloed(members: Iterable[Member]) -> bool:
    """Whether anyone is in the solo mix (else the solo mix does not exist)."""
    return any(m.soloed for m in members)


def hears(mix: Mix, soloing: bool) -> Mix:
    """The mix a member who chose ``mix`` hears: ``solo`` only while someone solos."""
    return "solo" if soloing and mix == "solo" else "full"


def heard(member: Member, soloing: bool) -> tuple[int, Mix]:
    """The tap ``(delay, mix)`` ``member`` hears."""
    return member.delay, hears(member.mix, soloing)


def listeners(members: Iterable[Member]) -> dict[tuple[int, Mix], list[str]]:
    """Connected members by the tap ``(delay, mix)`` they hear, ids in the order given."""
    members = list(members)
    soloing = anyone_soloed(members)
    by_tap: dict[tuple[int, Mix], list[str]] = {}
    for m in members:
        if m.connected:
            by_tap.setdefault(heard(m, soloing), []).append(m.singer_id)
    return by_tap
