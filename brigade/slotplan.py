"""Which Redis Cluster slots to move so that no master carries much more than its share.

Pure: the rooms' measured loads, the slots' owners and the masters come in as
arguments; :func:`plan_moves` returns the slot moves, and
``brigade/clusterbalance.py`` measures and carries them out.

A room's keys share the hash tag ``{R}`` (``common/keys.py``), so a room lives
on one slot and a slot carries the rooms whose names hash to it (almost
always one).  Moving a slot moves its rooms, whole; a room is never split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from common import keys

ROOM_PREFIX = f"{keys.PREFIX}:{{"


@dataclass(frozen=True)
class Move:
    """Move ``slot`` (and so every room on it) from master ``source`` to master ``target``
    (node ids)."""

    slot: int
    source: str
    target: str
    load: float


def room_of_key(key: str) -> str | None:
    """The room a per-room key belongs to (``bb:{R}:...`` → ``R``), None for a global key."""
    if not key.startswith(ROOM_PREFIX):
        return None
    end = key.find("}", len(ROOM_PREFIX))
    if end <= len(ROOM_PREFIX):
        return None
    return key[len(ROOM_PREFIX) : end]


def master_loads(
    slot_loads: Mapping[int, float], owner: Mapping[int, str], masters: Iterable[str]
) -> dict[str, float]:
    """Each master's load: the sum of its slots' loads (every master listed, 0 when idle)."""
    loads = dict.fromkeys(masters, 0.0)
    for slot, load in slot_loads.items():
        loads[owner[slot]] = loads.get(owner[slot], 0.0) + load
    return loads


def plan_moves(
    slot_loads: Mapping[int, float],
    owner: Mapping[int, str],
    masters: Sequence[str],
    *,
    tolerance: float = 0.1,
    max_moves: int = 64,
) -> list[Move]:
    """The slot moves that bring every master to at most ``(1 + tolerance)`` x the mean load,
    or as close as whole slots allow, in at most ``max_moves`` moves.

    Greedy: while the busiest master is above that bound, move the one slot of
    it (to any other master) that lowers the busiest load the most, preferring
    the move that evens the loads most (sum of squares) and, at equal gain, the
    lower slot; a slot moves only when it is lighter than the gap between the
    two masters, so every move strictly evens the loads and the plan ends.
    Slots with no measured load (global keys, idle rooms) never move.
    """
    if not masters:
        return []
    where = {slot: owner[slot] for slot, load in slot_loads.items() if load > 0}
    loads = master_loads({s: slot_loads[s] for s in where}, where, masters)
    bound = (1 + tolerance) * sum(loads.values()) / len(masters)
    moves: list[Move] = []
    while len(moves) < max_moves:
        busiest = max(masters, key=lambda m: (loads[m], m))
        if loads[busiest] <= bound:
            break
        best: tuple[float, float, int, str] | None = None
        for slot, source in where.items():
            if source != busiest:
                continue
            load = slot_loads[slot]
            for target in masters:
                gap = loads[source] - loads[target]
                if target == source or not 0 < load < gap:
                    continue
                after = dict(loads)
                after[source] -= load
                after[target] += load
                key = (max(after.values()), sum(v * v for v in after.values()), slot, target)
                if best is None or key < best:
                    best = key
        if best is None:
            break
        _, _, slot, target = best
        load = slot_loads[slot]
        moves.append(Move(slot, busiest, target, load))
        loads[busiest] -= load
        loads[target] += load
        where[slot] = target
    return moves
