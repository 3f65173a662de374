"""A room's material as pages receive it: one message per change, per gateway.

The mixer's ``state`` event carries the room's material (tracks, lyrics, image,
lyric cues) with its ``material_version``; the ``state`` a gateway sends pages
carries only the version (common/protocol.py :func:`~common.protocol.page_state`).
:func:`follow` keeps, per room, the :class:`RoomMaterial` of the latest state:
the same object while neither the version nor the content changes, a new one
(its messages serialised once, for every session) when either does. A session
remembers the object it was last sent (:meth:`gateway.session.Session.send_material`),
so a page gets each material exactly once, before the first ``state`` naming it.

**Cues.** During a song the leader cues a line every few seconds, and each cue
is a new material that differs from the one before only by cues appended to
``cues`` (:func:`appended`). Such a material also carries a :class:`CueDelta`:
a ``cues`` message with just the new cues, sent (:meth:`RoomMaterial.message_for`)
to a page that holds the material it extends, and the whole ``material``
message to a page that holds anything else (or nothing).

**States.** A ``state`` that differs from the one before only by its material
(and the room version that bumped) tells a page nothing the ``material`` or
``cues`` message does not (:func:`only_material`): the gateway sends pages
none, and keeps it as its own view of the room.

Comparing the content too, not the version alone, keeps pages right even if a
version were ever reused with other content (a mixer that lost its persisted
version). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from common.protocol import cues_message, dumps, material_message
from common.roomview import MaterialView, PublicRoom

__all__ = ["CueDelta", "RoomMaterial", "appended", "follow", "only_material"]


@dataclass(frozen=True, slots=True, eq=False)
class CueDelta:
    """How a material extends the one before: its ``cues`` message, for a page holding that."""

    base_version: int
    base: MaterialView
    """The material extended (the one before's view: no chain of older materials is kept)."""
    start: int
    """How many cues ``base`` holds: the new ones begin there."""
    text: bytes
    """The ``cues`` message, UTF-8 JSON, written as is to every session holding ``base``."""

    def extends(self, held: RoomMaterial) -> bool:
        """Whether ``held`` is the material this delta extends."""
        return held.version == self.base_version and (
            held.view is self.base or held.view == self.base
        )


@dataclass(frozen=True, slots=True, eq=False)
class RoomMaterial:
    """A room's material at one version, with its messages serialised once."""

    version: int
    view: MaterialView
    text: bytes
    """The ``material`` message, UTF-8 JSON, written as is to every session."""
    delta: CueDelta | None = None
    """The ``cues`` message for a page holding the material before, when this one only
    appends cues to it."""

    @classmethod
    def of(cls, state: PublicRoom, previous: RoomMaterial | None = None) -> RoomMaterial:
        """The material of ``state``, with its delta from ``previous`` when it has one."""
        version, view = state.material_version, state.material
        text = dumps(material_message(version, view)).encode("utf-8")
        delta = None
        if previous is not None and version > previous.version and appended(previous.view, view):
            start = len(previous.view.cues)
            message = cues_message(version, previous.version, start, view.cues[start:])
            delta = CueDelta(previous.version, previous.view, start, dumps(message).encode("utf-8"))
        return cls(version, view, text, delta)

    def same(self, other: RoomMaterial) -> bool:
        """Whether ``other`` holds this version and content (a page holding one has the other)."""
        return other is self or (other.version == self.version and other.view == self.view)

    def message_for(self, held: RoomMaterial | None) -> bytes | None:
        """What a page holding ``held`` needs to hold this: nothing (None), the ``cues``
        message when this extends ``held``, else the whole ``material`` message."""
        if held is not None and self.same(held):
            return None
        if held is not None and self.delta is not None and self.delta.extends(held):
            return self.delta.text
        return self.text


def appended(before: MaterialView, after: MaterialView) -> bool:
    """Whether ``after`` is ``before`` with one or more cues appended to ``cues`` (the
    leader advancing the line): everything else the same, ``before``'s cues a prefix."""
    held = len(before.cues)
    return (
        len(after.cues) > held
        and after.cues[:held] == before.cues
        and msgspec.structs.replace(after, cues=before.cues) == before
    )


def only_material(before: PublicRoom | None, after: PublicRoom) -> bool:
    """Whether ``after`` differs from ``before`` only by its material (its version, its
    content, and the room version the change bumped): a page holding ``before`` and
    the new material has nothing to learn from ``after``."""
    if before is None or after.material_version == before.material_version:
        return False
    unchanged = msgspec.structs.replace(
        after,
        version=before.version,
        material_version=before.material_version,
        material=before.material,
    )
    return unchanged == before


def follow(previous: RoomMaterial | None, state: PublicRoom) -> RoomMaterial:
    """The material of ``state``: ``previous`` itself when it is unchanged, else a new one
    (with a ``cues`` delta from ``previous`` when it only appends cues)."""
    if (
        previous is not None
        and previous.version == state.material_version
        and previous.view == state.material
    ):
        return previous
    return RoomMaterial.of(state, previous)
