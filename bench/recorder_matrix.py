"""Every song recorded whole, however long and however it ended:
``python -m bench.recorder_matrix``.

Songs of 3, 10 and 30 s, each ended by its backing track, by **Stop song**,
by its leader leaving, or by the next song starting (the leader stops and
starts again at once), in an open room and in a room with a password: 24
rooms, eight at a time (one per ending and kind, all of one length), on a
real redis-server, mixer and recorder. Each room has three singers in
buckets 0-2 of six 3 s buckets (the recorder's tap: 12 s) singing three
tones; the backing track is a fourth.

Per recording it prints the seconds of each voice found in it (100 ms blocks
where the voice's tone has at least half its expected amplitude) against the
seconds sung inside the song, the share of samples equal to the expected mix
(the tap's auto-gain, the track at its positions; 16-bit), and the time from
when the recorder's tap played the song's end (``end + 12 s``) to its
``recording`` event. Writes ``bench-results/recorder_matrix.json``.
"""

from __future__ import annotations

import io
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import redis
import soundfile as sf

from bench.results import results_dir, write_results
from common import keys
from common.clock import now_samples
from common.commands import AddTrack, Lead, Leave, SetLeaderBoost, Start, Stop
from common.constants import SAMPLE_RATE
from common.events import Recorded, decode_event
from common.passwords import hash_password
from common.records import Track
from common.streams import parse_xread
from tests.simgateway import CHUNK, SimGateway, Voice, expected_mix, tone
from tests.support import Process, RedisServer, wait_until

S: Final = SAMPLE_RATE
LENGTHS_S: Final = (3, 10, 30)
ENDINGS: Final = ("track", "stop", "leader left", "next song")
KINDS: Final = ("open", "password")
SPACING_S: Final = 3.0
N_BUCKETS: Final = 6
TAP: Final = 4 * round(SPACING_S * S)
"""Where the recorder listens: one spacing behind the last singer (bucket 2, 9 s)."""
VOICES: Final = (("a", 440.0, 0), ("b", 660.0, 2), ("c", 990.0, 4))
"""Singer, tone (Hz), first chunk sung; a is the leader."""
TRACK_HZ: Final = 220.0
BLOCK: Final = S // 10


@dataclass
class Room:
    name: str
    kind: str
    ending: str
    length: int
    start: int = 0
    end: int = 0
    phase: str = "singing"
    voices: list[Voice] = field(default_factory=list)
    delays: dict[str, int] = field(default_factory=dict)
    track: npt.NDArray[np.float32] | None = None
    announced: int | None = None


def expected(room: Room) -> npt.NDArray[np.float32]:
    """What the 12 s tap hears of the song, plus its track, as 16-bit FLAC holds it."""
    n = room.end - room.start
    mixed = expected_mix(room.voices, room.start, n).astype(np.float64)
    if room.track is not None:
        part = room.track[:n]
        mixed[: len(part)] += part
    clipped: npt.NDArray[np.float32] = np.clip(mixed, -1.0, 32767 / 32768).astype(np.float32)
    return clipped


def voice_seconds(recorded: npt.NDArray[np.float32], start: int, freq: float) -> float:
    """Seconds of 100 ms blocks in which ``freq`` (the voice's exact tone) is present."""
    found = 0
    for lo in range(0, len(recorded) - BLOCK + 1, BLOCK):
        pos = start + lo
        ref = tone(freq, pos, BLOCK, 1.0).astype(np.float64)
        amplitude = 2 * float(np.dot(recorded[lo : lo + BLOCK], ref)) / BLOCK
        found += amplitude > 0.5 * 0.3 * np.sqrt(3 / 5)  # half of a voice among three
    return found * BLOCK / S


def setup(sim: SimGateway, client: redis.Redis, room: Room, track_ogg: bytes) -> None:
    meta: dict[str, float | str] = {"bucket_spacing_s": SPACING_S, "n_buckets": N_BUCKETS}
    if room.kind == "password":
        meta["password_hash"] = hash_password("choir")
    sim.create_room(room.name, **meta)
    wait_until(lambda: sim.owner(room.name) is not None, 10, f"an owner for {room.name}")
    for singer, _freq, _lo in VOICES:
        assert sim.join(room.name, singer, singer.upper()).ok
    for cmd in (Lead(), SetLeaderBoost(boost_db=0.0)):
        assert sim.command(room.name, "a", cmd).ok
    room.delays = {s: sim.member_delay(room.name, s) for s, _f, _l in VOICES}
    if room.ending == "track":
        track = Track(id=f"t-{room.length:012x}", name="t", samples=room.length)
        client.set(keys.room_track(room.name, track.id), track_ogg)
        assert sim.command(room.name, "a", AddTrack(track=track)).ok
        room.track, _ = sf.read(io.BytesIO(track_ogg), dtype="float32")


def start(sim: SimGateway, room: Room) -> None:
    assert sim.command(room.name, "a", Start()).ok
    room.start = int(sim.state(room.name)["song"]["start_pos"])
    room.voices = [
        Voice(sim, room.name, s, f, room.delays[s], room.start + lo * CHUNK, room.start + 3600 * S)
        for s, f, lo in VOICES
    ]


def step(sim: SimGateway, room: Room) -> None:
    """Move one room's song along: end it the room's way once it is ``length`` long."""
    leader = room.voices[0]
    due = room.start + room.length
    if room.phase == "singing":
        if room.ending == "track":
            song = sim.state(room.name)["song"] if leader.next_pos >= due else {"running": True}
            if not song["running"]:
                ended(room, int(song["end_pos"]))
        elif room.ending == "leader left":
            if leader.next_pos >= due - S:  # the leader's last second is in before they leave
                leader.hi = leader.next_pos
                room.phase = "leaving"
        elif leader.next_pos >= due:
            assert sim.command(room.name, "a", Stop()).ok
            ended(room, int(sim.state(room.name)["song"]["end_pos"]))
            if room.ending == "next song":
                assert sim.command(room.name, "a", Start()).ok
    elif room.phase == "leaving" and now_samples() >= due + room.delays["a"]:
        assert sim.command(room.name, "a", Leave()).ok
        ended(room, int(sim.state(room.name)["song"]["end_pos"]))


def ended(room: Room, end: int) -> None:
    room.end, room.phase = end, "ended"
    for v in room.voices:
        v.hi = min(v.hi, end)


def run_length(server: RedisServer, log_dir: Path, length_s: int) -> list[dict[str, Any]]:
    client = server.client()
    client.flushall()
    sim = SimGateway(client)
    root = log_dir / f"recordings-{length_s}s"
    shutil.rmtree(root, ignore_errors=True)
    env = {"REDIS_URL": server.url, "BB_LOG_LEVEL": "INFO", "BB_RECORDINGS_DIR": str(root)}
    procs = [
        Process(["mixer"], {**env, "BB_MIXER_ID": "m1"}, log_dir, f"mixer-{length_s}s"),
        Process(["recorder"], {**env, "BB_RECORDER_ID": "r1"}, log_dir, f"rec-{length_s}s"),
    ]
    ogg = io.BytesIO()
    sf.write(ogg, tone(TRACK_HZ, 0, length_s * S, 0.2), S, format="OGG", subtype="OPUS")
    rooms = [
        Room(f"{kind[:4]}-{ending.replace(' ', '-')}-{length_s}", kind, ending, length_s * S)
        for kind in KINDS
        for ending in ENDINGS
    ]
    try:
        wait_until(lambda: client.zcard(keys.MIXERS) == 1, 30, "the mixer")
        for room in rooms:
            setup(sim, client, room, ogg.getvalue())
        for room in rooms:
            start(sim, room)
        cursors = {keys.room_events(r.name): b"0-0" for r in rooms}
        by_key = {keys.room_events(r.name): r for r in rooms}
        deadline = time.monotonic() + length_s + 120
        while any(r.announced is None for r in rooms):
            if time.monotonic() > deadline:
                raise SystemExit("not every recording was announced: " + str(log_dir))
            for room in rooms:
                for v in room.voices:
                    v.pump()
                step(sim, room)
            reply = client.xread(cursors, count=200, block=20)  # type: ignore[arg-type]
            for key, entries in parse_xread(reply):
                for entry_id, value in entries:
                    cursors[key] = entry_id
                    event = decode_event(value)
                    room = by_key[key]
                    if isinstance(event, Recorded) and event.start_pos == room.start:
                        room.announced = now_samples()
    finally:
        for proc in reversed(procs):
            proc.stop()
    return [measure(root, room) for room in rooms]


def measure(root: Path, room: Room) -> dict[str, Any]:
    [sidecar_path] = [
        p for p in (root / room.name).glob("*.json") if json.loads(p.read_text())["song"] == 1
    ]
    sidecar = json.loads(sidecar_path.read_text())
    recorded, _ = sf.read(sidecar_path.parent / sidecar["flac"], dtype="float32")
    want = expected(room)
    same = len(recorded) == len(want)
    exact = float(np.mean(np.abs(recorded - want) <= 2e-3)) if same else 0.0
    voices = {}
    for v in room.voices:
        sung = max(0, min(v.hi, room.end) - max(v.lo, room.start)) / S
        voices[v.singer] = {"sung_s": sung, "found_s": voice_seconds(recorded, room.start, v.freq)}
    assert room.announced is not None
    return {
        "room": room.kind,
        "ending": room.ending,
        "length_s": (room.end - room.start) / S,
        "recorded_s": len(recorded) / S,
        "exact": exact,
        "voices": voices,
        "listed_after_end_s": (room.announced - (room.end + TAP)) / S,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run every length in turn; prints the table and writes the JSON."""
    del argv
    server = RedisServer()
    server.start()
    log_dir = results_dir() / "recorder_matrix"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        rows = [row for length in LENGTHS_S for row in run_length(server, log_dir, length)]
    finally:
        server.stop()
    print(f"{'room':9} {'ended by':12} {'song s':>6}  {'voices found / sung (s)':32} exact  listed")
    for r in rows:
        found = "  ".join(
            f"{s}:{v['found_s']:.1f}/{v['sung_s']:.1f}" for s, v in r["voices"].items()
        )
        print(
            f"{r['room']:9} {r['ending']:12} {r['length_s']:6.1f}  {found:32} "
            f"{r['exact']:5.3f}  {r['listed_after_end_s']:+.2f} s"
        )
    waits = [r["listed_after_end_s"] for r in rows]
    print(
        f"median, the tap playing the end to the recording listed: {statistics.median(waits):.2f} s"
    )
    results: dict[str, object] = {
        "rows": rows,
        "median_listed_after_end_s": statistics.median(waits),
        "wall_s": time.monotonic() - started,
    }
    print(f"JSON: {write_results('recorder_matrix', results)}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
