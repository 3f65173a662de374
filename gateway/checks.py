"""Turns at a costly check (PBKDF2), a few at a time, the most deserving first.

A guessing flood must neither starve the gateway nor keep out the people
who know the password.  :class:`CheckQueue` bounds both the checks running at
once (``slots``: CPU) and those waiting (``capacity``: memory and wait), and
orders the waiting by a priority the caller gives: lower first, first come
first served among equals.  The password check gives an address's wrong
guesses for the room as its priority, so a newcomer (none) goes before every
address that has been guessing, and a full queue refuses the worst waiter,
never a better newcomer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator


class QueueFull(Exception):
    """No turn: ``capacity`` better (or equal) callers are waiting already."""


class CheckQueue:
    """At most ``slots`` callers inside :meth:`turn` at once; at most ``capacity`` waiting."""

    def __init__(self, slots: int, capacity: int) -> None:
        if slots < 1 or capacity < 0:
            raise ValueError(f"need slots >= 1 and capacity >= 0, got {slots}, {capacity}")
        self._free = slots
        self._capacity = capacity
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        """Wait for a turn (raises :class:`QueueFull` when refused or pushed out)."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        entry = (priority, next(self._order), asyncio.get_running_loop().create_future())
        if len(self._waiting) >= self._capacity:
            worst = max(self._waiting, default=None)
            if worst is None or worst[0] <= priority:
                raise QueueFull
            self._waiting.remove(worst)
            worst[2].set_exception(QueueFull())
        self._waiting.append(entry)
        future = entry[2]
        try:
            await future
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)
            elif future.done() and not future.cancelled() and future.exception() is None:
                self._release()  # the turn was ours, but we are gone: pass it on
            raise

    def _release(self) -> None:
        while self._waiting:
            best = min(self._waiting)
            self._waiting.remove(best)
            if not best[2].done():
                best[2].set_result(None)
                return
        self._free += 1
