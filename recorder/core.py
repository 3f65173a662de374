"""The recorder's decisions, pure: which songs get a take, which tap a take reads,
when a take ends, and what of it is silence because its audio never came.

No I/O, no clock, no asyncio: the adapter (recorder/service.py) reads Redis,
passes what it read and ``now`` (the room clock, samples since the epoch, as
the mixer's ``RoomHost.step``) in, and performs the actions it gets back.

Timing, for the record. A tap at delay ``D`` sends song position ``p`` at
room time ``p + D - lead`` (the mixer's downlink lead, 1 s by default), so
the take's file reaches the song's end ``lead`` before the bucket at ``D``
plays it. The take waits for that. Only when the tap has not delivered the
end :data:`OVERDUE_S` after that bucket played it (a dead mixer, a tap the
stream forgot) is the rest taken as missing and written as silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from common.constants import SAMPLE_RATE
from common.listening import last_voice_tap
from common.records import Member, RoomMeta, Song, SongMaterial
from recorder.take import Placement, Take, TakeInfo

__all__ = [
    "OVERDUE_S",
    "Finish",
    "Retap",
    "SaveInfo",
    "TakeAction",
    "TakeCore",
    "last_bucket_delay",
    "played_by",
    "recording_delay",
    "song_end",
    "starts_take",
]

OVERDUE_S: Final = 3.0
"""How long after the tap's bucket played the song's end the take waits for it."""
_OVERDUE: Final = round(OVERDUE_S * SAMPLE_RATE)


@dataclass(frozen=True)
class Retap:
    """Read (and keep subscribed) the tap at ``delay`` from now on."""

    delay: int


@dataclass(frozen=True)
class SaveInfo:
    """The take's info changed (its end, its tap): write it next to its audio."""


@dataclass(frozen=True)
class Finish:
    """The take is whole: ``length`` samples, of which ``missing`` were owed silence
    (already counted in ``length``; the file is padded to it)."""

    length: int
    missing: int


TakeAction = Retap | SaveInfo | Finish


def last_bucket_delay(meta: RoomMeta, member_delays: list[int]) -> int:
    """The last possible bucket's delay, or a later member's.

    The mixer keeps this delay possible whatever the rounds (``set_rounds`` is
    refused when it would not fit): the fallback when a tap is refused.
    """
    spacing = round(meta.bucket_spacing_s * SAMPLE_RATE)
    return max([meta.n_buckets * spacing, *member_delays])


def recording_delay(meta: RoomMeta, members: list[Member]) -> int:
    """The tap a take records: every voice as the last occupied bucket hears it
    (:func:`common.listening.last_voice_tap`)."""
    spacing = round(meta.bucket_spacing_s * SAMPLE_RATE)
    return last_voice_tap(spacing, meta.n_buckets, ((m.role, m.delay) for m in members))


def song_end(info: TakeInfo, song: Song | None, frontier: int) -> int | None:
    """Where the take's song ended, from the room's song record; None while it runs.

    The record names the running (or last) song, and the still audible songs
    before it (``earlier``). A room that is gone ends the take where it is.
    """
    if song is None or song.start_pos is None:
        return frontier
    if (song.number, song.start_pos) == (info.number, info.start_pos):
        return song.end_pos
    span = song.find(info.number, info.start_pos)
    if span is not None:
        return span.end_pos  # songs started after ours
    later = [s.start_pos for s in song.spans() if s.start_pos > info.start_pos]
    if song.start_pos > info.start_pos:
        # Ours is no longer kept: it ended by the time the song after it started.
        return min([song.start_pos, *later])
    return frontier


def played_by(song: Song, number: int, start_pos: int) -> SongMaterial:
    """The material song ``number`` (started at ``start_pos``) plays: its own, kept in
    the record (the running or last song's ``started_with``, or an earlier one's),
    never what the leader has chosen since. A song no longer kept, or kept without
    it (a record from before songs kept their material): the current choice."""
    if (song.number, song.start_pos) == (number, start_pos):
        return song.played()
    span = song.find(number, start_pos)
    if span is not None and span.started_with is not None:
        return span.started_with
    return SongMaterial(track=song.track, metronome=song.metronome)


def starts_take(song: Song | None, taken: set[int], newest: int | None, finished: bool) -> bool:
    """Whether the room's current song (``song``) needs a take now.

    ``taken``: the song numbers this room task has takes for; ``newest`` the
    largest of them; ``finished``: this recorder already finished it. A
    running song does; so does one that started and ended since the newest
    take (a short song between two looks: its end has not reached the tap yet).
    """
    if song is None or song.start_pos is None or finished or song.number in taken:
        return False
    return song.running or (newest is not None and song.number > newest)


class TakeCore:
    """One take's decisions. Feed it what Redis said (:meth:`observe`), the tap's windows
    (:meth:`place`), a refused tap (:meth:`refused`) and the time (:meth:`tick`)."""

    def __init__(self, info: TakeInfo, written: int) -> None:
        self.info = info
        self.take = Take(info.start_pos, written=written, end_pos=info.end_pos)
        self.cap: int | None = None
        """After a refusal: the tap never follows beyond this delay."""
        self.finished = False

    @property
    def delay(self) -> int:
        return self.info.delay

    @property
    def deadline(self) -> int:
        """The room time after which what the tap has not sent of the song is missing."""
        return self.take.limit + self.info.delay + _OVERDUE

    def place(self, start: int, n: int) -> Placement:
        """Where a tap window of ``n`` samples at ``start`` goes (see :meth:`Take.place`)."""
        if self.finished:
            return Placement(0, 0, 0)
        return self.take.place(start, n)

    def observe(
        self, song: Song | None, members: list[Member] | None, meta: RoomMeta | None, now: int
    ) -> list[TakeAction]:
        """The room's song record and members as read now."""
        if self.finished:
            return []
        actions: list[TakeAction] = []
        if self.take.end_pos is None:
            end = song_end(self.info, song, self.take.frontier)
            if end is not None:
                self.take.end(end)
                self.info.end_pos = self.take.end_pos
                actions.append(SaveInfo())
        if members and meta is not None:  # an empty room has no later bucket to follow
            want = recording_delay(meta, members)
            if self.cap is not None:
                want = min(want, self.cap)
            # Only later: a later tap re-sends positions already written (they are
            # skipped), an earlier one would skip positions not yet written.
            if want > self.info.delay:
                self.info.delay = want
                actions += [Retap(want), SaveInfo()]
        return actions + self.tick(now)

    def refused(self, fallback: int) -> list[TakeAction]:
        """The mixer refused our tap; ``fallback`` (the last possible bucket) always fits."""
        self.cap = fallback
        if self.finished or fallback == self.info.delay:
            return []
        self.info.delay = fallback
        return [Retap(fallback), SaveInfo()]

    def tick(self, now: int) -> list[TakeAction]:
        """Finish when the file reaches the song's end, or when the rest is overdue."""
        if self.finished:
            return []
        take = self.take
        missing = 0
        if not take.done:
            if now < self.deadline:
                return []
            if take.end_pos is None:
                take.end(take.limit)  # 60 minutes and no end: cut there
            missing = take.pad_to_end()
        self.finished = True
        return [Finish(take.limit - take.start_pos, missing)]
