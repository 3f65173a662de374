"""What recording costs and how fast a recorder is replaced: ``python -m bench.recorder``.

Part 1: one mixer and one recorder; ROOMS rooms, three singers each (three
buckets) singing tones for SONG_S seconds. CPU of both processes over the
same run (from /proc), per recorded room-second, and the files' sizes.
Part 2: two recorders; the one recording is SIGKILLed mid-song; the time
until the other holds the lease, the silence left in the file, and the
total time from the kill to the successor's first write. tests/test_recorder.py
checks that the recording is right and the takeover happens; this says how
much it costs and how fast. Writes ``bench-results/recorder.json``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.results import RESULTS_DIR, print_table, write_results
from common import keys
from common.clock import now_samples
from common.commands import Lead, SetLeaderBoost, Start, Stop
from common.constants import SAMPLE_RATE
from tests.simgateway import CHUNK, SimGateway, tone
from tests.support import Process, RedisServer, wait_for

ROOMS = 8
SONG_S = 30.0
KILL_ROUNDS = 3
SPACING_S = 1.5


def cpu_s(proc: Process) -> float:
    """User + system CPU seconds of a child process so far."""
    fields = Path(f"/proc/{proc.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Choir:
    """Three singers in buckets 0, 1, 2 of one room, singing from the song's start."""

    def __init__(self, sim: SimGateway, room: str) -> None:
        self.sim, self.room = sim, room
        sim.create_room(room, bucket_spacing_s=SPACING_S, n_buckets=4)

    def start(self) -> int:
        sim, room = self.sim, self.room
        for singer in "abc":
            assert sim.join(room, singer, f"Singer {singer}").ok
        for cmd in (Lead(), SetLeaderBoost(boost_db=0.0), Start()):
            assert sim.command(room, "a", cmd).ok
        self.start_pos = int(sim.state(room)["song"]["start_pos"])
        self.next = {s: self.start_pos for s in "abc"}
        self.delays = {s: sim.member_delay(room, s) for s in "abc"}
        return self.start_pos

    def pump(self) -> None:
        for singer, freq in zip("abc", (440, 660, 990), strict=True):
            while self.next[singer] + CHUNK + self.delays[singer] <= now_samples():
                pos = self.next[singer]
                self.sim.push(self.room, singer, pos, tone(freq, pos, CHUNK))
                self.next[singer] = pos + CHUNK

    def stop(self) -> None:
        assert self.sim.command(self.room, "a", Stop()).ok


def sing(choirs: list[Choir], until: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for choir in choirs:
            choir.pump()
        if until():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def flacs(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.flac"))


def cost(server: RedisServer, log_dir: Path) -> dict[str, float]:
    client = server.client()
    client.flushall()
    sim = SimGateway(client)
    root = log_dir / "recordings-cost"
    shutil.rmtree(root, ignore_errors=True)  # an earlier run's
    env = {"REDIS_URL": server.url, "BB_LOG_LEVEL": "WARNING", "BB_RECORDINGS_DIR": str(root)}
    mixer = Process(["mixer"], {**env, "BB_MIXER_ID": "bench-m"}, log_dir, "bench-mixer")
    recorder = Process(["recorder"], {**env, "BB_RECORDER_ID": "bench-r"}, log_dir, "bench-rec")
    try:
        wait_for(lambda: client.zcard(keys.MIXERS) == 1, 20, "the mixer")
        choirs = [Choir(sim, f"room{i}") for i in range(ROOMS)]
        wait_for(lambda: all(sim.owner(c.room) for c in choirs), 20, "every room owned")
        mixer_0, recorder_0, wall_0 = cpu_s(mixer), cpu_s(recorder), time.monotonic()
        for choir in choirs:
            choir.start()
        sing(choirs, lambda: time.monotonic() > wall_0 + SONG_S, SONG_S + 10)
        # Up to here the recorder only reads and appends (its tap lags 7.5 s).
        live_s = cpu_s(recorder) - recorder_0
        for choir in choirs:
            choir.stop()
        sing(choirs, lambda: len(flacs(root)) == ROOMS, 60)
        mixer_s, recorder_s = cpu_s(mixer) - mixer_0, cpu_s(recorder) - recorder_0
        wall = time.monotonic() - wall_0
        recorded = sum(sf.info(str(f)).frames for f in flacs(root)) / SAMPLE_RATE
        flac_bytes = sum(f.stat().st_size for f in flacs(root))
        ogg_bytes = sum(f.with_suffix(".ogg").stat().st_size for f in flacs(root))
    finally:
        recorder.stop()
        mixer.stop()
        client.close()
    return {
        "rooms": ROOMS,
        "recorded_room_s": recorded,
        "wall_s": wall,
        "recorder_cpu_s": recorder_s,
        "mixer_cpu_s": mixer_s,
        "recorder_cpu_ms_per_room_s": 1000 * recorder_s / recorded,
        "recorder_live_cpu_ms_per_room_s": 1000 * live_s / (ROOMS * (SONG_S - 7.5)),
        "mixer_cpu_ms_per_room_s": 1000 * mixer_s / recorded,
        "flac_mb_per_hour": flac_bytes / recorded * 3600 / 1e6,
        "ogg_mb_per_hour": ogg_bytes / recorded * 3600 / 1e6,
    }


def takeover(server: RedisServer, log_dir: Path, index: int) -> dict[str, float]:
    client = server.client()
    client.flushall()
    sim = SimGateway(client)
    root = log_dir / f"recordings-kill{index}"
    shutil.rmtree(root, ignore_errors=True)
    env = {"REDIS_URL": server.url, "BB_LOG_LEVEL": "WARNING", "BB_RECORDINGS_DIR": str(root)}
    mixer = Process(["mixer"], {**env, "BB_MIXER_ID": "bench-m"}, log_dir, "bench-mixer-k")
    recorders = {
        rid: Process(["recorder"], {**env, "BB_RECORDER_ID": rid}, log_dir, f"bench-{rid}")
        for rid in (f"r1-{index}", f"r2-{index}")
    }
    try:
        wait_for(lambda: client.zcard(keys.MIXERS) == 1, 20, "the mixer")
        choir = Choir(sim, "room")
        wait_for(lambda: sim.owner("room"), 20, "the room owned")
        start = choir.start()

        def take_bytes() -> int:
            return sum(p.stat().st_size for p in (root / ".takes").glob("*.pcm"))

        sing([choir], lambda: take_bytes() >= 4 * SAMPLE_RATE, 30)
        holder = bytes(client.get(keys.room_reclease("room")) or b"").decode()  # type: ignore[arg-type]
        survivor = next(r for r in recorders if r != holder)
        killed = time.monotonic()
        recorders[holder].kill()
        sing(
            [choir],
            lambda: client.get(keys.room_reclease("room")) == survivor.encode(),
            30,
        )
        lease_s = time.monotonic() - killed
        size = take_bytes()
        sing([choir], lambda: take_bytes() > size, 30)
        first_write_s = time.monotonic() - killed
        sing([choir], lambda: time.monotonic() > killed + 5, 10)
        choir.stop()
        end = int(sim.state("room")["song"]["end_pos"])
        sing([choir], lambda: flacs(root), 60)
        audio, _ = sf.read(str(flacs(root)[0]), dtype="float32")
        # Silence inside the song where all three were singing: what the takeover lost.
        frames = audio[: (end - start) // 960 * 960].reshape(-1, 960)
        silent = int(np.count_nonzero(np.abs(frames[10:]).max(axis=1) < 1e-3))
    finally:
        for proc in recorders.values():
            proc.stop()
        mixer.stop()
        client.close()
    return {"lease_s": lease_s, "first_write_s": first_write_s, "gap_s": silent * 960 / SAMPLE_RATE}


def main() -> dict[str, object]:
    server = RedisServer()
    server.start()
    log_dir = RESULTS_DIR / "recorder"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        costs = cost(server, log_dir)
        kills = [takeover(server, log_dir, i) for i in range(KILL_ROUNDS)]
    finally:
        server.stop()
    results: dict[str, object] = {
        **costs,
        "takeovers": kills,
        "median_lease_takeover_s": statistics.median(k["lease_s"] for k in kills),
        "max_gap_s": max(k["gap_s"] for k in kills),
    }
    print_table(
        f"Recorder: {ROOMS} rooms x 3 singers, {SONG_S:.0f} s songs, then {KILL_ROUNDS} SIGKILLs",
        [
            ("recorded, room-s", f"{costs['recorded_room_s']:.0f}", ""),
            ("recorder CPU, ms per room-s", f"{costs['recorder_cpu_ms_per_room_s']:.2f}", ""),
            (
                "  of which while songs run",
                f"{costs['recorder_live_cpu_ms_per_room_s']:.2f}",
                "read + append",
            ),
            ("mixer CPU, ms per room-s", f"{costs['mixer_cpu_ms_per_room_s']:.2f}", "same run"),
            ("FLAC, MB per hour", f"{costs['flac_mb_per_hour']:.0f}", "3 tones"),
            ("Ogg Opus, MB per hour", f"{costs['ogg_mb_per_hour']:.0f}", ""),
            (
                "lease takeover (median), s",
                f"{results['median_lease_takeover_s']:.2f}",
                "lease TTL 3 s + <= 1 s",
            ),
            (
                "kill -> successor's first write, s",
                f"{max(k['first_write_s'] for k in kills):.2f}",
                "worst",
            ),
            ("silence left in the file (worst), s", f"{results['max_gap_s']:.2f}", "0 if < ~5 s"),
        ],
    )
    print(f"JSON: {write_results('recorder', results)}")
    return results


if __name__ == "__main__":
    main()
