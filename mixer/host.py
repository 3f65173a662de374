"""The pure room host: everything a mixer does for one room, without I/O.

:meth:`RoomHost.step` takes what a tick read for the room (control entries
and audio chunks, still encoded) and the clock, applies them, and returns a
:class:`Publish`: the tap windows, the events, and what must be persisted.
The service (mixer/service.py) only reads Redis, calls ``step`` and writes
the result back, so every rule here (who may do what, expiry, stale
disconnects, what changed) is tested in-process with ``now`` as an argument.

Commands are dispatched through :data:`HANDLERS`: one row per command
class (common/commands.py), naming the :class:`RoomState` method it calls.
"""

from __future__ import annotations

import heapq
import hmac
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from common.codes import Code
from common.commands import (
    AddTrack,
    ClearImage,
    Command,
    CueLyrics,
    Disconnect,
    Envelope,
    Halt,
    Join,
    JoinBucket,
    Lead,
    Leave,
    Mute,
    SetDelay,
    SetGain,
    SetImage,
    SetLeaderBoost,
    SetLyrics,
    SetMetronome,
    SetMix,
    SetRecording,
    SetRounds,
    SetTrack,
    Solo,
    Start,
    Stop,
    SubscribeTap,
    command_name,
    decode_envelope,
)
from common.constants import SAMPLE_RATE, seconds_to_samples
from common.errors import ValidationError, WireError
from common.events import Levels, Reply, State
from common.link import Link
from common.records import (
    Checkpoint,
    LiveCounters,
    Metronome,
    Occupancy,
    RecordingOptions,
    Role,
    RoomMeta,
    Rounds,
)
from common.wire import decode_chunk
from mixer.room import ApplyStatus, CommandError, Member, RoomMixer, RoomState, TapOutput
from mixer.view import public_state

__all__ = ["HANDLERS", "LEVELS_MAX", "HostCounters", "HostTiming", "Publish", "RoomHost", "loudest"]

log = logging.getLogger(__name__)

Handler = Callable[[RoomState, str, Any, int], object]

HANDLERS: Final[dict[type[Command], Handler]] = {
    Join: lambda s, who, c, now: s.join(who, c.name, c.role, now, c.token_digest),
    Disconnect: lambda s, who, c, now: s.disconnect(who, now),
    Leave: lambda s, who, c, now: s.leave(who, now),
    Lead: lambda s, who, c, now: s.request_lead(who, now),
    Start: lambda s, who, c, now: s.start_song(who, now),
    Stop: lambda s, who, c, now: s.stop_song(who, now),
    Halt: lambda s, who, c, now: s.halt(who, now),
    JoinBucket: lambda s, who, c, now: s.join_bucket(who, c.bucket),
    SetDelay: lambda s, who, c, now: s.set_delay(who, c.delay_samples),
    Mute: lambda s, who, c, now: s.set_muted(who, c.muted),
    SetGain: lambda s, who, c, now: s.set_gain(
        who, c.target, -math.inf if c.gain_db is None else c.gain_db
    ),
    SetLeaderBoost: lambda s, who, c, now: s.set_leader_boost(who, c.boost_db),
    Solo: lambda s, who, c, now: s.solo(who, c.target, c.on),
    SetMix: lambda s, who, c, now: s.set_mix(who, c.mix),
    SetRounds: lambda s, who, c, now: s.set_rounds(
        who, Rounds(bpm=c.bpm, beats=c.beats, repeats=c.repeats)
    ),
    SetTrack: lambda s, who, c, now: s.set_track(who, c.track),
    SetMetronome: lambda s, who, c, now: s.set_metronome(
        who, Metronome(on=c.on, bpm=c.bpm, beats=c.beats, count_in=c.count_in)
    ),
    SetRecording: lambda s, who, c, now: s.set_recording(
        who, RecordingOptions(stems=c.stems, metronome=c.metronome)
    ),
    SetLyrics: lambda s, who, c, now: s.set_lyrics(who, c.text),
    CueLyrics: lambda s, who, c, now: s.cue_lyrics(who, c.line, c.pos, now),
    ClearImage: lambda s, who, c, now: s.clear_image(who),
    AddTrack: lambda s, who, c, now: s.add_track(who, c.track),
    SetImage: lambda s, who, c, now: s.set_image(who, c.image),
    SubscribeTap: lambda s, who, c, now: s.subscribe_tap(
        who, seconds_to_samples(c.delay_s), c.mix, now, seconds_to_samples(c.ttl_s)
    ),
}
"""Command class -> the RoomState call it makes (``who`` is the envelope's singer)."""


@dataclass
class HostCounters:
    """Totals over every room a mixer hosts (published in its heartbeat)."""

    chunks_in: int = 0
    chunks_rejected: int = 0
    late: int = 0
    frames_out: int = 0
    bad_wire: int = 0
    bad_ctl: int = 0
    commands: int = 0


@dataclass
class Publish:
    """What one step of a room asks the service to write."""

    taps: list[TapOutput] = field(default_factory=list)
    events: list[Reply | State | Levels] = field(default_factory=list)
    refresh_taps: bool = False
    """Renew the time-to-live of every tap stream written (besides new taps')."""
    persist: bool = False
    """Write the members and song records (and the control cursor)."""
    persist_material: bool = False
    """Also write the material record (tracks, lyrics, image, cues): only when it changed."""
    discard: list[tuple[str, str]] = field(default_factory=list)
    """``(kind, id)`` of tracks and images no longer listed: delete their bytes."""
    removed: set[str] = field(default_factory=set)
    """Members gone for good: delete their records, resume tokens and links."""
    links: dict[str, str] = field(default_factory=dict)
    """Singer -> the encoded :class:`Link` of connections that joined in this step."""
    occupancy: Occupancy | None = None
    checkpoint: Checkpoint | None = None
    """About once a second while there is song audio: the failover checkpoint's next entry
    (full, or the spans mixed since the last one)."""
    stats: dict[str, int] | None = None
    """Set on publish steps: occupancy, the room's counters; trim the consumed input."""
    live: LiveCounters | None = None
    """On publish steps after audio arrived: each member's counters (with the stats)."""


LEVELS_MAX: Final = 12
"""A ``levels`` event names at most this many singers, the loudest (docs/protocol.md)."""

_REJECTED: Final = frozenset(
    {
        ApplyStatus.AHEAD,
        ApplyStatus.FUTURE,
        ApplyStatus.TOO_OLD,
        ApplyStatus.TOO_LONG,
        ApplyStatus.OVERLAP,
        ApplyStatus.UNKNOWN_SINGER,
    }
)


@dataclass(frozen=True)
class HostTiming:
    """The host's periods, in samples."""

    publish: int = seconds_to_samples(0.25)
    levels: int = SAMPLE_RATE
    grace: int = 30 * SAMPLE_RATE
    checkpoint: int = SAMPLE_RATE
    """0: no checkpoints."""
    tap_ttl: int = SAMPLE_RATE
    """How often the taps' streams get their time-to-live renewed (a third of it: every
    3.3 s with the default 10 s; each renewal is a command per tap)."""


class RoomHost:
    """One room's mixer, links and persistence marks; pure (``now`` is an argument)."""

    def __init__(
        self,
        name: str,
        state: RoomState,
        now: int,
        *,
        links: Mapping[str, tuple[str, str]] | None = None,
        timing: HostTiming | None = None,
        mixer_id: str = "",
        counters: HostCounters | None = None,
        meta: RoomMeta | None = None,
    ) -> None:
        self.name = name
        self.meta = meta
        """The room's settings as loaded: rewritten from here if Redis loses them."""
        self.mixer = RoomMixer(name, state, now)
        self.links: dict[str, Link] = {s: Link(*link) for s, link in (links or {}).items()}
        """Singer -> the gateway and connection of their current connection."""
        self.timing = timing or HostTiming()
        self.mixer_id = mixer_id
        self.counters = counters if counters is not None else HostCounters()
        self.persisted_version = state.version
        self.persisted_material = state.material_version
        self.persisted_ids = set(state.members)
        self._counters_dirty = False
        self._published_at: int | None = None
        self._levels_at: int | None = None
        self._checkpoint_at: int | None = None
        self._tap_ttl_at: int | None = None
        self._unused_since: int | None = now

    @property
    def state(self) -> RoomState:
        return self.mixer.state

    # --- one step ------------------------------------------------------------------------

    def step(
        self, commands: Iterable[bytes | None], chunks: Iterable[bytes | None], now: int
    ) -> Publish:
        """Apply a tick's control entries, then its chunks, then emit what is due."""
        out = Publish()
        for data in commands:
            reply = self.command(data, now, out)
            if reply is not None:
                out.events.append(reply)
        # Audio after commands: a join in this tick makes the singer's chunks welcome.
        for data in chunks:
            self.chunk(data, now)
        state = self.state
        if state.end_with_track(now):
            log.info("room %s: song %d ended with its track", self.name, state.song.number)
        if state.discarded:
            out.discard, state.discarded = state.discarded, []
        out.taps = self.mixer.tick(now)
        if self._tap_ttl_at is None or now - self._tap_ttl_at >= self.timing.tap_ttl:
            self._tap_ttl_at = now
            out.refresh_taps = True
        in_use = bool(self.state.subscriptions) or any(
            m.connected for m in self.state.members.values()
        )
        if in_use:
            self._unused_since = None
        elif self._unused_since is None:
            self._unused_since = now
        self.counters.frames_out += sum(len(t.samples) for t in out.taps) // 960
        publish = self._published_at is None or now - self._published_at >= self.timing.publish
        if publish:
            self._published_at = now
            self._expire(now)
        self._persist_marks(out)
        if publish:
            self._publish(now, out)
        period = self.timing.checkpoint
        if period and (self._checkpoint_at is None or now - self._checkpoint_at >= period):
            out.checkpoint = self.mixer.checkpoint()
            self._checkpoint_at = now if out.checkpoint is not None else None
        return out

    def restore(self, checkpoints: Sequence[Checkpoint], now: int) -> bool:
        """Carry on from the previous owner's checkpoint entries (:meth:`RoomMixer.restore`)."""
        return self.mixer.restore(checkpoints, now)

    def command(self, data: bytes | None, now: int, out: Publish | None = None) -> Reply | None:
        """Decode and apply one control entry; its reply (None: the entry was unreadable)."""
        try:
            envelope = decode_envelope(data)
        except ValidationError as exc:
            self.counters.bad_ctl += 1
            log.debug("room %s: dropped control entry: %s", self.name, exc)
            return None
        self.counters.commands += 1
        return self.apply(envelope, now, out)

    def apply(self, envelope: Envelope, now: int, out: Publish | None = None) -> Reply:
        """Apply a decoded command; the reply says whether the room accepted it."""
        cmd = envelope.cmd
        reply = Reply(
            singer=envelope.singer,
            gw=envelope.gw,
            req=envelope.req,
            cmd=command_name(cmd),
            ok=True,
        )
        if isinstance(cmd, Disconnect) and self._stale(envelope):
            # The singer resumed on another connection before this one's close arrived.
            return reply
        if isinstance(cmd, Join) and not self._password_checked(cmd):
            return _refused(reply, Code.BAD_PASSWORD, "wrong or missing password")
        try:
            HANDLERS[type(cmd)](self.state, envelope.singer, cmd, now)
        except CommandError as exc:
            return _refused(reply, exc.code, exc.message)
        except ValidationError as exc:
            return _refused(reply, Code.BAD_MESSAGE, str(exc))
        if isinstance(cmd, Join):
            link = Link(envelope.gw, envelope.conn)
            self.links[envelope.singer] = link
            if out is not None:
                out.links[envelope.singer] = link.encode()
        return reply

    def chunk(self, data: bytes | None, now: int) -> ApplyStatus | None:
        """Decode and apply one audio chunk (None: unreadable, counted as bad wire)."""
        try:
            if data is None:
                raise WireError("stream entry has no 'd' field")
            chunk = decode_chunk(data)
            if chunk.room != self.name:
                raise WireError(f"chunk for room {chunk.room!r} in the stream of {self.name!r}")
        except WireError as exc:
            self.counters.bad_wire += 1
            log.debug("room %s: dropped chunk: %s", self.name, exc)
            return None
        status = self.mixer.apply(chunk.singer, chunk.start, chunk.samples, now)
        self.counters.chunks_in += 1
        self._counters_dirty = True
        if status is ApplyStatus.OK:
            return status  # the common case, before any set lookup (Enum.__hash__ is Python)
        if status is ApplyStatus.LATE:
            self.counters.late += 1
        elif status in _REJECTED:
            self.counters.chunks_rejected += 1
        return status

    def disconnect_gateways(self, dead: set[str], now: int) -> int:
        """Mark disconnected the connected members whose gateway died; returns how many."""
        count = 0
        for singer, link in list(self.links.items()):
            member = self.state.members.get(singer)
            if link.gateway in dead and member is not None and member.connected:
                self.state.disconnect(singer, now)
                count += 1
        return count

    def gateways(self) -> set[str]:
        """The gateways of the connected members (to watch for dead ones)."""
        return {
            link.gateway
            for singer, link in self.links.items()
            if link.gateway and (m := self.state.members.get(singer)) is not None and m.connected
        }

    def unused_for(self, now: int) -> int:
        """Samples since the room last had a connected member or a tap subscriber (0: in use)."""
        return 0 if self._unused_since is None else now - self._unused_since

    def resync(self) -> None:
        """Publish the whole state again on the next step (after Redis lost it)."""
        self.persisted_version = -1
        self.persisted_material = -1

    # --- internals -----------------------------------------------------------------------

    def _password_checked(self, join: Join) -> bool:
        # The gateway checked the password against the hash it names: it must be ours.
        expected = self.meta.password_hash if self.meta is not None else ""
        return not expected or hmac.compare_digest(join.password_hash, expected)

    def _stale(self, envelope: Envelope) -> bool:
        link = self.links.get(envelope.singer)
        sender = Link(envelope.gw, envelope.conn)
        return link is not None and link.complete and sender.complete and link != sender

    def _expire(self, now: int) -> None:
        gone = self.state.expire(now, self.timing.grace)
        if gone:
            log.info("room %s: %d member(s) left for good", self.name, len(gone))

    def _persist_marks(self, out: Publish) -> None:
        state = self.state
        if state.version == self.persisted_version:
            return
        current = set(state.members)
        out.removed = self.persisted_ids - current
        for singer in out.removed:
            self.links.pop(singer, None)
            out.links.pop(singer, None)
        out.persist = True
        out.persist_material = state.material_version != self.persisted_material
        self.persisted_material = state.material_version
        # Before the replies: a gateway acks a command once the state shows it.
        out.events.insert(0, State(version=state.version, state=public_state(self.name, state)))
        self.persisted_ids = current
        self.persisted_version = state.version

    def _publish(self, now: int, out: Publish) -> None:
        snap = self.mixer.occupancy(now)
        out.occupancy = Occupancy(
            clock=snap.clock,
            ring_samples=snap.ring_samples,
            frame_samples=snap.frame_samples,
            occupied=snap.occupied,
            bitmap=snap.bitmap,
            mixer=self.mixer_id,
        )
        out.stats = self.mixer.counters.to_dict()
        if self._counters_dirty:
            # The members' counters go with the stats, not into their records: those are
            # rewritten (and copied to the durable store) only when the room changes.
            out.live = LiveCounters.of(self.state.members.values())
            self._counters_dirty = False
        # The event goes to every browser in the room: it names only the loudest few
        # singers, so its bytes do not grow with the room (members^2 in all otherwise).
        state = self.state
        if state.song.running and (
            self._levels_at is None or now - self._levels_at >= self.timing.levels
        ):
            self._levels_at = now
            out.events.append(Levels(clock=now, levels=loudest(state.members.values())))


def loudest(members: Iterable[Member], limit: int = LEVELS_MAX) -> dict[str, float]:
    """The levels (dBFS, 0.1 dB) of the ``limit`` loudest connected singers (ties by id)."""
    singing = [m for m in members if m.connected and m.role is Role.SINGER]
    if len(singing) > limit:
        singing = heapq.nsmallest(limit, singing, key=lambda m: (-m.level_db, m.singer_id))
    return {m.singer_id: round(m.level_db, 1) for m in singing}


def _refused(reply: Reply, code: Code, message: str) -> Reply:
    return msgspec.structs.replace(reply, ok=False, code=code, message=message)
