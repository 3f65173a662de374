"""Giving rooms back and deleting idle ones: the scripts, and their steps on a cluster.

At shutdown every room is written back and its lease released, so another
mixer takes over at once. A room nobody has used for ``room_release_s`` is *retired*: its lease is
dropped and it leaves the active set, unless a command waits in its control
stream. A room idle (not active) for ``room_idle_delete_s`` is *deleted*
with every key, by any live mixer. On one Redis each is one script; on a
cluster the room's keys and the global sets live in different slots, so the
same steps are taken one after the other (the planner, mixer/planner.py,
decides which rooms; this module only carries it out).
"""

from __future__ import annotations

from redis.asyncio import Redis

from common import keys
from common.lease import DELETE_SCRIPT, RELEASE_SCRIPT, RETIRE_ROOM_SCRIPT, RETIRE_SCRIPT
from common.redisclient import is_cluster
from mixer import outbox
from mixer.owned import OwnedRoom

__all__ = ["Retirement"]


class Retirement:
    """Retires and deletes rooms for the mixer ``mixer_id``."""

    def __init__(self, redis: Redis, mixer_id: str) -> None:
        self.redis = redis
        self.mixer_id = mixer_id
        self._cluster = is_cluster(redis)
        self._retire = redis.register_script(RETIRE_SCRIPT)
        self._delete = redis.register_script(DELETE_SCRIPT)
        self._retire_room = redis.register_script(RETIRE_ROOM_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    async def release(self, room: str) -> None:
        """Give the lease of ``room`` back (if it is still ours)."""
        await self._release(keys=[keys.room_lease(room)], args=[self.mixer_id])

    async def hand_back(self, rooms: list[OwnedRoom], checkpoints: bool) -> None:
        """Write ``rooms`` back (with a checkpoint each, if ``checkpoints``) and release
        their leases, so another mixer takes them over now; raises RedisError."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for owned in rooms:
                outbox.queue_persist(pipe, owned)
                checkpoint = owned.host.mixer.checkpoint() if checkpoints else None
                if checkpoint is not None:
                    outbox.queue_checkpoint(pipe, owned, checkpoint)
            await pipe.execute()
        for owned in rooms:
            await self.release(owned.name)

    async def retire(self, room: str, ctl_cursor: bytes, wall_s: float) -> bool:
        """Drop our lease and leave the active set, unless a command waits past
        ``ctl_cursor``; True when the room was given back (the caller wrote its state)."""
        if self._cluster:
            return await self._retire_on_cluster(room, ctl_cursor, wall_s)
        return bool(
            await self._retire(
                keys=[
                    keys.room_lease(room),
                    keys.room_ctl(room),
                    keys.ACTIVE_ROOMS,
                    keys.IDLE_ROOMS,
                ],
                args=[self.mixer_id, room, ctl_cursor, f"{wall_s:.3f}"],
            )
        )

    async def delete(self, room: str, idle_before_s: float) -> bool:
        """Delete ``room`` with every key if it is still idle since before ``idle_before_s``."""
        if self._cluster:
            return await self._delete_on_cluster(room, idle_before_s)
        return bool(
            await self._delete(
                keys=[keys.ACTIVE_ROOMS, keys.IDLE_ROOMS, keys.ROOMS, *keys.room_keys(room)],
                args=[room, f"{idle_before_s:.3f}"],
            )
        )

    async def _retire_on_cluster(self, room: str, ctl_cursor: bytes, wall_s: float) -> bool:
        """RETIRE_SCRIPT's steps where the room's slot and the global sets differ.

        The room's own keys are checked and the lease dropped in one script; then
        the room leaves the active set, and the control stream is read again: a
        gateway writes its command before making the room active
        (common/redisclient.py), so a command that raced in re-activates it.
        """
        dropped = await self._retire_room(
            keys=[keys.room_lease(room), keys.room_ctl(room)],
            args=[self.mixer_id, ctl_cursor],
        )
        if not dropped:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.srem(keys.ACTIVE_ROOMS, room)
            pipe.zadd(keys.IDLE_ROOMS, {room: wall_s})
            await pipe.execute()
        waiting = await self.redis.xrange(keys.room_ctl(room), b"(" + ctl_cursor, "+", count=1)
        if waiting:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.sadd(keys.ACTIVE_ROOMS, room)
                pipe.zrem(keys.IDLE_ROOMS, room)
                await pipe.execute()
        return True

    async def _delete_on_cluster(self, room: str, idle_before_s: float) -> bool:
        """DELETE_SCRIPT's steps on a cluster: the global sets first, then the room's keys."""
        if await self.redis.sismember(keys.ACTIVE_ROOMS, room):
            await self.redis.zrem(keys.IDLE_ROOMS, room)
            return False
        since = await self.redis.zscore(keys.IDLE_ROOMS, room)
        if since is None or float(since) > idle_before_s:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.IDLE_ROOMS, room)
            pipe.srem(keys.ROOMS, room)
            pipe.delete(*keys.room_keys(room))
            await pipe.execute()
        return True
