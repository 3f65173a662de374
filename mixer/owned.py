"""A room this mixer owns: its pure host and where it has read its streams to."""

from __future__ import annotations

from dataclasses import dataclass

from mixer.host import RoomHost
from mixer.room import RoomState

__all__ = ["OwnedRoom"]


@dataclass
class OwnedRoom:
    """A room this mixer owns: its pure host and its stream cursors."""

    host: RoomHost
    in_cursor: bytes
    ctl_cursor: bytes
    checkpoint_cursor: bytes | None = None
    """The input cursor of the last checkpoint: the input stream keeps what came after,
    so a new owner can replay it."""

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def state(self) -> RoomState:
        return self.host.state
