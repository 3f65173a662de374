"""A room's material as pages receive it: one ``material`` message per change, per gateway.

The mixer's ``state`` event carries the room's material (tracks, lyrics, image,
lyric cues) with its ``material_version``; the ``state`` a gateway sends pages
carries only the version (common/protocol.py :func:`~common.protocol.page_state`).
:func:`follow` keeps, per room, the :class:`RoomMaterial` of the latest state:
the same object while neither the version nor the content changes, a new one
(its message serialised once, for every session) when either does. A session
remembers the object it was last sent (:meth:`gateway.session.Session.send_material`),
so a page gets each material exactly once, before the first ``state`` naming it.

Comparing the content too, not the version alone, keeps pages right even if a
version were ever reused with other content (a mixer that lost its persisted
version). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.protocol import dumps, material_message
from common.roomview import MaterialView, PublicRoom

__all__ = ["RoomMaterial", "follow"]


@dataclass(frozen=True, slots=True, eq=False)
class RoomMaterial:
    """A room's material at one version, with its ``material`` message serialised once."""

    version: int
    view: MaterialView
    text: bytes
    """The ``material`` message, UTF-8 JSON, written as is to every session."""

    @classmethod
    def of(cls, state: PublicRoom) -> RoomMaterial:
        text = dumps(material_message(state.material_version, state.material)).encode("utf-8")
        return cls(state.material_version, state.material, text)

    def same(self, other: RoomMaterial) -> bool:
        """Whether ``other`` holds this version and content (a page holding one has the other)."""
        return other is self or (other.version == self.version and other.view == self.view)


def follow(previous: RoomMaterial | None, state: PublicRoom) -> RoomMaterial:
    """The material of ``state``: ``previous`` itself when it is unchanged, else a new one."""
    if (
        previous is not None
        and previous.version == state.material_version
        and previous.view == state.material
    ):
        return previous
    return RoomMaterial.of(state)
