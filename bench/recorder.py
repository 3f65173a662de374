"""What recording costs, what it costs the mixer, and how fast a recorder is replaced:
``python -m bench.recorder``.

Part 1, the cost. ROOMS rooms of three singers (bench/choir.py) sing songs of
SONG_S seconds under three conditions, each run ROUNDS times, alternating
(alone, recorder, stems, alone, ...), so that the machine's drift shows as the
spread between runs of the same condition:

- **alone**: the mixer only;
- **recorder**: the mixer and one recorder;
- **stems**: the same, the leader having asked for stems;
- **tap**, on request (``--conditions alone,tap,recorder``): no recorder, but
  the recorder's tap kept subscribed in every room as the recorder keeps it,
  unread: the mixer's own share of a recorder's cost (one more tap per room)
  apart from sharing the cores and Redis with a recorder.

Each run is a fresh mixer (and recorder) on an emptied Redis. Over the songs'
SONG_S seconds, the mixer's:

- CPU per room-second of song (utime + stime from /proc);
- tick overruns (the counter in its heartbeat: a tick that ended after the
  next one was due);
- tick timing, read from one tap stream (the leader's, in the last room).
  Every window carries the ``clock`` the mixer read in the tick that wrote it
  (once per tick, after reading its streams) and its stream entry id is the
  time Redis appended it. The **interval** between consecutive windows'
  clocks is the tick period, 100 ms when every tick runs on time; a tick that
  starts late shows as a longer interval. The **write** time, from the clock
  to the entry, is the tick's work for every room and its pipeline.

And the recorder's CPU per recorded room-second: in total (from the songs'
start to its last file, the FLAC and Ogg Opus encoding included) and while the
songs run (reading and appending, per room-second appended).

Part 2, the takeover: two recorders; the one recording is SIGKILLed mid-song;
the time until the other holds the lease, the silence left in the file, and
the time from the kill to the successor's first write.

tests/test_recorder.py checks that the recordings are right and the takeover
happens; this says what they cost and how fast. ``bench/recorder_soak.py`` is
the long run (memory, retention). Writes ``bench-results/recorder.json`` (with
other conditions than the default, ``recorder-<conditions>.json``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import redis
import soundfile as sf

from bench.choir import Choir, pump, sing
from bench.procstat import cpu_s
from bench.results import print_grid, print_table, results_dir, write_results
from common import keys, records
from common.commands import Envelope, SubscribeTap, encode_envelope
from common.constants import SAMPLE_RATE
from common.records import MixerStatus
from common.streams import parse_entries
from common.wire import decode_tap
from recorder.core import recording_delay
from recorder.files import TAKES
from recorder.service import SUBSCRIBE_EVERY_S, SUBSCRIBE_TTL_S, SUBSCRIBER
from tests.simgateway import SimGateway
from tests.support import Process, RedisServer, wait_for

ROOMS: Final = 8
SONG_S: Final = 25.0
ROUNDS: Final = 2
CONDITIONS: Final = ("alone", "recorder", "stems")
LABELS: Final = {
    "alone": "alone",
    "tap": "a recorder's tap, no recorder",
    "recorder": "with a recorder",
    "stems": "with a recorder of stems",
}
"""Every condition; ``tap`` (on request) subscribes the recorder's tap in every room, as
the recorder does, but runs no recorder: the mixer's own share of the recorder's cost."""
KILL_ROUNDS: Final = 3
MIXER_ID: Final = "bench-m"
RECORDER_ID: Final = "bench-r"
TICK_MS: Final = 100.0
"""The mixer's tick period (``BB_TICK_MS``, default)."""


def flacs(root: Path) -> list[Path]:
    """The mix of each finished recording (its sidecar is written last)."""
    sidecars = (p for p in root.glob("*/*.json") if p.parent.name != TAKES)
    return sorted(p.with_suffix(".flac") for p in sidecars)


def mixer_counters(client: redis.Redis) -> dict[str, int]:
    """The counters of the mixer's latest heartbeat (written every 0.5 s)."""
    return records.decode(client.get(keys.mixer_heartbeat(MIXER_ID)), MixerStatus).counters


def take_samples(root: Path) -> int:
    """Samples appended to the mix takes in progress (stems left out)."""
    takes = (root / TAKES).glob("*.pcm")
    return sum(p.stat().st_size for p in takes if ".stem." not in p.name) // 2


class TickWatch:
    """The mixer's tick timing as one tap stream shows it (see the module's docstring).

    :meth:`poll` reads what the stream gained (at most once a second: the
    stream keeps the last 50 windows, 5 s).
    """

    def __init__(self, client: redis.Redis, room: str, delay: int) -> None:
        self.client, self.key = client, keys.room_tap(room, delay)
        self.cursor = b"-"
        self.clocks: list[int] = []
        self.arrivals_ms: list[int] = []
        self.jumps = 0
        """Windows that do not start where the last one ended: the mixer skipped frames
        (a tap more than 50 frames behind), or the stream was trimmed before it was read."""
        self._next_start: int | None = None
        self._next_poll = 0.0

    def begin(self) -> None:
        """Measure from now on."""
        newest = parse_entries(self.client.xrevrange(self.key, count=1))
        self.cursor = b"(" + newest[0][0] if newest else b"-"
        self.clocks.clear()
        self.arrivals_ms.clear()
        self._next_start, self.jumps = None, 0

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if now < self._next_poll and not force:
            return
        self._next_poll = now + 1.0
        for entry_id, value in parse_entries(self.client.xrange(self.key, min=self.cursor)):
            self.cursor = b"(" + entry_id
            window = decode_tap(value or b"")
            if self._next_start is not None and window.start != self._next_start:
                self.jumps += 1
            self._next_start = window.start + len(window.samples)
            self.clocks.append(window.clock)
            self.arrivals_ms.append(int(entry_id.split(b"-")[0]))

    def figures(self) -> dict[str, float]:
        clock_ms = np.array(self.clocks, dtype=np.float64) * 1000 / SAMPLE_RATE
        interval = np.diff(clock_ms)
        write = np.array(self.arrivals_ms, dtype=np.float64) - clock_ms
        return {
            "windows": len(self.clocks),
            "tap_jumps": self.jumps,
            **_percentiles("tick_interval_ms", interval),
            **_percentiles("tick_write_ms", write),
        }


class TapSubscriber:
    """Keeps the recorder's tap subscribed in every room, as the recorder does (every 2 s,
    alive 10 s, where the last occupied bucket hears every voice), without reading it."""

    def __init__(self, client: redis.Redis, choirs: list[Choir]) -> None:
        self.client = client
        self.delays: dict[str, int] = {}
        for choir in choirs:
            meta: Any = client.hgetall(keys.room_meta(choir.room))
            raw: Any = client.hgetall(keys.room_members(choir.room))
            members = [records.decode(value, records.Member) for value in raw.values()]
            self.delays[choir.room] = recording_delay(records.decode_meta(meta), members)
        self._next = 0.0

    def poll(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + SUBSCRIBE_EVERY_S
        with self.client.pipeline(transaction=False) as pipe:
            for room, delay in self.delays.items():
                cmd = SubscribeTap(delay_s=delay / SAMPLE_RATE, ttl_s=SUBSCRIBE_TTL_S)
                envelope = Envelope(singer=SUBSCRIBER, gw="bench-tap", cmd=cmd)
                pipe.xadd(keys.room_ctl(room), {"d": encode_envelope(envelope)})
            pipe.execute()


def _percentiles(name: str, values: np.ndarray[Any, Any]) -> dict[str, float]:
    if not len(values):
        return {f"{name}_{p}": float("nan") for p in ("p50", "p99", "max")}
    p50, p99 = np.percentile(values, [50, 99])
    return {f"{name}_p50": p50, f"{name}_p99": p99, f"{name}_max": float(values.max())}


def cost(server: RedisServer, log_dir: Path, condition: str, index: int) -> dict[str, Any]:
    """One run of ``condition``: ROOMS rooms sing one SONG_S song each."""
    client = server.client()
    client.flushall()
    sim = SimGateway(client)
    name = f"{condition}{index}"
    root = log_dir / f"recordings-{name}"
    shutil.rmtree(root, ignore_errors=True)  # an earlier run's
    env = {"REDIS_URL": server.url, "BB_LOG_LEVEL": "WARNING", "BB_RECORDINGS_DIR": str(root)}
    mixer = Process(["mixer"], {**env, "BB_MIXER_ID": MIXER_ID}, log_dir, f"mixer-{name}")
    recorder = None
    if condition in ("recorder", "stems"):
        recorder_env = {**env, "BB_RECORDER_ID": RECORDER_ID}
        recorder = Process(["recorder"], recorder_env, log_dir, f"recorder-{name}")

    def recorder_cpu() -> float:
        return cpu_s(recorder.proc.pid) if recorder is not None else 0.0

    began = time.monotonic()
    try:
        wait_for(lambda: client.zcard(keys.MIXERS) == 1, 20, "the mixer")
        if recorder is not None:
            heartbeat = keys.recorder_heartbeat(RECORDER_ID)
            wait_for(lambda: client.exists(heartbeat), 20, "the recorder")
        choirs = [Choir(sim, f"room{i}") for i in range(ROOMS)]
        wait_for(lambda: all(sim.owner(c.room) for c in choirs), 20, "every room owned")
        for choir in choirs:
            choir.join()
        watch = TickWatch(client, choirs[-1].room, choirs[-1].delays["a"])
        for choir in choirs:
            if condition == "stems":
                choir.record_stems()
        for choir in choirs:
            choir.start()
            pump(client, choirs)  # the rooms started first sing meanwhile, on time
        taps = TapSubscriber(client, choirs) if condition == "tap" else None

        def also() -> None:
            watch.poll()
            if taps is not None:
                taps.poll()

        watch.begin()
        counters_0 = mixer_counters(client)
        mixer_0, recorder_0 = cpu_s(mixer.proc.pid), recorder_cpu()
        wall_0 = time.monotonic()
        sing(client, choirs, lambda: time.monotonic() > wall_0 + SONG_S, SONG_S + 10, also)
        mixer_s, live_s = cpu_s(mixer.proc.pid) - mixer_0, recorder_cpu() - recorder_0
        wall = time.monotonic() - wall_0
        appended = take_samples(root) / SAMPLE_RATE
        counters_1 = mixer_counters(client)
        watch.poll(force=True)
        for choir in choirs:
            choir.stop()
        stopped = time.monotonic()
        result: dict[str, Any] = {
            "condition": condition,
            "round": index,
            "setup_s": wall_0 - began,
            "song_s": wall,
            "mixer_cpu_s": mixer_s,
            "mixer_cpu_ms_per_room_s": 1000 * mixer_s / (ROOMS * wall),
            **{
                key: counters_1[key] - counters_0[key]
                for key in ("ticks", "tick_overruns", "late", "chunks_in")
            },
            **watch.figures(),
        }
        if recorder is not None:
            sing(client, choirs, lambda: len(flacs(root)) == ROOMS, 90)
            recorder_s = recorder_cpu() - recorder_0
            recorded = sum(sf.info(str(f)).frames for f in flacs(root)) / SAMPLE_RATE
            sizes = {
                kind: sum(f.stat().st_size for f in root.glob(f"room*/*{kind}"))
                for kind in (".flac", ".ogg")
            }
            stem_bytes = sum(f.stat().st_size for f in root.glob("room*/*.stem-*.flac"))
            result |= {
                "files_s": time.monotonic() - stopped,
                "recorded_room_s": recorded,
                "recorder_cpu_s": recorder_s,
                "recorder_cpu_ms_per_room_s": 1000 * recorder_s / recorded,
                "recorder_live_cpu_ms_per_room_s": 1000 * live_s / appended,
                "flac_mb_per_hour": (sizes[".flac"] - stem_bytes) / recorded * 3600 / 1e6,
                "ogg_mb_per_hour": sizes[".ogg"] / recorded * 3600 / 1e6,
                "stems_mb_per_hour": stem_bytes / recorded * 3600 / 1e6,
            }
    finally:
        if recorder is not None:
            recorder.stop()
        mixer.stop()
        client.close()
    return result


def takeover(server: RedisServer, log_dir: Path, index: int) -> dict[str, float]:
    """SIGKILL the recorder that records the room's song; how soon and how well the other
    goes on."""
    client = server.client()
    client.flushall()
    sim = SimGateway(client)
    root = log_dir / f"recordings-kill{index}"
    shutil.rmtree(root, ignore_errors=True)
    env = {"REDIS_URL": server.url, "BB_LOG_LEVEL": "WARNING", "BB_RECORDINGS_DIR": str(root)}
    mixer = Process(["mixer"], {**env, "BB_MIXER_ID": MIXER_ID}, log_dir, f"mixer-kill{index}")
    recorders = {
        rid: Process(["recorder"], {**env, "BB_RECORDER_ID": rid}, log_dir, f"recorder-{rid}")
        for rid in (f"r1-{index}", f"r2-{index}")
    }
    try:
        wait_for(lambda: client.zcard(keys.MIXERS) == 1, 20, "the mixer")
        choir = Choir(sim, "room")
        wait_for(lambda: sim.owner("room"), 20, "the room owned")
        choir.join()
        _number, start = choir.start()
        choirs = [choir]
        sing(client, choirs, lambda: take_samples(root) >= 2 * SAMPLE_RATE, 30)
        holder = bytes(client.get(keys.room_reclease("room")) or b"").decode()  # type: ignore[arg-type]
        survivor = next(r for r in recorders if r != holder)
        killed = time.monotonic()
        recorders[holder].kill()
        sing(
            client,
            choirs,
            lambda: client.get(keys.room_reclease("room")) == survivor.encode(),
            30,
        )
        lease_s = time.monotonic() - killed
        size = take_samples(root)
        sing(client, choirs, lambda: take_samples(root) > size, 30)
        first_write_s = time.monotonic() - killed
        sing(client, choirs, lambda: time.monotonic() > killed + 5, 10)
        end = choir.stop()
        sing(client, choirs, lambda: flacs(root), 60)
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


def _mean(runs: list[dict[str, Any]], condition: str, key: str) -> float:
    return statistics.fmean(r[key] for r in runs if r["condition"] == condition)


def _spread(runs: list[dict[str, Any]], condition: str, key: str, fmt: str) -> str:
    return " / ".join(format(r[key], fmt) for r in runs if r["condition"] == condition)


def summary(runs: list[dict[str, Any]], conditions: list[str]) -> dict[str, object]:
    """Per condition, the mean of its runs; the mixer's CPU under each over alone."""
    out: dict[str, object] = {}
    for condition in conditions:
        first = next(r for r in runs if r["condition"] == condition)
        out[condition] = {
            key: _mean(runs, condition, key) for key in first if key not in ("condition", "round")
        }
    if "alone" in conditions:
        alone = _mean(runs, "alone", "mixer_cpu_ms_per_room_s")
        for condition in conditions:
            if condition != "alone":
                ratio = _mean(runs, condition, "mixer_cpu_ms_per_room_s") / alone
                out[f"mixer_cpu_ratio_{condition}_vs_alone"] = ratio
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.recorder", description=__doc__)
    parser.add_argument(
        "--conditions",
        default=",".join(CONDITIONS),
        help=f"comma-separated, of {', '.join(LABELS)} (default: %(default)s); "
        "another choice writes recorder-<conditions>.json",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs of each condition")
    parser.add_argument("--kills", type=int, default=KILL_ROUNDS, help="takeover rounds")
    args = parser.parse_args(argv)
    args.conditions = args.conditions.split(",")
    if unknown := set(args.conditions) - set(LABELS):
        parser.error(f"unknown conditions: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark (``argv``: the command line; none from ``bench.all``)."""
    args = parse(argv or [])
    conditions: list[str] = args.conditions
    server = RedisServer()
    server.start()
    log_dir = results_dir() / "recorder"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        runs = [
            cost(server, log_dir, condition, index)
            for index in range(1, args.rounds + 1)
            for condition in conditions
        ]
        kills = [takeover(server, log_dir, i) for i in range(args.kills)]
    finally:
        server.stop()
    means = summary(runs, conditions)
    results: dict[str, object] = {
        "rooms": ROOMS,
        "song_s": SONG_S,
        "rounds": args.rounds,
        "conditions": conditions,
        "runs": runs,
        "means": means,
        "takeovers": kills,
        "wall_s": time.monotonic() - started,
    }
    if kills:
        results |= {
            "median_lease_takeover_s": statistics.median(k["lease_s"] for k in kills),
            "max_first_write_s": max(k["first_write_s"] for k in kills),
            "max_gap_s": max(k["gap_s"] for k in kills),
        }

    def row(label: str, fmt: str, *keys_: str) -> list[str]:
        cells = [" / ".join(format(r[k], fmt) if k in r else "-" for k in keys_) for r in runs]
        return [label, *cells]

    print_grid(
        f"Recorder and mixer: {ROOMS} rooms x 3 singers, {SONG_S:.0f} s songs, "
        f"each condition {args.rounds} times, alternating",
        ["", *(f"{r['condition']} {r['round']}" for r in runs)],
        [
            row("mixer CPU, ms per room-s", ".2f", "mixer_cpu_ms_per_room_s"),
            row("tick overruns / ticks", ".0f", "tick_overruns", "ticks"),
            row(
                "tick interval p50/p99/max, ms",
                ".0f",
                "tick_interval_ms_p50",
                "tick_interval_ms_p99",
                "tick_interval_ms_max",
            ),
            row(
                "tick write p50/p99/max, ms",
                ".1f",
                "tick_write_ms_p50",
                "tick_write_ms_p99",
                "tick_write_ms_max",
            ),
            row("tap position jumps", ".0f", "tap_jumps"),
            row("chunks late at the mixer", ".0f", "late"),
            row("recorder CPU, ms per room-s", ".2f", "recorder_cpu_ms_per_room_s"),
            row("  while songs run", ".2f", "recorder_live_cpu_ms_per_room_s"),
        ],
    )
    print()
    rows: list[tuple[str, str, str]] = []
    for condition in conditions:
        if condition == "alone" or "alone" not in conditions:
            continue
        rows.append(
            (
                f"mixer CPU, {LABELS[condition]} / alone",
                f"{means[f'mixer_cpu_ratio_{condition}_vs_alone']:.2f}",
                "runs alone "
                + _spread(runs, "alone", "mixer_cpu_ms_per_room_s", ".2f")
                + f", {condition} "
                + _spread(runs, condition, "mixer_cpu_ms_per_room_s", ".2f"),
            )
        )
    for condition in ("recorder", "stems"):
        mean = means.get(condition)
        if not isinstance(mean, dict):
            continue
        rows += [
            (
                f"recorder CPU, ms per room-s{', stems' if condition == 'stems' else ''}",
                f"{mean['recorder_cpu_ms_per_room_s']:.2f}",
                "runs " + _spread(runs, condition, "recorder_cpu_ms_per_room_s", ".2f"),
            ),
            (
                "  of which while songs run",
                f"{mean['recorder_live_cpu_ms_per_room_s']:.2f}",
                "read + append" + (", 3 stems" if condition == "stems" else ""),
            ),
            ("  FLAC, MB per hour", f"{mean['flac_mb_per_hour']:.0f}", "3 tones"),
            ("  Ogg Opus, MB per hour", f"{mean['ogg_mb_per_hour']:.0f}", ""),
        ]
        if condition == "stems":
            rows.append(("  stems (3), MB per hour", f"{mean['stems_mb_per_hour']:.0f}", ""))
    if kills:
        rows += [
            (
                "lease takeover (median), s",
                f"{results['median_lease_takeover_s']:.2f}",
                "lease TTL 3 s + <= 1 s",
            ),
            ("kill -> successor's first write, s", f"{results['max_first_write_s']:.2f}", "worst"),
            ("silence left in the file (worst), s", f"{results['max_gap_s']:.2f}", "0 if < ~5 s"),
        ]
    print_table(
        f"Recorder: summary (means of {args.rounds} runs), then {args.kills} SIGKILLs", rows
    )
    name = "recorder" if tuple(conditions) == CONDITIONS else f"recorder-{'-'.join(conditions)}"
    print(f"JSON: {write_results(name, results)}  ({results['wall_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
