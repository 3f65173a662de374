"""What the mixer writes for one owned room, queued on the caller's pipeline.

A tick's step (taps, records, events, the periodic snapshots, the input
stream's trim), the room's whole state before it leaves this mixer, and the
failover checkpoint (mixer/store.py holds the record layouts).
"""

from __future__ import annotations

import time
from typing import Any, Final

import msgspec

from common import keys
from common.records import Checkpoint
from common.settings import MixerSettings
from mixer import store
from mixer.host import Publish
from mixer.owned import OwnedRoom
from mixer.planner import trim_from

__all__ = ["CHECKPOINT_TTL_MS", "queue_checkpoint", "queue_persist", "queue_rewrite", "queue_step"]

CHECKPOINT_TTL_MS: Final = 30_000
"""A checkpoint outlives its owner long enough for another mixer to take the room over."""


def queue_step(
    pipe: Any, owned: OwnedRoom, out: Publish, now: int, read_ctl: bool, settings: MixerSettings
) -> None:
    """Write one room's step: taps, records, events, and the periodic snapshots."""
    store.queue_step(pipe, owned.name, owned.state, owned.ctl_cursor, out, now, read_ctl)
    store.queue_published(pipe, owned.name, out, now, settings)
    if out.checkpoint is not None:
        queue_checkpoint(pipe, owned, out.checkpoint)
    if out.stats is not None:
        song = owned.state.song
        keep_from = trim_from(
            owned.in_cursor,
            owned.checkpoint_cursor,
            has_ring=owned.host.mixer.ring is not None,
            keeps_stems=song.running and song.recording.stems,
            wall_ms=int(time.time() * 1000),
        )
        pipe.xtrim(keys.room_in(owned.name), minid=keep_from, approximate=True)


def queue_persist(pipe: Any, owned: OwnedRoom) -> None:
    """Write the room's whole state (before it leaves this mixer)."""
    removed = owned.host.persisted_ids - set(owned.state.members)
    store.queue_persist(pipe, owned.name, owned.state, owned.ctl_cursor, removed)


def queue_rewrite(pipe: Any, owned: OwnedRoom) -> None:
    """Write the room back whole, meta included, after its lease vanished (Redis lost
    it, perhaps with everything else); its pages get a fresh state event next tick."""
    store.queue_meta(pipe, owned.name, owned.state, owned.host.meta)
    pipe.sadd(keys.ACTIVE_ROOMS, owned.name)  # we hold it: it is in use
    store.queue_persist(pipe, owned.name, owned.state, owned.ctl_cursor, set())
    owned.host.resync()
    owned.host.mixer.checkpoint_lost()  # the checkpoint list went with the rest


def queue_checkpoint(pipe: Any, owned: OwnedRoom, checkpoint: Checkpoint) -> None:
    """Append the failover checkpoint's next entry, stamped with the input cursor it covers."""
    # Everything up to the input cursor is in it: a new owner replays what came after.
    stamped = msgspec.structs.replace(checkpoint, in_cursor=owned.in_cursor.decode())
    owned.checkpoint_cursor = owned.in_cursor
    store.queue_checkpoint(
        pipe, owned.name, stamped, owned.host.timing.checkpoint, CHECKPOINT_TTL_MS
    )
