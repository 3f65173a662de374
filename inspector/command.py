"""``brigade inspect [ROOM]``: what the mixers, gateways, recorders and keepers keep in Redis.

Without ROOM: the live mixers, gateways, recorders and keepers and one line per room. With ROOM:
its owner and lease, meta, song, members (delays, late counts), taps,
streams, stats and the ring's occupancy as a chart. ``--watch`` redraws it
every few seconds until Ctrl-C; ``--json`` prints the data for scripts.

Read-only: every key it reads is documented in docs/redis.md. A refresh is
two pipelined round trips: one to learn the names (rooms, mixers, members,
tap streams), one to read everything they point to; then the recorders and
the keepers, which keep no registry: a bounded SCAN for their heartbeat keys
and one pipelined read of them, per kind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import keys, records, redisclient
from common.constants import SAMPLE_RATE
from common.errors import ValidationError, WireError
from common.listening import listeners
from common.names import check_room
from common.records import (
    GatewayStatus,
    KeeperStatus,
    LiveCounters,
    Material,
    Member,
    MixerStatus,
    RecorderStatus,
    Song,
)
from common.redisclient import REDIS_ERRORS
from common.settings import DEFAULT_REDIS_URL
from common.streams import Entry, parse_entries
from common.wire import decode_tap
from inspector.view import (
    PENDING_LIMIT,
    Occupancy,
    Overview,
    ProcessInfo,
    RoomDetail,
    RoomSummary,
    StreamInfo,
    TapInfo,
    render_overview,
    render_room,
    to_json,
)

SCAN_COUNT: Final = 1000
MAX_SCAN_CALLS: Final = 100
"""Bound on SCAN round trips for one room's stale tap streams."""
CLEAR_SCREEN: Final = "\x1b[H\x1b[2J"
_ENTRY_ID: Final = re.compile(rb"[0-9]{1,20}-[0-9]{1,20}")
_R = TypeVar("_R")


class UnknownRoom(LookupError):
    """The room has no trace in Redis (not in bb:rooms, no meta, members or song)."""


# --- gathering -------------------------------------------------------------------------------


def connect(url: str) -> redis.Redis:
    """A sync client with RESP2 pinned (bytes replies, shapes common/streams.py expects)."""
    return redisclient.sync_client(url, socket_timeout=3, socket_connect_timeout=2)


def gather_overview(client: redis.Redis, url: str) -> Overview:
    """Mixers, gateways and a summary of every room in ``bb:rooms``."""
    with client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.smembers(keys.ROOMS)
        pipe.zrange(keys.MIXERS, 0, -1, withscores=True)
        pipe.zrange(keys.GATEWAYS, 0, -1, withscores=True)
        now, rooms_raw, mixers_raw, gateways_raw = pipe.execute()
    now_us = _now_us(now)
    rooms = sorted(_text(r) for r in rooms_raw)
    mixers = [(_text(m), float(score)) for m, score in mixers_raw]
    gateways = [(_text(g), float(score)) for g, score in gateways_raw]
    with client.pipeline(transaction=False) as pipe:
        for mixer_id, _ in mixers:
            pipe.get(keys.mixer_heartbeat(mixer_id))
        for gateway_id, _ in gateways:
            pipe.get(keys.gateway_heartbeat(gateway_id))
        for room in rooms:
            pipe.get(keys.room_lease(room))
            pipe.pttl(keys.room_lease(room))
            pipe.hgetall(keys.room_members(room))
            pipe.hget(keys.room_song(room), "state")
            pipe.xlen(keys.room_in(room))
        replies = iter(pipe.execute())
    now_s = now_us / 1e6
    mixer_infos = [
        _process_info(m, next(replies), MixerStatus, age_s=now_s - score) for m, score in mixers
    ]
    gateway_infos = [
        _process_info(g, next(replies), GatewayStatus, age_s=now_s - score) for g, score in gateways
    ]
    summaries = [_room_summary(room, replies) for room in rooms]
    recorders = _unregistered(client, keys.recorder_heartbeat("*"), RecorderStatus)
    keepers = _unregistered(client, keys.keeper_heartbeat("*"), KeeperStatus)
    return Overview(
        _shown_url(url), now_us, mixer_infos, gateway_infos, summaries, recorders, keepers
    )


def _unregistered(
    client: redis.Redis, pattern: str, kind: type[RecorderStatus | KeeperStatus]
) -> list[ProcessInfo]:
    """Every heartbeat key of a kind that keeps no registry (recorders, keepers): a
    bounded SCAN for ``pattern``, then one pipelined read of the keys found."""
    prefix = pattern.removesuffix("*")
    found: set[str] = set()
    cursor: Any = 0
    for _ in range(MAX_SCAN_CALLS):
        cursor, batch = client.scan(cursor, match=pattern, count=SCAN_COUNT, _type="string")
        # Not the keeper's per-master markers, bb:keeper:{N} (no id has braces).
        found.update(k for k in map(_text, batch) if "{" not in k.removeprefix(prefix))
        if not cursor:
            break
    names = sorted(found)
    with client.pipeline(transaction=False) as pipe:
        for key in names:
            pipe.get(key)
            pipe.pttl(key)
        replies = iter(pipe.execute())
    infos = []
    for key in names:
        raw, pttl = next(replies), next(replies)
        expires = pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None
        infos.append(_process_info(key.removeprefix(prefix), raw, kind, expires_in_s=expires))
    return infos


def _scan_streams(client: redis.Redis, prefix: str) -> set[str]:
    """The stream keys starting with ``prefix`` (one room's: one slot), by bounded SCAN.

    On a cluster SCAN goes to the node holding the room's slot (a SCAN sent
    anywhere else would miss its keys).
    """
    options: dict[str, Any] = {}
    if redisclient.is_cluster(client):
        options["target_nodes"] = cast(SyncRedisCluster, client).get_node_from_key(prefix)  # type: ignore[no-untyped-call]
    found: set[str] = set()
    cursor = 0
    for _ in range(MAX_SCAN_CALLS):
        cursor, more = client.scan(
            cursor, match=prefix + "*", count=SCAN_COUNT, _type="stream", **options
        )
        found.update(_text(k) for k in more)
        if not cursor:
            break
    return found


def gather_room(client: redis.Redis, url: str, room: str) -> RoomDetail:
    """One room in detail; raises UnknownRoom when Redis has no trace of it."""
    tap_prefix = keys.room_tap(room, 0)[:-1]  # bb:{R}:tap: (full) and bb:{R}:tap:solo:
    with client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.sismember(keys.ROOMS, room)
        pipe.hgetall(keys.room_meta(room))
        pipe.hgetall(keys.room_members(room))
        pipe.hgetall(keys.room_song(room))
        now, registered, meta_raw, members_raw, song_raw = pipe.execute()
    if not (registered or meta_raw or members_raw or song_raw):
        raise UnknownRoom(f"room {room!r} not found (not in {keys.ROOMS}, no meta/members/song)")
    tap_keys = _scan_streams(client, tap_prefix)

    now_us = _now_us(now)
    now_pos = now_us * SAMPLE_RATE // 1_000_000
    problems: list[str] = []
    members, bad_members = _members(members_raw)
    in_use: set[tuple[int, str]] = set(listeners(members))
    delays = set(in_use)
    for key in tap_keys:
        mix, _, number = key.removeprefix(tap_prefix).rpartition(":")
        if number.isdigit() and mix in ("", "solo"):
            delays.add((int(number), mix or "full"))
    song, song_version, ctl_applied = _song(song_raw, problems)
    material = _material(song_raw, problems)
    blob_ids = [t.id for t in material.tracks] if material else []
    if material is not None and material.image is not None:
        blob_ids.append(material.image.id)
    stream_names = {
        "in": keys.room_in(room),
        "ctl": keys.room_ctl(room),
        "events": keys.room_events(room),
    }

    with client.pipeline(transaction=False) as pipe:
        pipe.get(keys.room_lease(room))
        pipe.pttl(keys.room_lease(room))
        for key in stream_names.values():
            pipe.xlen(key)
            pipe.xrange(key, count=1)
            pipe.xrevrange(key, count=1)
        if ctl_applied is not None:
            pipe.xrange(keys.room_ctl(room), min=f"({ctl_applied}", count=PENDING_LIMIT)
        for delay, mix in sorted(delays):
            pipe.xlen(keys.room_tap(room, delay, mix))
            pipe.xrevrange(keys.room_tap(room, delay, mix), count=1)
        pipe.get(keys.room_occupancy(room))
        pipe.hgetall(keys.room_stats(room))
        for blob_id in blob_ids:
            kind = keys.room_track if blob_id.startswith("t-") else keys.room_image
            pipe.pttl(kind(room, blob_id))
        replies = iter(pipe.execute())

    owner_raw, pttl = next(replies), next(replies)
    streams = [
        _stream_info(name, key, now_us, next(replies), next(replies), next(replies))
        for name, key in stream_names.items()
    ]
    ctl_pending = len(parse_entries(next(replies))) if ctl_applied is not None else None
    taps = [
        _tap_info(room, tap, tap in in_use, now_us, now_pos, next(replies), next(replies))
        for tap in sorted(delays)
    ]
    occupancy = _occupancy(next(replies), problems)
    stats_raw = dict(next(replies))
    live = _live_counters(stats_raw.pop(b"members", None), problems)
    stats = {_text(k): _text(v) for k, v in stats_raw.items()}
    members = [live.apply(m) for m in members]
    blob_ttl_ms = {blob_id: _pttl(next(replies)) for blob_id in blob_ids}
    meta = {_text(k): _text(v) for k, v in meta_raw.items()}
    password_set = bool(meta.pop("password_hash", ""))
    return RoomDetail(
        name=room,
        redis_url=_shown_url(url),
        now_us=now_us,
        registered=bool(registered),
        owner=_text(owner_raw) if owner_raw is not None else None,
        lease_ttl_ms=_pttl(pttl),
        meta=meta,
        password_set=password_set,
        song=song,
        song_version=song_version,
        ctl_applied=ctl_applied,
        ctl_pending=ctl_pending,
        members=members,
        bad_members=bad_members,
        taps=taps,
        streams=streams,
        stats=stats,
        occupancy=occupancy,
        problems=problems,
        material=material,
        blob_ttl_ms=blob_ttl_ms,
    )


def _text(raw: Any) -> str:
    return bytes(raw).decode("utf-8", errors="replace")


def _now_us(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1_000_000 + int(micros)


def _pttl(reply: Any) -> int | None:
    value = int(reply)
    return None if value == -2 else value


def _entry_age_ms(entry_id: bytes, now_us: int) -> int:
    return now_us // 1000 - int(entry_id.split(b"-", 1)[0])


def _record(raw: Any, kind: type[_R]) -> _R | None:
    """A heartbeat record; None when absent or unreadable."""
    if raw is None:
        return None
    try:
        return records.decode(bytes(raw), kind)
    except ValidationError:
        return None


def _process_info(
    ident: str,
    raw: Any,
    kind: type[MixerStatus | GatewayStatus | RecorderStatus | KeeperStatus],
    *,
    age_s: float | None = None,
    expires_in_s: float | None = None,
) -> ProcessInfo:
    """A heartbeat key's status as the overview shows it (not alive: absent or unreadable)."""
    status = _record(raw, kind)
    if status is None:
        return ProcessInfo(ident, False, heartbeat_age_s=age_s, expires_in_s=expires_in_s)
    return ProcessInfo(
        ident,
        True,
        counters=status.counters,
        rooms=getattr(status, "rooms", []),
        pid=getattr(status, "pid", None),
        started=getattr(status, "started", None),
        heartbeat_age_s=age_s,
        expires_in_s=expires_in_s,
        url=getattr(status, "url", None),
        connections=getattr(status, "connections", None),
        last_copy=getattr(status, "last_copy", None),
    )


def _room_summary(room: str, replies: Iterator[Any]) -> RoomSummary:
    owner_raw, pttl, members_raw, song_raw, in_length = (next(replies) for _ in range(5))
    members, _bad = _members(members_raw)
    song: Song | None = None
    if song_raw is not None:
        try:
            song = records.decode(bytes(song_raw), Song)
        except ValidationError:
            song = None
    return RoomSummary(
        name=room,
        owner=_text(owner_raw) if owner_raw is not None else None,
        lease_ttl_ms=_pttl(pttl),
        members_total=len(members) + len(_bad),
        members_connected=sum(1 for m in members if m.connected),
        song_running=bool(song and song.running),
        song_number=song.number if song else 0,
        taps=len({m.delay for m in members if m.connected}),
        in_length=int(in_length),
    )


def _members(raw: dict[bytes, bytes]) -> tuple[list[Member], dict[str, str]]:
    members: list[Member] = []
    bad: dict[str, str] = {}
    for singer, record in raw.items():
        try:
            members.append(records.decode(record, Member))
        except ValidationError as exc:
            bad[_text(singer)] = str(exc) or type(exc).__name__
    return members, bad


def _live_counters(raw: bytes | None, problems: list[str]) -> LiveCounters:
    """The members' counters the mixer publishes with its stats (none: the records')."""
    if raw is None:
        return LiveCounters(members={})
    try:
        return records.decode(raw, LiveCounters)
    except ValidationError as exc:
        problems.append(f"stats members unreadable: {exc}")
        return LiveCounters(members={})


def _song(
    raw: dict[bytes, bytes], problems: list[str]
) -> tuple[Song | None, int | None, str | None]:
    song: Song | None = None
    if b"state" in raw:
        try:
            song = records.decode(raw[b"state"], Song)
        except ValidationError as exc:
            problems.append(f"song state unreadable: {exc}")
    version_raw = raw.get(b"version")
    version = int(version_raw) if version_raw is not None and version_raw.isdigit() else None
    ctl = raw.get(b"ctl")
    if ctl is not None and not _ENTRY_ID.fullmatch(ctl):
        problems.append(f"song ctl cursor is not a stream entry id: {ctl!r:.40}")
        ctl = None
    return song, version, _text(ctl) if ctl is not None else None


def _material(raw: dict[bytes, bytes], problems: list[str]) -> Material | None:
    if b"material" not in raw:
        return None
    try:
        return records.decode(raw[b"material"], Material)
    except ValidationError as exc:
        problems.append(f"material unreadable: {exc}")
        return None


def _stream_info(
    name: str, key: str, now_us: int, length: Any, first: Any, last: Any
) -> StreamInfo:
    firsts, lasts = parse_entries(first), parse_entries(last)
    return StreamInfo(
        name=name,
        key=key,
        length=int(length),
        first_age_ms=_entry_age_ms(firsts[0][0], now_us) if firsts else None,
        last_age_ms=_entry_age_ms(lasts[0][0], now_us) if lasts else None,
    )


def _tap_info(
    room: str,
    tap: tuple[int, str],
    in_use: bool,
    now_us: int,
    now_pos: int,
    length: Any,
    last: Any,
) -> TapInfo:
    delay, mix = tap
    entries: list[Entry] = parse_entries(last)
    key = keys.room_tap(room, delay, mix)
    if not entries:
        return TapInfo(delay, key, in_use, int(length), None, None, None, None, mix=mix)
    entry_id, value = entries[0]
    age = _entry_age_ms(entry_id, now_us)
    try:
        window = decode_tap(value or b"")
    except WireError as exc:
        return TapInfo(
            delay, key, in_use, int(length), age, None, None, None, f"bad entry: {exc}", mix
        )
    end = window.start + len(window.samples)
    return TapInfo(delay, key, in_use, int(length), age, window.start, end, now_pos - end, mix=mix)


def _occupancy(raw: Any, problems: list[str]) -> Occupancy | None:
    if raw is None:
        return None
    try:
        snap = records.decode(bytes(raw), records.Occupancy)
    except ValidationError as exc:
        problems.append(f"occupancy snapshot unreadable: {exc}")
        return None
    return Occupancy(
        clock=snap.clock,
        ring_samples=snap.ring_samples,
        frame_samples=snap.frame_samples,
        occupied=snap.occupied,
        bitmap=snap.bitmap,
        mixer=snap.mixer or None,
    )


def _shown_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (it ends up on screens and in logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, hostport = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


# --- the command -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brigade inspect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("room", nargs="?", metavar="ROOM", help="show this room in detail")
    parser.add_argument(
        "--redis-url",
        default=None,
        help=f"Redis connection URL (env REDIS_URL, default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--watch",
        nargs="?",
        const="1",
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS (default 1) until Ctrl-C",
    )
    parser.add_argument("--json", action="store_true", help="print the data as JSON")
    parser.add_argument(
        "--last",
        type=float,
        default=None,
        metavar="SECONDS",
        help="chart only the last SECONDS of the ring (default: all of it)",
    )
    parser.add_argument(
        "--width", type=int, default=None, help="output width (default: the terminal's)"
    )
    return parser


def _options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[str | None, float | None]:
    """(room, watch period): ``--watch choir`` means ``--watch 1 choir``."""
    room: str | None = args.room
    period: float | None = None
    if args.watch is not None:
        try:
            period = float(args.watch)
        except ValueError:
            if room is not None:
                parser.error(f"--watch takes a number of seconds, got {args.watch!r}")
            room, period = args.watch, 1.0
        if not period > 0:
            parser.error(f"--watch needs a positive period, got {args.watch}")
    if room is not None:
        try:
            room = check_room(room)  # room names are case-insensitive: "Choir" is "choir"
        except ValidationError as exc:
            parser.error(str(exc))
    if args.last is not None and not args.last > 0:
        parser.error(f"--last must be positive, got {args.last}")
    if args.width is not None and args.width < 20:
        parser.error(f"--width must be at least 20, got {args.width}")
    return room, period


def main(argv: Sequence[str]) -> int:
    """``brigade inspect``: 0 on success, 1 when Redis or the room is not there."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    room, period = _options(parser, args)
    url: str = args.redis_url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        parser.error(f"the Redis URL must start with redis://, rediss:// or unix://, got {url!r}")
    try:
        client = connect(url)
    except ValueError as exc:
        parser.error(f"bad Redis URL {_shown_url(url)!r}: {exc}")

    def frame() -> str:
        width = args.width or shutil.get_terminal_size((100, 24)).columns
        if room is None:
            overview = gather_overview(client, url)
            return to_json(overview) if args.json else render_overview(overview, width)
        detail = gather_room(client, url, room)
        return to_json(detail) if args.json else render_room(detail, width, args.last)

    try:
        if period is None:
            return _once(frame, url)
        return _watch(frame, url, period, as_json=args.json)
    except KeyboardInterrupt:
        return 0 if period is not None else 130
    finally:
        client.close()


def _problem(exc: Exception, url: str) -> str:
    if isinstance(exc, UnknownRoom):
        return str(exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return f"cannot reach Redis at {_shown_url(url)}: {exc}"
    return f"Redis error at {_shown_url(url)}: {exc}"


def _once(frame: Callable[[], str], url: str) -> int:
    try:
        text: str = frame()
    except (UnknownRoom, *REDIS_ERRORS) as exc:
        print(f"brigade inspect: {_problem(exc, url)}", file=sys.stderr)
        return 1
    print(text)
    return 0


def _watch(frame: Callable[[], str], url: str, period: float, as_json: bool) -> int:
    """Redraw until Ctrl-C; a missing room or Redis is shown and retried, not fatal."""
    while True:
        try:
            text: str = frame()
        except (UnknownRoom, *REDIS_ERRORS) as exc:
            problem = _problem(exc, url)
            text = json.dumps({"error": problem}) if as_json else f"brigade inspect: {problem}"
        if not as_json:
            stamp = time.strftime("%H:%M:%S")
            text = f"{CLEAR_SCREEN}{text}\n\n(every {period:g} s, {stamp}; Ctrl-C to stop)"
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        time.sleep(period)
