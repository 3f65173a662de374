"""What ``brigade inspect`` shows, and how it draws it: data in, text out.

The records here are filled by :mod:`inspector.command` from Redis (see
docs/redis.md); everything below them is pure, so the tables and the
occupancy chart are tested without a server. Times are taken from the Redis
server (``TIME``), the same clock that stamps stream entry ids.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from common.constants import SAMPLE_RATE
from common.listening import listeners
from common.records import SILENCE_DB, Material, Member, Song, join_order

BLOCKS: Final = " ▁▂▃▄▅▆▇█"
"""Chart levels: empty, then eighths of a character cell."""

MIN_CHART_WIDTH: Final = 10

PENDING_LIMIT: Final = 1000
"""Most control entries counted as not yet applied; at the limit the count shows as ``1000+``."""


# --- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    """A process as its heartbeat key (``bb:{kind}:{id}``) shows it: a mixer or a gateway
    (an entry of ``bb:mixers``/``bb:gateways``) or a recorder or a keeper (its key, found
    by SCAN). What a kind's status does not hold stays None (gateways: rooms, pid; mixers,
    recorders and keepers: url, connections; all but keepers: last_copy)."""

    id: str
    alive: bool
    """Mixers and gateways: the key still exists (it expires when the process dies);
    recorders and keepers: the key held a readable status."""
    counters: dict[str, int] = field(default_factory=dict)
    rooms: list[str] = field(default_factory=list)
    pid: int | None = None
    started: float | None = None
    heartbeat_age_s: float | None = None
    """Since the last beat, from the registry's score (None: recorders and keepers keep
    no registry)."""
    expires_in_s: float | None = None
    """The heartbeat key's remaining TTL (recorders and keepers; None: no TTL, or it
    expired as read)."""
    url: str | None = None
    connections: int | None = None
    last_copy: float | None = None
    """Keepers: unix time a key was last copied to the state Redis (None: not yet)."""


@dataclass(frozen=True)
class RoomSummary:
    """One line of the overview."""

    name: str
    owner: str | None
    lease_ttl_ms: int | None
    """PTTL of the lease: None without a lease, -1 for a lease with no TTL (a bug)."""
    members_total: int
    members_connected: int
    song_running: bool
    song_number: int
    taps: int
    in_length: int


@dataclass(frozen=True)
class Overview:
    """Everything ``brigade inspect`` (no room) shows."""

    redis_url: str
    now_us: int
    mixers: list[ProcessInfo]
    gateways: list[ProcessInfo]
    rooms: list[RoomSummary]
    recorders: list[ProcessInfo] = field(default_factory=list)
    keepers: list[ProcessInfo] = field(default_factory=list)


@dataclass(frozen=True)
class StreamInfo:
    """Length and entry ages of one of a room's streams."""

    name: str
    key: str
    length: int
    first_age_ms: int | None
    last_age_ms: int | None


@dataclass(frozen=True)
class TapInfo:
    """One tap stream, ``bb:{R}:tap:{delay}``, and its newest window."""

    delay: int
    key: str
    in_use: bool
    """A connected member has this delay; False for a stale stream found by SCAN."""
    length: int
    last_age_ms: int | None
    window_start: int | None
    window_end: int | None
    lag: int | None
    """Samples from the end of the newest window to the room clock (now)."""
    error: str | None = None
    mix: str = "full"
    """``full``, or ``solo`` for the mix of the soloed singers."""


@dataclass(frozen=True)
class Occupancy:
    """The snapshot in ``bb:{R}:occ``."""

    clock: int
    ring_samples: int
    frame_samples: int
    occupied: int
    bitmap: bytes
    mixer: str | None

    def __post_init__(self) -> None:
        if self.ring_samples <= 0 or self.frame_samples <= 0:
            raise ValueError(
                f"ring_samples {self.ring_samples} and frame_samples {self.frame_samples} "
                "must be positive"
            )
        if self.ring_samples % self.frame_samples:
            raise ValueError(
                f"ring_samples {self.ring_samples} is not a multiple of "
                f"frame_samples {self.frame_samples}"
            )
        needed = -(-self.frames // 8)
        if len(self.bitmap) < needed:
            raise ValueError(
                f"bitmap is {len(self.bitmap)} bytes, {self.frames} frames need {needed}"
            )

    @property
    def frames(self) -> int:
        return self.ring_samples // self.frame_samples


@dataclass(frozen=True)
class RoomDetail:
    """Everything ``brigade inspect ROOM`` shows."""

    name: str
    redis_url: str
    now_us: int
    registered: bool
    """The room is in ``bb:rooms``."""
    owner: str | None
    lease_ttl_ms: int | None
    meta: dict[str, str]
    """``bb:{R}:meta`` without the password hash."""
    password_set: bool
    song: Song | None
    song_version: int | None
    ctl_applied: str | None
    ctl_pending: int | None
    """Control entries after the one the mixer applied last (capped by the read)."""
    members: list[Member]
    bad_members: dict[str, str]
    """Singer id -> why its record could not be read."""
    taps: list[TapInfo]
    streams: list[StreamInfo]
    stats: dict[str, str]
    occupancy: Occupancy | None
    problems: list[str]
    """Records that could not be read (song, occupancy), one line each."""
    material: Material | None = None
    blob_ttl_ms: dict[str, int | None] = dataclasses.field(default_factory=dict)
    """Track or image id -> the PTTL of its bytes' key (None: the key is missing)."""

    @property
    def now_pos(self) -> int:
        """The room clock (absolute samples) at the time of the read."""
        return self.now_us * SAMPLE_RATE // 1_000_000


# --- JSON ------------------------------------------------------------------------------------


def to_json(data: Overview | RoomDetail) -> str:
    """The gathered data as one JSON document (bytes, i.e. the bitmap, as base64)."""
    body = dataclasses.asdict(data)
    body["kind"] = "room" if isinstance(data, RoomDetail) else "overview"
    return json.dumps(body, default=_json_default, sort_keys=True)


def _json_default(value: object) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


# --- formatting ------------------------------------------------------------------------------


def _process_lines(
    title: str,
    procs: list[ProcessInfo],
    now_s: float,
    width: int,
    rooms_verb: str | None,
    *,
    counters: bool = False,
) -> list[str]:
    """One line per process (and its counters, when ``rooms_verb`` is not None: the kinds
    that own or record rooms, or with ``counters``: the keepers)."""
    lines = [f"{title} ({len(procs)})"]
    if not procs:
        lines.append("  (none)")
    for p in procs:
        url = "" if p.url is None else f" {p.url}"
        if p.heartbeat_age_s is None:
            state = "alive" if p.alive else "unreadable heartbeat"
            expires = "" if p.expires_in_s is None else f", expires in {duration(p.expires_in_s)}"
            beat = f"heartbeat ({state}{expires})"
        else:
            state = "alive" if p.alive else "heartbeat key gone: dead"
            beat = f"heartbeat {duration(p.heartbeat_age_s)} ago ({state})"
        pid = "" if p.pid is None else f", pid {p.pid}"
        up = "" if p.started is None else f", up {duration(now_s - p.started)}"
        conns = "" if p.connections is None else f", {p.connections} connection(s)"
        copied = "" if p.last_copy is None else f", last copy {duration(now_s - p.last_copy)} ago"
        line = f"  {p.id}{url}: {beat}{pid}{up}{conns}{copied}"
        if rooms_verb is None:
            lines.append(line)
            if counters:
                pairs = [f"{k}={v}" for k, v in sorted(p.counters.items())]
                lines += wrap_pairs(pairs, width, "      ")
            continue
        rooms = ", ".join(p.rooms) if p.rooms else "-"
        lines.append(f"{line}; {rooms_verb}{len(p.rooms)} room(s): {rooms}")
        lines += wrap_pairs([f"{k}={v}" for k, v in sorted(p.counters.items())], width, "      ")
    return lines


def duration(seconds: float) -> str:
    """A short human duration: ``850 ms``, ``4.2 s``, ``3 min 05 s``, ``2.5 h``."""
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 1:
        return f"{sign}{s * 1000:.0f} ms"
    if s < 60:
        return f"{sign}{s:.1f} s"
    if s < 3600:
        return f"{sign}{int(s // 60)} min {int(s % 60):02d} s"
    return f"{sign}{s / 3600:.1f} h"


def _ms(value: int | None) -> str:
    return "-" if value is None else duration(value / 1000)


def _samples_s(samples: int) -> str:
    return f"{samples / SAMPLE_RATE:.3f} s"


def _lease(ttl_ms: int | None) -> str:
    if ttl_ms is None:
        return "-"
    if ttl_ms < 0:
        return "no TTL!"
    return duration(ttl_ms / 1000)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows aligned under headers; a column whose header starts with '>' is right-aligned."""
    right = [h.startswith(">") for h in headers]
    names = [h.removeprefix(">") for h in headers]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [line(names)] + [line(r) for r in rows]


def wrap_pairs(pairs: Sequence[str], width: int, indent: str = "  ") -> list[str]:
    """``k=v`` items filled into lines of at most ``width`` characters."""
    lines: list[str] = []
    current = indent
    for item in pairs:
        if current.strip() and len(current) + 1 + len(item) > width:
            lines.append(current.rstrip())
            current = indent
        current += item + " "
    if current.strip():
        lines.append(current.rstrip())
    return lines


# --- the occupancy chart ---------------------------------------------------------------------


def occupancy_flags(occ: Occupancy) -> npt.NDArray[np.bool_]:
    """The per-frame flags in ring order (bit j of the bitmap, MSB first)."""
    bits = np.unpackbits(np.frombuffer(occ.bitmap, dtype=np.uint8), count=occ.frames)
    return bits.astype(np.bool_)


def occupancy_columns(occ: Occupancy, columns: int, window_samples: int) -> list[float]:
    """Fraction of occupied frames in each of ``columns`` equal slices of the last
    ``window_samples`` before the snapshot's clock, oldest first.

    Ring frame ``j`` starts at ring index ``128 j``, i.e. at the position ``p``
    in ``[clock - ring, clock)`` with ``p % ring == 128 j`` (docs/redis.md).
    A frame belongs to the slice holding its first sample. A slice that no
    frame starts in (more columns than frames) is 0.
    """
    ring = occ.ring_samples
    window = max(1, min(window_samples, ring))
    flags = occupancy_flags(occ)
    starts = np.arange(occ.frames, dtype=np.int64) * occ.frame_samples
    # Samples from the oldest position in the ring (clock - ring) to each frame's start.
    offset = (starts - occ.clock) % ring
    since_window = offset - (ring - window)
    inside = since_window >= 0
    col = since_window[inside] * columns // window
    counts = np.bincount(col, minlength=columns)
    hits = np.bincount(col, weights=flags[inside].astype(np.float64), minlength=columns)
    fractions = np.divide(hits, counts, out=np.zeros(columns), where=counts > 0)
    return [float(f) for f in fractions]


def chart_line(fractions: Sequence[float]) -> str:
    """One block character per fraction; any occupied frame shows at least '▁'."""
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[min(top, math.ceil(f * top - 1e-9))] for f in fractions)


def time_axis(width: int, window_s: float) -> str:
    """``-120s`` under the left edge, ``now`` under the right, the midpoint between."""
    axis = [" "] * width
    left, right = f"-{window_s:g}s", "now"

    def place(text: str, at: int) -> None:
        at = max(0, min(width - len(text), at))
        axis[at : at + len(text)] = text

    mid = f"-{window_s / 2:g}s"
    if width >= len(left) + len(mid) + len(right) + 4:
        place(mid, width // 2 - len(mid) // 2)
    place(left, 0)
    place(right, width - len(right))
    return "".join(axis)[:width]


def render_chart(occ: Occupancy, width: int, last_s: float | None = None) -> list[str]:
    """The occupancy as a block chart over the last ``last_s`` seconds (default: the ring)."""
    window = occ.ring_samples if last_s is None else round(last_s * SAMPLE_RATE)
    window = max(occ.frame_samples, min(window, occ.ring_samples))
    columns = max(1, min(width, window // occ.frame_samples))
    fractions = occupancy_columns(occ, columns, window)
    return [chart_line(fractions), time_axis(columns, window / SAMPLE_RATE)]


# --- the overview ----------------------------------------------------------------------------


def render_overview(data: Overview, width: int = 100) -> str:
    """Mixers, gateways, recorders, keepers and one line per room."""
    now_s = data.now_us / 1e6
    lines = [f"redis {data.redis_url}"]
    lines += _process_lines("mixers", data.mixers, now_s, width, "")
    lines += _process_lines("gateways", data.gateways, now_s, width, None)
    lines += _process_lines("recorders", data.recorders, now_s, width, "records ")
    lines += _process_lines("keepers", data.keepers, now_s, width, None, counters=True)
    lines.append(f"rooms ({len(data.rooms)})")
    if not data.rooms:
        lines.append("  (none)")
    else:
        rows = [
            [
                r.name,
                r.owner or "(none)",
                _lease(r.lease_ttl_ms),
                f"{r.members_connected}/{r.members_total}",
                _song_summary(r),
                str(r.taps),
                str(r.in_length),
            ]
            for r in data.rooms
        ]
        lines += table(
            ["ROOM", "OWNER", ">LEASE TTL", ">MEMBERS", "SONG", ">TAPS", ">IN LEN"], rows
        )
    return "\n".join(lines)


def _song_summary(room: RoomSummary) -> str:
    if not room.song_number:
        return "-"
    return f"#{room.song_number} {'running' if room.song_running else 'stopped'}"


# --- one room --------------------------------------------------------------------------------


def render_room(data: RoomDetail, width: int = 100, last_s: float | None = None) -> str:
    """The room's owner, meta, song, members, taps, streams, stats and occupancy chart."""
    lines: list[str] = []
    owner = (
        f"owner {data.owner}, lease {_lease(data.lease_ttl_ms)} left"
        if data.owner
        else "owner: none (no lease: no live mixer has claimed it)"
    )
    registered = "" if data.registered else "  [not in bb:rooms]"
    lines.append(f"room {data.name}: {owner}{registered}")
    lines.append(_meta_line(data))
    lines.append(_song_line(data))
    lines += _material_lines(data)
    lines.append("")
    lines += _members_lines(data)
    lines.append("")
    lines += _taps_lines(data)
    lines.append("")
    lines += _streams_lines(data)
    lines.append("")
    lines += _stats_lines(data, width)
    lines.append("")
    lines += _occupancy_lines(data, width, last_s)
    for problem in data.problems:
        lines.append(f"! {problem}")
    return "\n".join(lines)


def _reference(data: RoomDetail) -> tuple[int, str]:
    """The clock song positions are shown against: the chart's right edge, else now."""
    if data.occupancy is not None:
        return data.occupancy.clock, "ring clock"
    return data.now_pos, "now"


def _meta_line(data: RoomDetail) -> str:
    meta = data.meta
    if not meta:
        return "meta: (none)"
    parts = [f"capacity {meta.get('capacity', '-')}"]
    parts.append(f"password {'yes' if data.password_set else 'no'}")
    if "n_buckets" in meta or "bucket_spacing_s" in meta:
        parts.append(
            f"buckets {meta.get('n_buckets', '-')} x {meta.get('bucket_spacing_s', '-')} s"
        )
    created = meta.get("created_at")
    if created is not None:
        try:
            parts.append(f"created {duration(data.now_us / 1e6 - float(created))} ago")
        except ValueError:
            parts.append(f"created_at {created!r}")
    known = {"capacity", "n_buckets", "bucket_spacing_s", "created_at"}
    parts += [f"{k}={v}" for k, v in sorted(meta.items()) if k not in known]
    return "meta: " + ", ".join(parts)


def _song_line(data: RoomDetail) -> str:
    song = data.song
    if song is None:
        return "song: (no song record)"
    ref, ref_name = _reference(data)

    def pos(p: int | None) -> str:
        return "-" if p is None else f"{p} ({duration((p - ref) / SAMPLE_RATE)} vs {ref_name})"

    state = "running" if song.running else "stopped"
    if not song.running and song.stopped_by:
        state += f" by {song.stopped_by}"
    rounds = song.rounds
    repeats = (
        f"rounds {rounds.repeats} x {rounds.beats} beats at {rounds.bpm:g} bpm"
        if rounds.repeats
        else "no rounds"
    )
    return (
        f"song: #{song.number} {state}, leader {song.leader or '-'}, "
        f"start {pos(song.start_pos)}, end {pos(song.end_pos)}, version {data.song_version}; "
        f"{repeats}, leader boost {song.leader_boost_db:+g} dB"
    )


def _material_lines(data: RoomDetail) -> list[str]:
    """The backing track, metronome, lyrics, image and the room's tracks with their keys' TTL."""
    song, material = data.song, data.material
    if song is None:
        return []

    def ttl(blob_id: str) -> str:
        left = data.blob_ttl_ms.get(blob_id)
        return "bytes missing" if left is None else f"expires in {_lease(left)}"

    m = song.metronome
    metronome = (
        f"metronome {m.bpm:g} bpm, {m.beats} per bar{', count-in' if m.count_in else ''}"
        if m.on
        else "metronome off"
    )
    chosen = f"track {song.track.name} ({song.track.id})" if song.track else "no track"
    lines = [f"material: {chosen}; {metronome}"]
    if material is None:
        return lines
    for track in material.tracks:
        lines.append(
            f"  track {track.id} {track.name!r}: {duration(track.samples / SAMPLE_RATE)}, "
            f"{track.size_bytes / 1e6:.2f} MB ({track.source}), {ttl(track.id)}"
        )
    if material.image is not None:
        image = material.image
        lines.append(
            f"  image {image.id}: {image.content_type}, {image.size_bytes / 1e6:.2f} MB, "
            f"{ttl(image.id)}"
        )
    if material.lyrics:
        n_lines = material.lyrics.count("\n") + 1
        lines.append(
            f"  lyrics: {n_lines} lines, {len(material.lyrics)} characters; "
            f"{len(material.cues)} cue(s) in this song"
        )
    return lines


def _members_lines(data: RoomDetail) -> list[str]:
    members = sorted(data.members, key=join_order)
    connected = sum(1 for m in members if m.connected)
    lines = [f"members ({connected} connected of {len(members)})"]
    if not members:
        lines.append("  (none)")
    rows = []
    for m in members:
        if m.connected:
            conn = "yes"
        elif m.disconnected_at is not None:
            conn = f"no, {duration((data.now_pos - m.disconnected_at) / SAMPLE_RATE)}"
        else:
            conn = "no"
        rows.append(
            [
                m.singer_id,
                m.name,
                m.role.value + (" (muted)" if m.muted else ""),
                "custom" if m.bucket is None else str(m.bucket),
                f"{m.delay / SAMPLE_RATE:.3f}",
                conn,
                str(m.late),
                str(m.chunks),
                str(m.rejected),
                "-" if m.level_db <= SILENCE_DB else f"{m.level_db:.1f} dB",
                ("off" if m.gain_db == -math.inf else f"{m.gain_db:+g} dB")
                + (" solo" if m.soloed else ""),
                m.mix,
            ]
        )
    if rows:
        lines += table(
            [
                "ID",
                "NAME",
                "ROLE",
                ">BUCKET",
                ">DELAY S",
                "CONNECTED",
                ">LATE",
                ">CHUNKS",
                ">REJECTED",
                ">LEVEL",
                "GAIN",
                "HEARS",
            ],
            rows,
        )
    for singer, why in sorted(data.bad_members.items()):
        lines.append(f"  ! {singer}: unreadable record: {why}")
    return lines


def _taps_lines(data: RoomDetail) -> list[str]:
    lines = [f"taps ({sum(1 for t in data.taps if t.in_use)} in use)"]
    if not data.taps:
        lines.append("  (none)")
        return lines
    by_tap: dict[tuple[int, str], list[str]] = {
        tap: ids for tap, ids in listeners(data.members).items()
    }
    rows = []
    for t in data.taps:
        note = ",".join(sorted(by_tap.get((t.delay, t.mix), []))) if t.in_use else "stale"
        if t.error:
            note += f" ! {t.error}"
        rows.append(
            [
                _samples_s(t.delay),
                t.key,
                str(t.length),
                _ms(t.last_age_ms),
                "-" if t.lag is None else duration(t.lag / SAMPLE_RATE),
                note,
            ]
        )
    lines += table(["DELAY", "STREAM", ">LEN", ">LAST ENTRY AGE", ">LAG", "MEMBERS"], rows)
    return lines


def _streams_lines(data: RoomDetail) -> list[str]:
    rows = []
    for s in data.streams:
        note = ""
        if s.name == "ctl" and data.ctl_pending is not None:
            pending = data.ctl_pending
            count = f"{pending}+" if pending >= PENDING_LIMIT else str(pending)
            note = f"{count} not yet applied (last applied {data.ctl_applied})"
        rows.append([s.name, s.key, str(s.length), _ms(s.first_age_ms), _ms(s.last_age_ms), note])
    return ["streams", *table(["NAME", "KEY", ">LEN", ">OLDEST", ">NEWEST", ""], rows)]


def _stats_lines(data: RoomDetail, width: int) -> list[str]:
    stats = dict(data.stats)
    if not stats:
        return ["stats: (none: no mixer has published this room)"]
    head = "stats"
    mixer = stats.pop("mixer", None)
    clock = stats.pop("clock", None)
    if mixer is not None:
        head += f" from {mixer}"
    if clock is not None and clock.isdigit():
        head += f", published {duration((data.now_pos - int(clock)) / SAMPLE_RATE)} ago"
    return [head, *wrap_pairs([f"{k}={v}" for k, v in sorted(stats.items())], width)]


def _occupancy_lines(data: RoomDetail, width: int, last_s: float | None) -> list[str]:
    occ = data.occupancy
    if occ is None:
        return ["occupancy: (no snapshot: nobody owns the room, or it was never published)"]
    pct = 100 * occ.occupied / occ.frames
    audio_s = occ.occupied * occ.frame_samples / SAMPLE_RATE
    age = duration((data.now_pos - occ.clock) / SAMPLE_RATE)
    by = f" by {occ.mixer}" if occ.mixer else ""
    head = (
        f"occupancy: {occ.occupied} of {occ.frames} frames hold audio ({pct:.1f} %, "
        f"{audio_s:.1f} s), snapshot {age} old{by}"
    )
    chart_width = max(MIN_CHART_WIDTH, width - 4)
    return [head, *("  " + line for line in render_chart(occ, chart_width, last_s))]
