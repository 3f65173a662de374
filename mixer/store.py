"""Room state in Redis: loading a room and writing it back (its public view: mixer/view.py).

The owning mixer is the only writer of ``bb:{room}:members`` and
``bb:{room}:song``; everything here queues commands on a pipeline given by
the caller, so one round trip per tick carries all of a mixer's writes.
"""

import logging
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from common import keys, records
from common.constants import SAMPLE_RATE, seconds_to_samples
from common.errors import ValidationError
from common.events import Chat, Levels, Reply, State, encode_event
from common.records import Checkpoint, Material, Member, RoomMeta, Song
from common.settings import MixerSettings
from common.wire import encode_tap
from mixer.host import Publish
from mixer.roomstate import RoomConfig, RoomState

log = logging.getLogger(__name__)

OCC_TTL_MS: Final = 10_000
"""The occupancy record outlives its last publish this long."""


def config_from_meta(meta: RoomMeta, settings: MixerSettings) -> RoomConfig:
    """The room's configuration: its meta record, with the mixer's ring and lead."""
    return RoomConfig(
        ring_samples=settings.ring_s * SAMPLE_RATE,
        lead_samples=seconds_to_samples(settings.lead_s),
        bucket_spacing=seconds_to_samples(meta.bucket_spacing_s),
        n_buckets=meta.n_buckets,
        capacity=meta.capacity,
    )


async def load_room(
    redis: "Redis", room: str, settings: MixerSettings
) -> tuple[RoomState, bytes, RoomMeta | None]:
    """Read a room's state: (state, id of the last applied control entry, its meta).

    The meta is None when Redis has none (or an unreadable one): the room then
    runs on the defaults, and nothing is rewritten from it.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.room_meta(room))
        pipe.hgetall(keys.room_members(room))
        pipe.hgetall(keys.room_song(room))
        meta_raw, members_raw, song_raw = await pipe.execute()
    meta: RoomMeta | None = None
    try:
        meta = records.decode_meta(meta_raw) if meta_raw else None
        # Readable, but a room this mixer cannot run (spacing below its lead, buckets
        # past its ring) is run on the defaults too, not fatal to the process.
        config = config_from_meta(meta or RoomMeta(), settings)
    except ValidationError as exc:
        log.warning("room %s: bad meta (%s); using defaults", room, exc)
        meta = None
        config = config_from_meta(RoomMeta(), settings)
    members: dict[str, Member] = {}
    for singer, raw in members_raw.items():
        try:
            member = records.decode(raw, Member)
        except ValidationError as exc:
            log.warning("room %s: dropping unreadable member record %r: %s", room, singer, exc)
            continue
        members[member.singer_id] = member
    material: Material | None = None
    if b"material" in song_raw:
        try:
            material = records.decode(song_raw[b"material"], Material)
        except ValidationError as exc:
            log.warning("room %s: unreadable material record, starting with none: %s", room, exc)
    song: Song | None = None
    if b"state" in song_raw:
        try:
            song = records.decode(song_raw[b"state"], Song)
        except ValidationError as exc:
            log.warning("room %s: unreadable song record, starting with none: %s", room, exc)
    try:
        state = RoomState(config, members, song, material)
    except ValidationError as exc:
        log.warning("room %s: inconsistent stored state (%s); starting empty", room, exc)
        state = RoomState(config)
    # Versions keep rising across owners, so gateways can ignore stale state events.
    try:
        state.version = max(state.version, int(song_raw.get(b"version", b"0")))
    except ValueError:
        log.warning("room %s: unreadable state version %r", room, song_raw.get(b"version"))
    try:
        state.material_version = int(song_raw.get(b"material_version", b"0"))
    except ValueError:
        log.warning("room %s: unreadable material version", room)
    ctl = song_raw.get(b"ctl", b"0-0")
    return state, ctl, meta


def queue_persist(
    pipe: Pipeline,
    room: str,
    state: RoomState,
    ctl_cursor: bytes,
    removed: set[str],
    material: bool = True,
) -> None:
    """Write the room state (members, song, version, control cursor; the material if asked)."""
    if state.members:
        pipe.hset(
            keys.room_members(room),
            mapping={sid: records.encode(m) for sid, m in state.members.items()},
        )
    if removed:
        pipe.hdel(keys.room_members(room), *removed)
    pipe.hset(
        keys.room_song(room),
        mapping={
            "state": records.encode(state.song),
            "version": state.version,
            "ctl": ctl_cursor,
        },
    )
    if material:
        pipe.hset(
            keys.room_song(room),
            mapping={
                "material": records.encode(state.material),
                "material_version": state.material_version,
            },
        )


def queue_step(
    pipe: Pipeline,
    room: str,
    state: RoomState,
    ctl_cursor: bytes,
    out: Publish,
    now: int,
    read_ctl: bool,
) -> None:
    """Write what one step changed in the room: records, links and events."""
    if out.discard:
        queue_discard(pipe, room, out.discard)
    if out.persist:
        queue_persist(pipe, room, state, ctl_cursor, out.removed, out.persist_material)
        if out.removed:
            # Their places are gone for good: so are their resume tokens and links.
            pipe.hdel(keys.room_tokens(room), *out.removed)
            pipe.hdel(keys.room_links(room), *out.removed)
    elif read_ctl:
        # Commands that changed nothing still move the control cursor forward.
        pipe.hset(keys.room_song(room), "ctl", ctl_cursor)
    if out.links:
        pipe.hset(keys.room_links(room), mapping=out.links)  # type: ignore[arg-type]
    for event in out.events:
        queue_event(pipe, room, event)


def queue_published(
    pipe: Pipeline, room: str, out: Publish, now: int, settings: MixerSettings
) -> None:
    """Write what one step publishes: the tap windows, occupancy and stats."""
    for tap in out.taps:
        key = keys.room_tap(room, tap.delay, tap.tap.mix)
        window = encode_tap(room, tap.delay, tap.start, now, tap.samples, tap.tap.mix)
        pipe.xadd(
            key,
            # As a memoryview the window is not copied into a packed command (redis-py's
            # hiredis packer would): it goes to the socket as it is, in one vectored write.
            {"d": memoryview(window)},
            maxlen=settings.tap_maxlen,
            approximate=True,
        )
        if tap.fresh or out.refresh_taps:
            # From its first window on: a tap that lives less than one publish
            # period must still expire.
            pipe.pexpire(key, settings.tap_ttl_ms)
    if out.occupancy is not None:
        pipe.set(keys.room_occupancy(room), records.encode(out.occupancy), px=OCC_TTL_MS)
    if out.stats is not None:
        stats: dict[str, bytes | str | int] = {}
        stats.update(out.stats)
        stats.update(clock=now, mixer=settings.mixer_id)
        if out.live is not None:
            stats["members"] = records.encode(out.live)
        pipe.hset(keys.room_stats(room), mapping=stats)  # type: ignore[arg-type]


def queue_discard(pipe: Pipeline, room: str, discard: list[tuple[str, str]]) -> None:
    """Delete the bytes of tracks and images the room no longer lists."""
    names = [blob_key(room, kind, blob_id) for kind, blob_id in discard]
    if names:
        pipe.delete(*names)


def blob_key(room: str, kind: str, blob_id: str) -> str:
    """The key holding a track's (``kind`` "track") or an image's bytes."""
    return keys.room_track(room, blob_id) if kind == "track" else keys.room_image(room, blob_id)


def blob_keys(room: str, state: RoomState) -> list[tuple[str, str, str]]:
    """``(kind, id, key)`` of every track and image the room lists."""
    tracks, images = state.material.blob_ids()
    return [("track", t, keys.room_track(room, t)) for t in tracks] + [
        ("image", i, keys.room_image(room, i)) for i in images
    ]


def queue_meta(pipe: Pipeline, room: str, state: RoomState, meta: RoomMeta | None) -> None:
    """Re-create what Redis lost of the room: its meta, index entry and resume tokens.

    Fields a gateway may have re-created meanwhile are kept, except the
    password hash: ours wins, so a password room never opens by accident.
    """
    config = state.config
    pipe.sadd(keys.ROOMS, room)
    fields = (
        records.meta_fields(meta)
        if meta is not None
        else {
            "capacity": str(config.capacity),
            "n_buckets": str(config.n_buckets),
            "bucket_spacing_s": str(config.bucket_spacing / SAMPLE_RATE),
        }
    )
    for name, value in fields.items():
        if name == "password_hash" and value:
            pipe.hset(keys.room_meta(room), name, value)
        else:
            pipe.hsetnx(keys.room_meta(room), name, value)
    tokens: dict[str | bytes, str | bytes] = {
        sid: m.token_digest for sid, m in state.members.items() if m.token_digest
    }
    if tokens:
        pipe.hset(keys.room_tokens(room), mapping=tokens)  # type: ignore[arg-type]


def queue_event(pipe: Pipeline, room: str, event: Reply | State | Levels | Chat) -> None:
    pipe.xadd(
        keys.room_events(room),
        {"d": encode_event(event)},
        maxlen=keys.EVENTS_MAXLEN,
        approximate=True,
    )


def queue_checkpoint(
    pipe: Pipeline, room: str, checkpoint: Checkpoint, period: int, ttl_ms: int
) -> None:
    """Append a checkpoint entry to the room's list (a full one replaces the list).

    The list keeps the entries of the last ``clock - start`` samples, plus two:
    an entry only holds positions mixed before its clock, so older ones hold
    nothing a tap still needs (``period``: samples between entries). The list
    outlives its last entry ``ttl_ms``.
    """
    key = keys.room_checkpoint(room)
    if checkpoint.full:
        pipe.delete(key)
    pipe.rpush(key, records.encode(checkpoint))
    keep = -(-(checkpoint.clock - checkpoint.start) // max(1, period)) + 2
    pipe.ltrim(key, -keep, -1)
    pipe.pexpire(key, ttl_ms)


async def read_checkpoint(redis: "Redis", room: str) -> list[bytes]:
    """The room's checkpoint entries, oldest first (none: no checkpoint, or not a list)."""
    try:
        raw = await redis.lrange(keys.room_checkpoint(room), 0, -1)
        return [item.encode() if isinstance(item, str) else bytes(item) for item in raw]
    except ResponseError as exc:  # WRONGTYPE: a checkpoint of an older mixer
        log.warning("room %s: unreadable checkpoint (%s); starting silent", room, exc)
        return []
