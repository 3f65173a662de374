"""A concert's listeners on this gateway: admission, their tap, their room's events.

Listeners (gateway/listeners.py) join with ``role: "listener"``: no member
record, no mixer command, no calibration.  :class:`Audience` admits them
against the room's listener limit (``bb:{R}:listeners``, counted over every
gateway by :data:`gateway.listeners.COUNT_SCRIPT`), keeps the room's listener
tap alive at the mixer with a tap subscription of this gateway's own
(``subscribe_tap``, renewed every :data:`RENEW_S`), subscribes every listener
to that tap in the fan-out (one encode per window, one frame built for all of
them: gateway/fanout.py), and forwards them the room's ``state`` (its ``material``,
or just its new ``cues``, first when that changed, and no ``state`` when only that
changed: gateway/roommaterial.py), ``chat`` and ``recording`` events (not the level
meters: nobody in the audience sings).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Final

from redis.asyncio import Redis

from common import keys
from common.commands import Envelope, SubscribeTap
from common.constants import SAMPLE_RATE
from common.events import Chat, Event, Recorded, State
from common.protocol import chat_message, dumps, recording_message, state_message
from common.records import RoomMeta
from common.redisclient import REDIS_ERRORS
from common.roomview import PublicRoom
from gateway.events import Events
from gateway.fanout import Fanout
from gateway.listeners import (
    COUNT_SCRIPT,
    COUNT_TTL_MS,
    FreezePolicy,
    listener_delay,
    subscriber_id,
)
from gateway.metrics import Metrics
from gateway.roommaterial import RoomMaterial
from gateway.rooms import RoomDirectory
from gateway.session import Session

log = logging.getLogger(__name__)

RENEW_S: Final = 3.0
"""How often the listener tap subscription and this gateway's count are renewed."""
SUBSCRIBE_TTL_S: Final = 10.0
"""The tap subscription's lifetime at the mixer (renewed well before it ends)."""


class ListenersFull(Exception):
    """The room has as many listeners as its limit allows."""


@dataclass(eq=False)
class RoomAudience:
    """This gateway's listeners of one room."""

    room: str
    sessions: set[Session] = field(default_factory=set)
    state: PublicRoom | None = None
    material: RoomMaterial | None = None
    """The material of the latest state event (gateway/roommaterial.py)."""
    delay: int | None = None
    ready: asyncio.Task[None] | None = None


class Audience:
    """The listeners of every room on this gateway."""

    def __init__(
        self,
        redis: Redis,
        metrics: Metrics,
        fanout: Fanout,
        events: Events,
        rooms: RoomDirectory,
        gateway_id: str,
    ) -> None:
        self._metrics = metrics
        self._fanout = fanout
        self._events = events
        self._rooms = rooms
        self._gateway_id = gateway_id
        self._subscriber = subscriber_id(gateway_id)
        self._count = redis.register_script(COUNT_SCRIPT)
        self.rooms: dict[str, RoomAudience] = {}
        self._departed: dict[str, int] = {}
        """Listeners gone per room whose count in Redis is not lowered yet."""
        self._wake = asyncio.Event()
        self._freeze = FreezePolicy()

    @property
    def listeners(self) -> int:
        return sum(len(a.sessions) for a in self.rooms.values())

    # --- admission ------------------------------------------------------------------

    async def admit(self, session: Session, room: str, meta: RoomMeta) -> PublicRoom | None:
        """Count ``session`` in ``room``'s listeners and return the room's state.

        Raises :class:`ListenersFull` over the room's limit, RedisError when
        Redis cannot be reached (nothing is counted then).
        """
        total = await self._change(room, meta.listeners, 1)
        if total < 0:
            raise ListenersFull(f"the room has its {meta.listeners} listeners; try again later")
        audience = self.rooms.get(room)
        if audience is None:
            audience = self.rooms[room] = RoomAudience(room)
            audience.ready = asyncio.get_running_loop().create_task(self._open(audience))
        audience.sessions.add(session)
        assert audience.ready is not None
        try:
            await asyncio.shield(audience.ready)
        except BaseException:
            self.release(session)
            raise
        return audience.state

    def material(self, room: str) -> RoomMaterial | None:
        """The material of the room's latest state event seen by its listeners here."""
        audience = self.rooms.get(room)
        return audience.material if audience is not None else None

    def state(self, room: str) -> PublicRoom | None:
        """The room's latest state seen by its listeners here (None: none yet)."""
        audience = self.rooms.get(room)
        return audience.state if audience is not None else None

    def follow(self, session: Session) -> None:
        """Send the room's listener tap to ``session`` (after its ``welcome``)."""
        assert session.member is not None
        audience = self.rooms.get(session.member.room)
        if audience is not None and audience.delay is not None and session in audience.sessions:
            self._fanout.subscribe(session, audience.room, audience.delay)

    def release(self, session: Session) -> None:
        """``session`` is gone: it stops counting (written to Redis by :meth:`run`)."""
        assert session.member is not None
        room = session.member.room
        audience = self.rooms.get(room)
        if audience is None or session not in audience.sessions:
            return
        audience.sessions.discard(session)
        self._freeze.departed()
        self._departed[room] = self._departed.get(room, 0) + 1
        self._wake.set()
        if not audience.sessions and audience.ready is not None and audience.ready.done():
            self._close(audience)

    async def _open(self, audience: RoomAudience) -> None:
        """Start following a room that had no listener here: its events, state and tap."""
        room = audience.room
        try:
            await self._events.watch(room)
        except BaseException:
            self.rooms.pop(room, None)
            raise
        try:
            audience.state = await self._rooms.state(room)
            if audience.state is not None:
                audience.delay = listener_delay(audience.state)
                await self._subscribe(audience)
        except BaseException:
            self.rooms.pop(room, None)
            self._events.unwatch(room)
            raise

    def _close(self, audience: RoomAudience) -> None:
        if self.rooms.get(audience.room) is audience:
            del self.rooms[audience.room]
            self._events.unwatch(audience.room)

    async def _change(self, room: str, limit: int, delta: int) -> int:
        now_ms = int(time.time() * 1000)
        args: list[str | int] = [self._gateway_id, now_ms, COUNT_TTL_MS, limit, delta]
        result = await self._count(keys=[keys.room_listeners(room)], args=args)
        return int(result)

    async def _subscribe(self, audience: RoomAudience) -> None:
        if audience.delay is None:
            return
        envelope = Envelope(
            singer=self._subscriber,
            gw=self._gateway_id,
            cmd=SubscribeTap(delay_s=audience.delay / SAMPLE_RATE, ttl_s=SUBSCRIBE_TTL_S),
        )
        await self._events.send(audience.room, envelope)

    # --- room events ------------------------------------------------------------------

    def on_event(
        self, room: str, event: Event, material: RoomMaterial | None = None, *, quiet: bool = False
    ) -> None:
        """A room event: state moves the listeners' tap if it must; levels are not theirs.

        ``material``: a state event's (built by the hub, for members and listeners once);
        ``quiet``: that state changed only the material (listeners get no ``state``).
        """
        audience = self.rooms.get(room)
        if audience is None or not audience.sessions:
            return
        if isinstance(event, State):
            audience.state = event.state
            audience.material = material
            delay = listener_delay(event.state)
            if delay != audience.delay:
                audience.delay = delay
                for session in audience.sessions:
                    if session.joined:
                        self._fanout.subscribe(session, room, delay)
                self._wake.set()  # subscribe the new tap at once
            text = b"" if quiet else dumps(state_message(event.version, event.state)).encode()
        elif isinstance(event, Chat):
            text = dumps(chat_message(event.singer, event.name, event.text, event.clock)).encode(
                "utf-8"
            )
        elif isinstance(event, Recorded):
            text = dumps(
                recording_message(event.song, event.start_pos, event.end_pos, event.flac)
            ).encode("utf-8")
        else:
            return
        if isinstance(event, State):
            # Only the newest state matters: it replaces one still queued and leaves with
            # the next audio write, so a burst of changes costs each listener one write.
            # A new material (or cue) goes first, in the control queue (written before the
            # state), and leaves with that write too: a cue costs a concert no writes.
            for session in audience.sessions:
                if session.joined:
                    if material is not None:
                        session.send_material(material, lazy=True)
                    if text:
                        session.send_latest(text)
            return
        for session in audience.sessions:
            if session.joined:
                session.send_json(text)

    def _collector(self) -> None:
        """Keep a concert's connections out of the cyclic collector (FreezePolicy)."""
        decision = self._freeze.decide(self.listeners)
        if decision == "freeze":
            gc.freeze()
            log.info("froze %d objects (%d listeners)", gc.get_freeze_count(), self.listeners)
        elif decision == "unfreeze":
            gc.unfreeze()
            log.info("unfroze the collector (listeners left)")

    # --- renewal ------------------------------------------------------------------------

    async def run(self) -> None:
        """Renew the tap subscriptions and counts; lower the counts of those who left."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RENEW_S):
                    await self._wake.wait()
            self._wake.clear()
            self._collector()
            departed, self._departed = self._departed, {}
            for room in set(departed) | set(self.rooms):
                audience = self.rooms.get(room)
                try:
                    if departed.get(room) or (audience is not None and audience.sessions):
                        await self._change(room, 0, -departed.get(room, 0))
                    if audience is not None and audience.sessions:
                        await self._subscribe(audience)
                except REDIS_ERRORS as exc:
                    self._metrics.inc("redis_errors_total")
                    log.debug("room %s: renewing the listeners failed: %s", room, exc)
                    if departed.get(room):
                        self._departed[room] = self._departed.get(room, 0) + departed[room]
