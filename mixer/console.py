"""A room's console: mic gains, solo, each member's mix choice, the leader's boost.

Pure. Mutators return whether anything a client sees changed;
:class:`mixer.roomstate.RoomState` counts versions.
"""

from __future__ import annotations

import math

from common.errors import ValidationError
from common.records import Member, Mix, Song, check_gain_db
from mixer.roomconfig import CommandError
from mixer.songs import Songs

__all__ = ["Console", "db_to_gain", "voice_gain"]


def db_to_gain(gain_db: float) -> float:
    """A level in dB as a linear factor (``-inf`` is 0)."""
    return 0.0 if gain_db == -math.inf else 10.0 ** (gain_db / 20.0)


def voice_gain(member: Member, song: Song) -> float:
    """The linear factor applied to ``member``'s voice: their fader, plus the leader's boost."""
    gain_db = member.gain_db
    if member.singer_id == song.leader:
        gain_db += song.leader_boost_db
    return 1.0 if gain_db == 0.0 else db_to_gain(gain_db)


class Console:
    """The mixing desk of one room: who is how loud, who is soloed, who hears what."""

    def __init__(self, songs: Songs) -> None:
        self.songs = songs
        self.members = songs.members

    def gain(self, member: Member) -> float:
        """The linear factor applied to ``member``'s voice: their fader, plus the leader's boost."""
        return voice_gain(member, self.songs.song)

    def set_gain(self, singer_id: str, target: str, gain_db: float) -> bool:
        """Set ``target``'s mic gain: the leader may set anyone's, a singer only their own."""
        self.members.member(singer_id)
        member = self.members.member(target)
        if singer_id not in (target, self.songs.song.leader):
            raise CommandError("not_leader", "only the leader can set another singer's gain")
        try:
            gain_db = check_gain_db(gain_db)
        except ValidationError as exc:
            raise CommandError("bad_gain", str(exc)) from None
        if member.gain_db == gain_db:
            return False
        member.gain_db = gain_db
        return True

    def set_leader_boost(self, singer_id: str, boost_db: float) -> bool:
        """Leader only: how much louder the leader's voice is in every mix."""
        self.songs.leader(singer_id, "set the leader's boost")
        if not 0 <= boost_db <= 12:
            raise CommandError("bad_gain", f"boost must be 0 .. 12 dB, got {boost_db!r:.20}")
        song = self.songs.song
        if boost_db == song.leader_boost_db:
            return False
        song.leader_boost_db = float(boost_db)
        return True

    def solo(self, singer_id: str, target: str, on: bool) -> bool:
        """Leader only: put ``target`` in (or out of) the solo mix."""
        self.songs.leader(singer_id, "solo singers")
        member = self.members.member(target)
        if member.soloed == on:
            return False
        member.soloed = on
        return True

    def set_mix(self, singer_id: str, mix: Mix) -> bool:
        """Choose the mix to hear: ``full`` or ``solo`` (the full mix while nobody solos)."""
        member = self.members.member(singer_id)
        if mix not in ("full", "solo"):
            raise CommandError("bad_message", f"mix must be 'full' or 'solo', got {mix!r:.20}")
        if member.mix == mix:
            return False
        member.mix = mix
        return True
