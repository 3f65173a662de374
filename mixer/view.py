"""What browsers see of the mixer's live room (docs/protocol.md, *Room state*).

Pure: built from the room's state by :func:`common.roomview.public_state`, the one place that
rule is written; the room host sends it with every ``state`` event.
"""

from common import roomview
from mixer.roomstate import RoomState


def public_state(room: str, state: RoomState) -> roomview.PublicRoom:
    """What browsers see of a room (docs/protocol.md, *Room state*)."""
    config = state.config
    return roomview.public_state(
        room,
        version=state.version,
        capacity=config.capacity,
        n_buckets=config.n_buckets,
        bucket_spacing=config.bucket_spacing,
        song=state.song,
        members=state.members.values(),
        material=state.material,
        material_version=state.material_version,
    )
