"""Room events in, control commands out (``bb:{R}:events``, ``bb:{R}:ctl``).

One task XREADs the events streams of every room with a local session and
hands each event to a callback; ``reply`` events that answer this gateway's
commands resolve the waiting :meth:`Events.command` call instead.  A room is
watched from the entry that was last when :meth:`Events.watch` returned, so a
reply to a command sent after ``watch`` can never be missed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Final

from redis.asyncio import Redis

from common import keys
from common.commands import AnyCommand, Envelope, encode_envelope
from common.errors import ValidationError
from common.events import Chat, Event, Reply, decode_event, encode_event
from common.redisclient import REDIS_ERRORS, command_room, xread_keys
from common.streams import newest_id, parse_xread
from gateway.metrics import Metrics
from gateway.retry import back_off

log = logging.getLogger(__name__)


_BLOCK_MS: Final = 100
"""XREAD BLOCK: also the longest wait before a newly watched room is read."""

_MAX_EVENT_BYTES: Final = 1 << 20


EventHandler = Callable[[str, Event], None]


class Events:
    """Watches rooms' event streams and sends control commands to their mixers."""

    def __init__(
        self, redis: Redis, metrics: Metrics, gateway_id: str, on_event: EventHandler
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._gateway_id = gateway_id
        self._on_event = on_event
        self._cursors: dict[str, bytes] = {}
        self._watchers: dict[str, int] = {}
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._reqs = itertools.count(1)
        self._changed = asyncio.Event()

    async def watch(self, room: str) -> None:
        """Follow ``room``'s events from now on (reference-counted); raises RedisError."""
        if room not in self._watchers:
            newest = await self._redis.xrevrange(keys.room_events(room), count=1)
            # "0-0" when the stream is empty: everything that arrives later is new.
            self._cursors.setdefault(room, newest_id(newest))
            self._changed.set()
        self._watchers[room] = self._watchers.get(room, 0) + 1

    def unwatch(self, room: str) -> None:
        count = self._watchers.get(room, 0) - 1
        if count > 0:
            self._watchers[room] = count
        else:
            self._watchers.pop(room, None)
            self._cursors.pop(room, None)

    @property
    def rooms(self) -> list[str]:
        return list(self._watchers)

    async def command(
        self, room: str, singer: str, cmd: AnyCommand, timeout_s: float, *, conn: str = ""
    ) -> Reply | None:
        """Send ``cmd`` for ``singer`` and wait for the mixer's reply (None on timeout).

        Raises RedisError when the command cannot be written.
        """
        req = next(self._reqs)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            envelope = Envelope(singer=singer, cmd=cmd, gw=self._gateway_id, req=req, conn=conn)
            await self.send(room, envelope)
            self._metrics.inc("control_total")
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return None
        finally:
            self._pending.pop(req, None)

    async def send(self, room: str, envelope: Envelope) -> None:
        """Append a control entry without waiting for a reply; raises RedisError.

        The room joins the active set with it (common/redisclient.py): a mixer
        claims it (or keeps it), and one retiring it never leaves the command waiting.
        """
        await command_room(self._redis, room, encode_envelope(envelope))

    async def post(self, room: str, event: Chat) -> None:
        """Append an event (chat) to the room's events stream; raises RedisError."""
        await self._redis.xadd(
            keys.room_events(room), {b"d": encode_event(event)}, maxlen=keys.EVENTS_MAXLEN
        )

    async def run(self) -> None:
        """Read events forever; Redis errors back off and retry."""
        failures = 0
        while True:
            if not self._cursors:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams = {keys.room_events(room): cursor for room, cursor in self._cursors.items()}
            try:
                reply = parse_xread(
                    await xread_keys(self._redis, streams, count=200, block_ms=_BLOCK_MS)
                )
            except (*REDIS_ERRORS, ValidationError) as exc:
                failures += 1
                await back_off(self._metrics, failures, "reading room events", exc)
                continue
            failures = 0
            for key, entries in reply:
                room = _room_of(key)
                if room not in self._cursors:
                    continue  # unwatched while we were reading
                for entry_id, data in entries:
                    self._cursors[room] = entry_id
                    self._handle(room, data)

    def _handle(self, room: str, data: object) -> None:
        self._metrics.inc("events_in_total")
        try:
            event = decode_event(data)
        except ValidationError as exc:
            log.debug("room %s: skipping a bad event: %s", room, exc)
            return
        if isinstance(event, Reply):
            if event.gw == self._gateway_id:
                future = self._pending.get(event.req)
                if future is not None and not future.done():
                    future.set_result(event)
            return
        try:
            self._on_event(room, event)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # A malformed event must not stop the reader for every other room.
            log.warning(
                "room %s: could not dispatch a %s event: %s", room, type(event).__name__, exc
            )


def _room_of(key: str) -> str:
    # bb:{ROOM}:events; room names cannot contain braces (common.names).
    return key[key.index("{") + 1 : key.index("}")]
