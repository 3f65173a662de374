"""The mixer's ownership and maintenance decisions, without I/O.

Every :data:`MAINTENANCE_S` the service (mixer/service.py) asks the planner
what to read (:meth:`MaintenancePlanner.ask`), reads it from Redis in one
pipeline, and hands what Redis said back (:class:`Observed`) with how long
each room it owns has been unused. :meth:`MaintenancePlanner.plan`
returns a :class:`Plan`: which rooms were lost or must be rewritten, which to
retire, which free rooms to look at for a claim, which gateways are dead,
which idle rooms to delete, whose material to keep alive, and which rooms to
hand over to the mixer that ranks first for them (between songs, when that
evens the load: a mixer added later gets its share of the rooms in use). Claiming takes
one more read (whether each free room's lease is held):
:meth:`MaintenancePlanner.claims` names the rooms to try, in order.

Time comes in as :class:`Now`; the planner keeps only its own timers (the
next sweep, the next material refresh, since when each free room waits, since
when each owned room is between songs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Final

from common.lease import LeaseResult, preferred_owner

__all__ = [
    "CLAIM_GRACE_S",
    "HANDOVER_BATCH",
    "HANDOVER_CALM_S",
    "MAINTENANCE_S",
    "STEMS_KEEP_MS",
    "SWEEP_BATCH",
    "SWEEP_S",
    "Ask",
    "GatewaySeen",
    "MaintenancePlanner",
    "Now",
    "Observed",
    "PeerLoad",
    "Plan",
    "PlannerSettings",
    "older_id",
    "trim_from",
]

MAINTENANCE_S: Final = 0.5
"""How often the service plans and carries out its maintenance."""
CLAIM_GRACE_S: Final = 1.0
"""A free room not claimed by its preferred mixer within this long is anyone's."""
HANDOVER_CALM_S: Final = 5.0
"""A room is handed over only after this long between songs (nothing audible left to
mix): a short pause between two songs is not the moment, and the handover's second of
silence falls where nobody sings."""
HANDOVER_BATCH: Final = 4
"""Most rooms one maintenance round hands over."""
SWEEP_S: Final = 10.0
"""How often a mixer looks for rooms idle long enough to delete."""
SWEEP_BATCH: Final = 50
"""Most idle rooms one sweep deletes."""
STEMS_KEEP_MS: Final = 5_000
"""While a song's stems are recorded, its input stream keeps this much (a recorder that
takes over reads them; the tap streams keep about as much)."""


@dataclass(frozen=True)
class Now:
    """The clocks a plan is made at."""

    wall_s: float
    """Unix time (``time.time()``): the scores Redis keeps (heartbeats, idle since)."""
    mono_s: float
    """Monotonic time (``time.monotonic()``): the planner's own timers."""


@dataclass(frozen=True)
class PlannerSettings:
    """The part of :class:`common.settings.MixerSettings` the planner decides with."""

    mixer_id: str
    max_rooms: int
    lease_ttl_ms: int
    heartbeat_ttl_ms: int
    release_samples: int
    """A room unused this long (in samples) is given back."""
    idle_delete_s: float
    """A room idle (not active) this long is deleted with its keys."""
    material_period_s: float
    """How often the material of rooms in use has its TTL renewed."""

    def __post_init__(self) -> None:
        if self.max_rooms < 0 or self.lease_ttl_ms <= 0 or self.heartbeat_ttl_ms <= 0:
            raise ValueError(f"bad planner settings: {self}")


@dataclass(frozen=True)
class Ask:
    """What one maintenance read asks Redis (besides writing the heartbeat)."""

    prune_before_s: float
    """Drop mixers from ``bb:mixers`` whose last heartbeat is older than this."""
    live_since_s: float
    """Mixers with a heartbeat since this are live (they rank for free rooms)."""
    renew: tuple[str, ...]
    """The owned rooms whose leases to renew."""
    gateways: tuple[str, ...]
    """The gateways to check: heartbeat key present, entry in ``bb:gateways``."""
    idle_before_s: float | None
    """Read the idle rooms idle since before this (None: no sweep due)."""
    refresh_material: bool
    """Material refresh due: pass the rooms that keep their material to :meth:`plan`."""
    peers: tuple[str, ...] = ()
    """The other mixers live at the last round, whose heartbeats to read (:class:`PeerLoad`)."""


@dataclass(frozen=True)
class GatewaySeen:
    """What Redis said about one gateway."""

    alive: bool
    """Its heartbeat key exists."""
    registered: bool
    """It has an entry in ``bb:gateways`` (it once heartbeated)."""


@dataclass(frozen=True)
class PeerLoad:
    """What another mixer's heartbeat says of its load."""

    rooms: int
    max_rooms: int
    """0: it does not say (an older mixer): it is never handed a room."""


@dataclass(frozen=True)
class Observed:
    """What Redis answered to an :class:`Ask`."""

    live: frozenset[str]
    active: frozenset[str]
    leases: Mapping[str, int]
    """Owned room -> what the renewal script answered (a :class:`LeaseResult` value)."""
    gateways: Mapping[str, GatewaySeen] = field(default_factory=dict)
    idle_due: tuple[str, ...] = ()
    peers: Mapping[str, PeerLoad] = field(default_factory=dict)
    """The load of each peer of :attr:`Ask.peers` whose heartbeat could be read."""


@dataclass(frozen=True)
class Plan:
    """What the service does in one maintenance round, in this order."""

    drop: tuple[str, ...] = ()
    """Rooms whose lease another mixer holds: forget them now."""
    rewrite: tuple[str, ...] = ()
    """Rooms whose lease had vanished and is ours again: write their state back."""
    retire: tuple[str, ...] = ()
    """Rooms unused for ``release_samples``: persist, then give back."""
    check_free: tuple[str, ...] = ()
    """Active rooms nobody here owns: read whether their leases are held, then
    call :meth:`MaintenancePlanner.claims`."""
    live: frozenset[str] = frozenset()
    """The live mixers (this one included) the claim ranks among."""
    dead_gateways: frozenset[str] = frozenset()
    """Gateways that stopped heartbeating: their members are marked disconnected."""
    delete: tuple[str, ...] = ()
    """Idle rooms to delete with every key (the delete script checks again)."""
    delete_before_s: float = 0.0
    """The idle deadline the delete script checks them against."""
    refresh_material: tuple[str, ...] = ()
    """Rooms whose tracks' and images' TTLs to renew."""
    hand_over: tuple[tuple[str, str], ...] = ()
    """(room, mixer): rooms to write back and give up now, for the live mixer that ranks
    first for each to claim (it does at once); they are between songs."""


class MaintenancePlanner:
    """Decides claims, releases, retiring, deleting, dead gateways and material refresh."""

    def __init__(self, settings: PlannerSettings) -> None:
        self.settings = settings
        self._free_since: dict[str, float] = {}
        self._calm_since: dict[str, float] = {}
        self._peers: tuple[str, ...] = ()
        self._next_sweep_s = float("-inf")
        self._material_due_s = float("-inf")

    def ask(self, unused: Mapping[str, int], gateways: AbstractSet[str], now: Now) -> Ask:
        """What to read this round; starts the sweep and material timers when due.

        ``unused`` maps each owned room to the samples since it last had a connected
        member or a tap subscriber (0: in use); ``gateways`` are the gateways their
        connected members are linked through.
        """
        s = self.settings
        idle_before: float | None = None
        if now.mono_s >= self._next_sweep_s:
            self._next_sweep_s = now.mono_s + SWEEP_S
            idle_before = now.wall_s - s.idle_delete_s
        material = now.mono_s >= self._material_due_s
        if material:
            self._material_due_s = now.mono_s + s.material_period_s
        return Ask(
            prune_before_s=now.wall_s - 2 * s.heartbeat_ttl_ms / 1000,
            # Live: heartbeat within one lease TTL. A mixer whose leases expire has been
            # silent that long, so the survivors rank among themselves and claim at once.
            live_since_s=now.wall_s - s.lease_ttl_ms / 1000,
            renew=tuple(unused),
            gateways=tuple(sorted(gateways)),
            idle_before_s=idle_before,
            refresh_material=material,
            peers=self._peers,
        )

    def plan(
        self,
        unused: Mapping[str, int],
        ask: Ask,
        seen: Observed,
        keeping_material: AbstractSet[str] = frozenset(),
        between_songs: AbstractSet[str] = frozenset(),
        now: Now | None = None,
    ) -> Plan:
        """The round's plan from what Redis answered to ``ask``.

        ``keeping_material`` (read only when :attr:`Ask.refresh_material`): the owned
        rooms that list tracks or images and have a connected member.
        ``between_songs``: the owned rooms with nothing audible left to mix (no song
        running, the last one's end played by every bucket); ``now`` times how long
        each has been so (None: no handover this round).
        """
        s = self.settings
        drop = tuple(r for r in ask.renew if seen.leases.get(r) == LeaseResult.LOST)
        rewrite = tuple(r for r in ask.renew if seen.leases.get(r) == LeaseResult.REACQUIRED)
        kept = [r for r in unused if r not in drop] if drop else list(unused)
        retire = tuple(r for r in kept if unused[r] >= s.release_samples)
        owned = len(kept) - len(retire)
        # A room given back this round is not claimed back by its own mixer.
        free = sorted(seen.active - unused.keys()) if owned < s.max_rooms else []
        dead = frozenset(gw for gw, g in seen.gateways.items() if not g.alive and g.registered)
        refresh: tuple[str, ...] = ()
        if ask.refresh_material:
            refresh = tuple(r for r in kept if r not in retire and r in keeping_material)
        live = seen.live | {s.mixer_id}
        self._peers = tuple(sorted(live - {s.mixer_id}))
        staying = [r for r in kept if r not in retire]
        hand_over = self._hand_over(staying, between_songs, live, seen.peers, now)
        return Plan(
            drop=drop,
            rewrite=rewrite,
            retire=retire,
            check_free=tuple(free),
            live=live,
            dead_gateways=dead,
            delete=seen.idle_due[:SWEEP_BATCH] if ask.idle_before_s is not None else (),
            delete_before_s=ask.idle_before_s or 0.0,
            refresh_material=refresh,
            hand_over=hand_over,
        )

    def _hand_over(
        self,
        owned: list[str],
        between_songs: AbstractSet[str],
        live: AbstractSet[str],
        peers: Mapping[str, PeerLoad],
        now: Now | None,
    ) -> tuple[tuple[str, str], ...]:
        """The owned rooms to give to the live mixer that ranks first for them.

        Only a room between songs for :data:`HANDOVER_CALM_S`; only to a mixer whose
        heartbeat says it has room for it, and only while this mixer owns at least two
        rooms more than it (so the move evens the load and nothing moves back: a room
        goes only to the mixer that ranks first for it, which never hands it on while
        the live mixers stay the same). At most :data:`HANDOVER_BATCH` per round.
        """
        calm = {r for r in owned if r in between_songs}
        for room in [r for r in self._calm_since if r not in calm]:
            del self._calm_since[room]
        if now is None:
            return ()
        for room in calm:
            self._calm_since.setdefault(room, now.mono_s)
        me = self.settings.mixer_id
        mine = len(owned)
        loads = {m: peers[m].rooms for m in live if m != me and m in peers}
        chosen: list[tuple[str, str]] = []
        for room in sorted(calm):
            if len(chosen) >= HANDOVER_BATCH:
                break
            if now.mono_s - self._calm_since[room] < HANDOVER_CALM_S:
                continue
            target = preferred_owner(room, live)
            if target is None or target == me or target not in loads:
                continue
            if loads[target] >= peers[target].max_rooms or mine - loads[target] < 2:
                continue
            chosen.append((room, target))
            del self._calm_since[room]
            mine -= 1
            loads[target] += 1
        return tuple(chosen)

    def claims(
        self, held: Mapping[str, bool], live: Iterable[str], owned: int, now: Now
    ) -> tuple[str, ...]:
        """The free rooms to try to claim, in order, at most as many as there is room for.

        ``held`` says, for each room of :attr:`Plan.check_free`, whether its lease is
        held. A room goes first to the live mixer that ranks first for it; any mixer
        claims it once it has waited :data:`CLAIM_GRACE_S` unclaimed.
        """
        live = set(live)
        # Forget rooms no longer free (claimed, held, or gone from the active set).
        for room in [r for r in self._free_since if held.get(r, True)]:
            del self._free_since[room]
        chosen: list[str] = []
        slots = self.settings.max_rooms - owned
        for room, is_held in held.items():
            if is_held:
                continue
            first_seen = self._free_since.setdefault(room, now.mono_s)
            mine = preferred_owner(room, live) == self.settings.mixer_id
            if mine or now.mono_s - first_seen >= CLAIM_GRACE_S:
                chosen.append(room)
        return tuple(chosen[: max(0, slots)])

    def claimed(self, room: str) -> None:
        """The service now owns ``room``: it no longer waits."""
        self._free_since.pop(room, None)


def trim_from(
    in_cursor: bytes,
    checkpoint_cursor: bytes | None,
    has_ring: bool,
    keeps_stems: bool,
    wall_ms: int,
) -> bytes:
    """The oldest input-stream entry id to keep (everything before it is trimmed).

    What is applied can go, but not what came after the last checkpoint: a new
    owner replays it (no ring, no checkpoint: everything read can go). While a
    song's stems are recorded the last :data:`STEMS_KEEP_MS` stay too: a recorder
    that takes over finds them, as it finds the tap's.
    """
    keep_from = in_cursor
    if has_ring and checkpoint_cursor is not None:
        keep_from = checkpoint_cursor
    if keeps_stems:
        keep_from = older_id(keep_from, wall_ms - STEMS_KEEP_MS)
    return keep_from


def older_id(entry_id: bytes, ms: int) -> bytes:
    """The older of a stream entry id and the first id of millisecond ``ms``."""
    head, _, tail = entry_id.partition(b"-")
    try:
        mine = (int(head), int(tail or 0))
    except ValueError:
        return entry_id
    return entry_id if mine <= (ms, 0) else f"{ms}-0".encode()
