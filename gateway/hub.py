"""The state of one gateway process, and the background tasks that serve it.

A :class:`Hub` is created per application (no module globals): it holds the
Redis client, the counters, the sessions by room, the latest room state seen,
the codec worker and the outbox, and the long-running tasks (events reader,
tap fan-out, uplinks, heartbeat).  Connections (gateway/ws.py) call into it;
it never calls into a connection except through the sessions' non-blocking
send methods.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from redis.asyncio import Redis

from common.events import Chat, Event, Levels, Recorded, State
from common.heartbeat import Heartbeat
from common.protocol import (
    chat_message,
    dumps,
    levels_message,
    recording_message,
    state_message,
)
from common.records import GatewayStatus, Mix, Role
from common.redisclient import REDIS_ERRORS
from common.roomview import PublicRoom
from common.settings import GatewaySettings
from gateway.audience import Audience
from gateway.events import Events
from gateway.fanout import Fanout
from gateway.guard import Guard, Limits
from gateway.metrics import Metrics, RoomFigures
from gateway.outbox import Outbox
from gateway.roommaterial import RoomMaterial, follow, only_material
from gateway.rooms import RoomDirectory
from gateway.session import Session, connection_ids
from gateway.upstream import Uplink
from gateway.worker import CodecWorker

log = logging.getLogger(__name__)


_GATEWAY_SET_RETENTION_S: Final = 60.0
"""Entries of ``bb:gateways`` older than this are pruned by any live gateway."""


@dataclass(frozen=True, slots=True)
class Options:
    """Timings and knobs that are not operator settings (tests shorten them)."""

    hello_timeout_s: float = 10.0
    reply_timeout_s: float = 5.0
    codec_threads: int = 0
    """0: codec work on the event loop in 1 ms slices; N: in N threads (gateway/worker.py)."""


@dataclass(slots=True)
class RoomView:
    """The latest ``state`` event seen for a room, serialised once for all sessions."""

    version: int
    state: PublicRoom
    taps: dict[str, tuple[int, Mix]]
    """Singer -> the tap (delay, mix) they hear."""
    material: RoomMaterial
    """The room's material in that state, its ``material`` message built once."""


class Hub:
    """Everything one gateway process shares between its connections."""

    def __init__(self, settings: GatewaySettings, redis: Redis, options: Options) -> None:
        self.settings = settings
        self.options = options
        self.redis = redis
        self.metrics = Metrics()
        self.beat = Heartbeat.gateway(settings.gateway_id, settings.heartbeat_ttl_ms)
        self.rooms = RoomDirectory(
            redis,
            settings.default_capacity,
            Guard(redis, Limits.from_settings(settings), self.metrics),
            settings.default_listeners,
        )
        self.events = Events(redis, self.metrics, settings.gateway_id, self._on_event)
        self.worker = CodecWorker(options.codec_threads)
        self.fanout = Fanout(
            redis,
            self.metrics,
            self.worker,
            period_ms=settings.downstream_ms,
            listener_period_ms=settings.listener_downstream_ms,
        )
        self.uplinks = [
            Uplink(redis, self.metrics, self.worker, maxlen=settings.in_maxlen)
            for _ in range(max(1, options.codec_threads))
        ]
        self.outbox = Outbox()
        self.audience = Audience(
            redis, self.metrics, self.fanout, self.events, self.rooms, settings.gateway_id
        )
        self.sessions: set[Session] = set()
        self.by_room: dict[str, set[Session]] = {}
        self.views: dict[str, RoomView] = {}
        self.late_writes: dict[str, int] = {}
        self.next_conn = connection_ids()
        self._uplink_turn = 0
        self.allowed_origins = frozenset(
            origin.strip().rstrip("/")
            for origin in settings.allowed_origins.split(",")
            if origin.strip()
        )

    # --- sessions ------------------------------------------------------------------

    async def attach(self, session: Session) -> None:
        """Start delivering ``session``'s room events to it; raises RedisError."""
        assert session.member is not None
        room = session.member.room
        await self.events.watch(room)
        self.by_room.setdefault(room, set()).add(session)

    def detach(self, session: Session) -> None:
        self.fanout.unsubscribe(session)
        if session.member is None:
            return
        room = session.member.room
        members = self.by_room.get(room)
        if members is None or session not in members:
            return
        members.discard(session)
        self.events.unwatch(room)
        if not members:
            del self.by_room[room]
            self.views.pop(room, None)
            self.late_writes.pop(room, None)

    def uplink(self) -> Uplink:
        """The uplink for a new connection (round robin)."""
        self._uplink_turn += 1
        return self.uplinks[self._uplink_turn % len(self.uplinks)]

    def follow_tap(self, session: Session, state: PublicRoom | None) -> None:
        """Subscribe ``session`` to its member's delay in ``state`` (if listed)."""
        if session.member is None or not session.joined or state is None:
            return
        tap = state.taps_heard().get(session.member.singer)
        if tap is not None:
            self.fanout.subscribe(session, session.member.room, *tap)

    def state_with(self, room: str, singer: str) -> PublicRoom | None:
        """The latest state event seen for ``room`` if it already lists ``singer``."""
        view = self.views.get(room)
        return view.state if view is not None and singer in view.taps else None

    def material_for(self, room: str, state: PublicRoom) -> RoomMaterial:
        """The material of ``state`` (a session's first), the room's own when it is the same."""
        return follow(self._material(room), state)

    def _material(self, room: str) -> RoomMaterial | None:
        view = self.views.get(room)
        return view.material if view is not None else self.audience.material(room)

    def _state(self, room: str) -> PublicRoom | None:
        view = self.views.get(room)
        return view.state if view is not None else self.audience.state(room)

    def close_all(self, code: int, reason: str) -> None:
        for session in list(self.sessions):
            session.close(code, reason)

    # --- room events --------------------------------------------------------------

    def _on_event(self, room: str, event: Event) -> None:
        # Built once for members and listeners alike, and only when it changed.
        material = None
        quiet = False
        if isinstance(event, State) and (room in self.by_room or room in self.audience.rooms):
            material = follow(self._material(room), event.state)
            # A change of the material only (a cue, new lyrics): the pages get the material
            # (or its cues) and no state; the view below still moves on.
            quiet = only_material(self._state(room), event.state)
        self.audience.on_event(room, event, material, quiet=quiet)
        sessions = [s for s in self.by_room.get(room, ()) if s.joined]
        if isinstance(event, State) and material is not None:
            view = RoomView(event.version, event.state, event.state.taps_heard(), material)
            if room in self.by_room:
                # A room watched only for an upload's reply keeps no view: nothing would
                # drop it, and GET /api/rooms/{room} would serve it stale.
                self.views[room] = view
            text = None if quiet else dumps(state_message(event.version, event.state)).encode()
            for session in sessions:
                session.send_material(material)
                if text is not None:
                    session.send_json(text)
                tap = view.taps.get(session.member.singer) if session.member else None
                if tap is not None and tap != (session.delay, session.mix):
                    self.fanout.subscribe(session, room, *tap)
        elif isinstance(event, Chat):
            text = dumps(chat_message(event.singer, event.name, event.text, event.clock)).encode(
                "utf-8"
            )
            for session in sessions:
                session.send_json(text)
        elif isinstance(event, Levels):
            text = dumps(levels_message(event.clock, event.levels)).encode("utf-8")
            for session in sessions:
                session.send_latest(text)
        elif isinstance(event, Recorded):
            text = dumps(
                recording_message(event.song, event.start_pos, event.end_pos, event.flac)
            ).encode("utf-8")
            for session in sessions:
                session.send_json(text)

    # --- figures --------------------------------------------------------------------

    def room_figures(self) -> dict[str, RoomFigures]:
        figures: dict[str, RoomFigures] = {}
        for room, sessions in self.by_room.items():
            roles = [s.member.role for s in sessions if s.member is not None]
            view = self.views.get(room)
            figures[room] = RoomFigures(
                singers=roles.count(Role.SINGER),
                spectators=roles.count(Role.SPECTATOR),
                late_writes=self.late_writes.get(room),
                members=len(view.taps) if view is not None else None,
            )
        return figures

    def gauges(self) -> dict[str, float]:
        return {
            "connections": len(self.sessions),
            "joined_sessions": sum(1 for s in self.sessions if s.joined),
            "listeners": self.audience.listeners,
            "rooms": len(self.by_room),
            "taps": self.fanout.taps,
            "push_queue": sum(uplink.queued for uplink in self.uplinks),
            "send_queue_frames": sum(s.queued_frames for s in self.sessions),
        }

    # --- background tasks -----------------------------------------------------------

    def background(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The coroutines to run for the process's lifetime, with their names."""
        return [
            ("events", self.events.run()),
            ("fanout", self.fanout.run()),
            ("audience", self.audience.run()),
            *((f"uplink{i}", uplink.run()) for i, uplink in enumerate(self.uplinks)),
            ("heartbeat", self._heartbeat()),
        ]

    async def _heartbeat(self) -> None:
        """Announce this gateway (``bb:gateway:{id}``, ``bb:gateways``) and refresh figures."""
        settings, beat = self.settings, self.beat
        scheme = "https" if settings.tls_cert else "http"
        while True:
            status = GatewayStatus(
                id=settings.gateway_id,
                url=f"{scheme}://{settings.host}:{settings.port}",
                connections=len(self.sessions),
                counters=self.metrics.snapshot(),
            )
            try:
                now = time.time()
                await beat.beat(self.redis, status, now, now - _GATEWAY_SET_RETENTION_S)
                self.late_writes.update(await self.rooms.late_writes(list(self.by_room)))
            except REDIS_ERRORS as exc:
                self.metrics.inc("redis_errors_total")
                log.debug("heartbeat failed: %s", exc)
            await asyncio.sleep(beat.ttl_ms / 3000)

    async def drop_heartbeat(self) -> None:
        """Withdraw this gateway's heartbeat at shutdown (so its id is free at once)."""
        try:
            await self.beat.drop(self.redis)
        except REDIS_ERRORS as exc:
            log.debug("could not withdraw the heartbeat: %s", exc)

    async def close(self) -> None:
        """Stop the codec threads, if any (the tasks are cancelled by the app)."""
        self.outbox.close()
        self.worker.close()


HUB: Final = web.AppKey("hub", Hub)
"""Where the application keeps its hub."""
