"""The singer WebSocket (``GET /ws``): one :class:`Connection` per browser.

The connection validates everything a client sends (common/protocol.py),
joins the room through the mixer (``join`` on ``bb:{R}:ctl``, answered by a
``reply`` event), then serves audio and control until the socket closes.  A
bad message is answered with an error and counted; it never ends the
connection unless the protocol says the error is fatal, and it never touches
another singer.  Nothing a client sends can make us send a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final, cast
from urllib.parse import urlsplit

from aiohttp import WSMessage, WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from common.clock import now_samples
from common.codec import CodecError
from common.codes import Code
from common.commands import ClientCommand, Disconnect, Envelope, Join, Leave, command_name
from common.constants import constants_json
from common.errors import ValidationError
from common.events import Chat
from common.protocol import (
    CODEC_IDS,
    ChatLine,
    Hello,
    Ping,
    ProtocolError,
    RoomCommand,
    ack_message,
    limits_json,
    parse_client_message,
    parse_upstream,
    pong_message,
    welcome_message,
)
from common.records import Role
from common.redisclient import REDIS_ERRORS
from common.roomview import PublicRoom
from gateway.audience import ListenersFull
from gateway.guard import LimitReached
from gateway.hub import HUB, Hub
from gateway.metrics import DROP_REASONS
from gateway.rooms import token_digest
from gateway.session import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    Identity,
    RateLimiter,
    Session,
)
from gateway.upstream import SingerStream

log = logging.getLogger(__name__)

MAX_COMMANDS_IN_FLIGHT: Final = 8
"""Control commands a connection may have waiting for the mixer at once."""

_HEARTBEAT_S: Final = 20.0
_CLOSE_TIMEOUT_S: Final = 2.0


def origin_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    """Browsers send Origin: accept our own host and the configured origins only.

    Clients without an Origin header (the load generator, scripts) are not
    browsers and cannot be tricked into connecting by another page.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    origin = origin.strip().rstrip("/")
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in {"http", "https"} and parts.netloc.lower() == request.host.lower()


async def handle(request: web.Request) -> web.StreamResponse:
    """``GET /ws``: check the Origin, upgrade, and serve the connection."""
    hub = request.app[HUB]
    if not origin_allowed(request, hub.allowed_origins):
        log.info("refused a WebSocket from Origin %r", request.headers.get("Origin"))
        raise web.HTTPForbidden(text="origin not allowed")
    ws = web.WebSocketResponse(
        # Twice the protocol limit, so that a message over the limit gets a
        # proper too_large error; beyond that aiohttp closes with 1009 itself.
        max_msg_size=2 * hub.settings.max_message_bytes,
        # Opus does not compress; deflate would only cost CPU per frame.
        compress=False,
        heartbeat=_HEARTBEAT_S,
    )
    await ws.prepare(request)
    transport = request.transport
    session = Session(
        ws=ws,
        metrics=hub.metrics,
        audio_queue_frames=hub.settings.send_queue_frames,
        conn=hub.next_conn(),
        outbox=hub.outbox,
        # aiohttp types it as a BaseTransport; it is the connection's stream
        # transport (uvloop's too, which does not subclass asyncio's).
        transport=cast(asyncio.Transport, transport),
    )
    hub.sessions.add(session)
    hub.metrics.inc("connections_total")
    connection = Connection(hub, session)
    try:
        await connection.run()
    except (ConnectionError, RuntimeError) as exc:
        log.debug("%s: connection ended: %s", session.conn, exc)
    finally:
        await connection.finish()
        hub.sessions.discard(session)
        session.close(CLOSE_NORMAL)
        await session.wait_closed(_CLOSE_TIMEOUT_S)
    return ws


class Connection:
    """What one browser connection does, from ``hello`` to close."""

    def __init__(self, hub: Hub, session: Session) -> None:
        self.hub = hub
        self.session = session
        self.ws = session.ws
        rate = hub.settings.max_messages_per_s
        self._loop = asyncio.get_running_loop()
        self._limiter = RateLimiter(rate, rate, self._loop.time())
        self._stream: SingerStream | None = None
        self._uplink = hub.uplink()
        self._join_sent = False
        self._left = False
        self._commands: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        hello = await self._wait_hello()
        if hello is None or not await self._join(hello):
            return
        while True:
            msg = await self._receive(None)
            if msg is None:
                return
            if msg.type is WSMsgType.BINARY:
                self._on_audio(msg.data)
            else:
                await self._on_text(msg.data)

    async def finish(self) -> None:
        """Clean up after the socket closed: tell the mixer, free everything."""
        for task in self._commands:
            task.cancel()
        self.hub.detach(self.session)
        member = self.session.member
        if member is not None and member.role == "listener":
            self.hub.audience.release(self.session)
            return
        if member is None or not self._join_sent or self._left:
            return
        entry = Envelope(
            singer=member.singer,
            cmd=Disconnect(),
            gw=self.hub.settings.gateway_id,
            conn=self.session.conn,
        )
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self.hub.events.send(member.room, entry)
        except (*REDIS_ERRORS, TimeoutError) as exc:
            # The mixer marks no-shows disconnected anyway once the grace ends.
            log.warning(
                "%s: could not record the disconnect of %s: %s",
                self.session.conn,
                member.singer,
                exc,
            )

    async def _receive(self, timeout_s: float | None) -> WSMessage | None:
        """The next data message that passes the size and rate limits (None: closed)."""
        while True:
            msg = await self.ws.receive(timeout_s)
            if self.session.closed_to(msg.type):  # nothing more from a connection we closed
                return None
            if msg.type in {WSMsgType.TEXT, WSMsgType.BINARY}:
                self.hub.metrics.inc("messages_in_total")
                if len(msg.data) > self.hub.settings.max_message_bytes:
                    self.hub.metrics.drop("too_large")
                    self._fatal(
                        Code.TOO_LARGE,
                        f"message of {len(msg.data)} bytes is over the limit of "
                        f"{self.hub.settings.max_message_bytes}",
                        close_code=CLOSE_TOO_BIG,
                    )
                    return None
                if not self._limiter.allow(self._loop.time()):
                    self.hub.metrics.drop("rate_limited")
                    self._error(Code.RATE_LIMITED, "over the message rate limit; message dropped")
                    continue
                return msg
            if msg.type is WSMsgType.ERROR:
                if isinstance(msg.data, WebSocketError) and msg.data.code == CLOSE_TOO_BIG:
                    self.hub.metrics.drop("too_large")
                log.debug("%s: WebSocket error: %s", self.session.conn, msg.data)
            return None

    # --- hello and join ---------------------------------------------------------------

    async def _wait_hello(self) -> Hello | None:
        deadline = self._loop.time() + self.hub.options.hello_timeout_s
        while True:
            remaining = deadline - self._loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                msg = await self._receive(remaining)
            except TimeoutError:
                self._fatal(Code.HELLO_TIMEOUT, "no hello within the time limit")
                return None
            if msg is None:
                return None
            if msg.type is WSMsgType.BINARY:
                self.hub.metrics.drop("not_joined")
                self._error(Code.NOT_JOINED, "send hello before audio")
                continue
            try:
                message = parse_client_message(msg.data)
            except ProtocolError as exc:
                if exc.fatal:
                    self._fatal(exc.code, exc.message, req=exc.req)
                    return None
                self.hub.metrics.drop("bad_message")
                self._error(exc.code, exc.message, req=exc.req)
                continue
            if isinstance(message, Hello):
                return message
            self.hub.metrics.drop("not_joined")
            self._error(Code.NOT_JOINED, "send hello first", req=message.req)

    async def _join(self, hello: Hello) -> bool:
        if hello.role == "listener":
            return await self._listen(hello)
        hub, session = self.hub, self.session
        room = hello.room
        role = Role(hello.role)
        fresh = hello.resume is None
        try:
            meta = await hub.rooms.ensure(room, hello.password)
            if hello.resume is None:
                if not await hub.rooms.password_ok(room, meta, hello.password):
                    self._fatal(Code.BAD_PASSWORD, "wrong or missing password", req=hello.req)
                    return False
                singer, token = await hub.rooms.new_singer(room)
            else:
                # A member's resume token is its proof, checked instead of the password:
                # it never meets the password limits, so guessers cannot lock members out.
                singer, token = hello.resume.singer, hello.resume.token
                if not await hub.rooms.resume_ok(room, singer, token):
                    self._fatal(Code.BAD_RESUME, "unknown singer or wrong token", req=hello.req)
                    return False
            session.member = Identity(room, singer, hello.name, role, hello.codec)
            await hub.attach(session)
            self._join_sent = True
            reply = await hub.events.command(
                room,
                singer,
                Join(
                    name=hello.name,
                    role=role,
                    token_digest=token_digest(token),
                    password_hash=meta.password_hash,
                ),
                hub.options.reply_timeout_s,
                conn=session.conn,
            )
        except LimitReached as exc:
            self._fatal(Code.RATE_LIMITED, str(exc), req=hello.req, fatal=True)
            return False
        except (*REDIS_ERRORS, ValidationError) as exc:
            # ValidationError: a room's meta or password hash in Redis is corrupt.
            self._unreachable("join of", room, exc, hello.req)
            return False
        if reply is None:
            self._fatal(
                Code.UNAVAILABLE,
                "the room's mixer did not answer; retry",
                req=hello.req,
                fatal=True,
            )
            return False
        if not reply.ok:
            self._join_sent = False
            if fresh:
                with contextlib.suppress(*REDIS_ERRORS):
                    await hub.rooms.forget_token(room, singer)
            self._fatal(
                _code(reply.code),
                reply.message or "the room refused the join",
                req=hello.req,
                fatal=True,
            )
            return False
        try:
            state = hub.state_with(room, singer) or await hub.rooms.state(room)
        except REDIS_ERRORS:
            state = None
        self._welcome(singer, token, state)
        session.joined = True
        hub.metrics.inc("joins_total")
        self._stream = SingerStream(room, singer, CODEC_IDS[hello.codec])
        hub.follow_tap(session, state)
        log.debug("%s: %s joined %s as %s", session.conn, singer, room, hello.role)
        return True

    async def _listen(self, hello: Hello) -> bool:
        """Join as a listener: no member, no mixer command, the room's listener tap at once.

        The room must exist (a listen link names a concert); its password, if
        any, is checked as for members; its listener limit is its own
        (gateway/listeners.py), refused with ``listeners_full``.
        """
        hub, session = self.hub, self.session
        room = hello.room
        try:
            meta = await hub.rooms.meta(room)
            if meta is None:
                self._fatal(Code.BAD_ROOM, f"no room named {room} to listen to", req=hello.req)
                return False
            if not await hub.rooms.password_ok(room, meta, hello.password):
                self._fatal(Code.BAD_PASSWORD, "wrong or missing password", req=hello.req)
                return False
            listener = f"l-{session.conn}"
            session.member = Identity(room, listener, hello.name, "listener", hello.codec)
            state = await hub.audience.admit(session, room, meta)
        except ListenersFull as exc:
            hub.metrics.drop("listeners_full")
            self._fatal(Code.LISTENERS_FULL, str(exc), req=hello.req)
            return False
        except LimitReached as exc:
            self._fatal(Code.RATE_LIMITED, str(exc), req=hello.req, fatal=True)
            return False
        except (*REDIS_ERRORS, ValidationError) as exc:
            self._unreachable("listening to", room, exc, hello.req)
            return False
        self._welcome(session.member.singer, "", state)
        session.joined = True
        hub.metrics.inc("listeners_joined_total")
        hub.audience.follow(session)
        return True

    def _welcome(self, singer: str, token: str, state: PublicRoom | None) -> None:
        hub, member = self.hub, self.session.member
        assert member is not None
        if state is not None:
            # Before the first state that names its version (gateway/roommaterial.py).
            self.session.send_material(hub.material_for(member.room, state))
        self.session.send_json(
            welcome_message(
                room=member.room,
                singer=singer,
                token=token,
                clock=now_samples(),
                constants={
                    **constants_json(),
                    **limits_json(hub.settings.max_message_bytes, hub.settings.max_messages_per_s),
                    "reconnect_grace_s": hub.settings.reconnect_grace_s,
                },
                state=state,
            ),
            urgent=True,
        )

    # --- joined: text -------------------------------------------------------------

    async def _on_text(self, text: str) -> None:
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            self.hub.metrics.drop("bad_message")
            self._error(exc.code, exc.message, req=exc.req)
            return
        if isinstance(message, Ping):
            self.session.send_json(pong_message(message, now_samples()), urgent=True)
        elif self._listener:
            self.hub.metrics.drop("listener")
            self._error(Code.LISTENER, "a listener only listens", req=message.req)
        elif isinstance(message, Hello):
            self._error(Code.ALREADY_JOINED, "this connection has already joined", req=message.req)
        elif isinstance(message, RoomCommand) and isinstance(message.cmd, Leave):
            await self._leave(message.req)
        elif isinstance(message, RoomCommand):
            self._track(self._command(message.cmd, message.req))
        elif isinstance(message, ChatLine):
            self._track(self._chat(message))

    def _track(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        if len(self._commands) >= MAX_COMMANDS_IN_FLIGHT:
            coro.close()
            self.hub.metrics.drop("busy")
            self._error(Code.RATE_LIMITED, "too many commands waiting for the room; retry")
            return
        task = asyncio.create_task(coro)
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def _command(self, cmd: ClientCommand, req: int | None) -> None:
        member = self.session.member
        assert member is not None
        name = command_name(cmd)
        try:
            reply = await self.hub.events.command(
                member.room, member.singer, cmd, self.hub.options.reply_timeout_s
            )
        except REDIS_ERRORS as exc:
            log.debug("%s: %s failed: %s", self.session.conn, name, exc)
            reply = None
        if reply is None:
            self.hub.metrics.drop("unavailable")
            self._error(
                Code.UNAVAILABLE, f"{name}: the room's mixer did not answer; retry", req=req
            )
        elif not reply.ok:
            self._error(_code(reply.code), reply.message or f"{name} was refused", req=req)
        elif req is not None:
            self.session.send_json(ack_message(req), urgent=True)

    async def _chat(self, chat: ChatLine) -> None:
        member = self.session.member
        assert member is not None
        event = Chat(singer=member.singer, name=member.name, text=chat.text, clock=now_samples())
        try:
            await self.hub.events.post(member.room, event)
        except REDIS_ERRORS:
            self._error(Code.UNAVAILABLE, "chat could not be posted; retry", req=chat.req)
            return
        self.hub.metrics.inc("chat_total")
        if chat.req is not None:
            self.session.send_json(ack_message(chat.req), urgent=True)

    async def _leave(self, req: int | None) -> None:
        member = self.session.member
        assert member is not None
        try:
            await self.hub.events.command(
                member.room, member.singer, Leave(), self.hub.options.reply_timeout_s
            )
            await self.hub.rooms.forget_token(member.room, member.singer)
        except REDIS_ERRORS as exc:
            log.debug("%s: leave failed: %s", self.session.conn, exc)
        else:
            self._left = True
        if req is not None:
            self.session.send_json(ack_message(req), urgent=True)
        self.session.close(CLOSE_NORMAL, "left")

    # --- joined: audio ------------------------------------------------------------

    def _on_audio(self, data: bytes) -> None:
        hub, session, stream = self.hub, self.session, self._stream
        assert session.member is not None
        if self._listener:
            hub.metrics.drop("listener")
            self._error(Code.LISTENER, "a listener is not a member: it only listens")
            return
        assert stream is not None
        if session.member.role == "spectator":
            hub.metrics.drop("spectator")
            self._error(Code.SPECTATOR, "spectators cannot send audio")
            return
        try:
            chunk = stream.accept(parse_upstream(data), now_samples())
        except ProtocolError as exc:
            hub.metrics.drop(str(exc.code) if str(exc.code) in DROP_REASONS else "bad_audio")
            self._error(exc.code, exc.message)
            return
        if chunk.reset:
            hub.metrics.inc("decoder_resets_total")
        if self._uplink.submit(stream, chunk, self._on_codec_error):
            hub.metrics.inc("chunks_in_total")
            hub.metrics.inc("samples_in_total", chunk.message.samples)
        else:
            self._error(Code.UNAVAILABLE, "the gateway is overloaded; audio dropped")

    def _on_codec_error(self, exc: CodecError) -> None:
        self._error(Code.BAD_AUDIO, f"audio could not be decoded: {exc}")

    @property
    def _listener(self) -> bool:
        member = self.session.member
        return member is not None and member.role == "listener"

    # --- errors -------------------------------------------------------------------

    def _error(self, code: Code, message: str, *, req: int | None = None) -> None:
        self.session.send_error(code, message, req=req, now=self._loop.time())

    def _unreachable(self, what: str, room: str, exc: Exception, req: int | None) -> None:
        """Redis failed (or held a corrupt record) while a client came in: logged, and
        the client told to retry."""
        log.warning("%s: %s room %s failed: %s", self.session.conn, what, room, exc)
        self._fatal(
            Code.UNAVAILABLE, "the room cannot be reached right now; retry", req=req, fatal=True
        )

    def _fatal(
        self,
        code: Code,
        message: str,
        *,
        req: int | None = None,
        fatal: bool | None = None,
        close_code: int = CLOSE_POLICY,
    ) -> None:
        self.session.send_error(code, message, req=req, fatal=fatal)
        self.session.close(close_code, str(code))


def _code(code: Code | None) -> Code:
    """A mixer's refusal code (``unavailable`` if it gave none)."""
    return Code.UNAVAILABLE if code is None else code
