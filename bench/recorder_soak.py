"""The recorder over a long run: ``python -m bench.recorder_soak`` (not part of
``make bench``: it takes ``--minutes``, 20 by default).

A private redis-server, one mixer and one recorder (real processes, as
``bench/recorder.py`` starts them), ``--rooms`` rooms of three singers
(bench/choir.py) singing back-to-back songs of ``--song-s`` seconds with
``--gap-s`` between them (the rooms' songs staggered), and
``BB_RECORDINGS_KEEP=--keep`` so that retention removes recordings all along.
With ``--stems`` every song is recorded with its stems.

Every 2 minutes it prints the recorder's, the mixer's and Redis's resident
memory (``VmRSS``), their CPU over those minutes, the recordings kept per room
and the songs recorded so far. Every second it checks the recordings folder:

- no room folder holds more than ``--keep`` finished recordings (a sidecar
  ``.json`` each). Retention runs just after a recording's sidecar appears,
  so one more can be there for an instant: that is counted (``transient``),
  and it is a violation only when it is still so a second later;
- every file of a room folder belongs to a recording whose sidecar is there,
  or is a ``.tmp`` being written. A file of a recording whose sidecar was seen
  and is gone (retention left it behind), still there a second later, is a
  violation; so is a file with no sidecar for more than a minute (a recording
  never finished);
- each new recording, as it appears: its sidecar's positions are the song's
  (as the mixer's state said when it started and stopped), its FLAC (and each
  stem) lasts ``end_pos - start_pos`` within 0.1 s, and holds no silence
  longer than 1 s (all three sing throughout).

At the end (the songs stopped, the last recordings written) every song that
ended was recorded (its number seen in a sidecar at some point: retention
removes most of them later), and ``.takes/`` is empty. A violation is printed
and the exit code is 1. Writes ``bench-results/recorder_soak.json``: the
2-minute samples, the RSS growth, each file checked (its length, and where its
longest silence starts and how long it is) and the violations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import soundfile as sf

from bench.choir import Choir, sing
from bench.procstat import cpu_s, rss_mb
from bench.results import print_grid, results_dir, write_results
from common import keys, records
from common.constants import SAMPLE_RATE
from common.records import MixerStatus
from recorder.files import TAKES
from recorder.service import RecorderStatus
from tests.simgateway import SimGateway
from tests.support import Process, RedisServer, wait_for

REPORT_EVERY_S: Final = 120.0
CHECK_EVERY_S: Final = 1.0
WARMUP_S: Final = 240.0
"""RSS growth is measured from here (or half the run, if shorter) to the end."""
LENGTH_TOLERANCE_S: Final = 0.1
MAX_SILENCE_S: Final = 1.0
SILENT: Final = 1e-3
"""A 20 ms frame whose peak is below this is silent (the tones peak at 0.2-0.3)."""
UNFINISHED_S: Final = 60.0
"""A file without a sidecar this long is a recording that was never finished."""
FRAME: Final = 960


@dataclass(frozen=True)
class Options:
    minutes: float
    song_s: float
    gap_s: float
    rooms: int
    keep: int
    stems: bool


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.recorder_soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0, help="how long the rooms sing")
    parser.add_argument("--song-s", type=float, default=120.0, help="each song's length")
    parser.add_argument("--gap-s", type=float, default=3.0, help="between a room's songs")
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--keep", type=int, default=3, help="BB_RECORDINGS_KEEP")
    parser.add_argument("--stems", action="store_true", help="record every song's stems")
    args = parser.parse_args(argv)
    if args.gap_s < 1.5:
        parser.error("--gap-s must be at least 1.5 (the recorder looks at songs every second)")
    return Options(args.minutes, args.song_s, args.gap_s, args.rooms, args.keep, args.stems)


@dataclass
class Song:
    room: str
    number: int
    start_pos: int
    end_pos: int | None = None


@dataclass
class Schedule:
    """One room's songs: sing ``song_s``, stop, wait ``gap_s``, start again."""

    choir: Choir
    next_at: float
    running: Song | None = None
    songs: list[Song] = field(default_factory=list)


def longest_silence(audio: np.ndarray[Any, Any]) -> tuple[float, float]:
    """The longest run of silent 20 ms frames: ``(where it starts, how long)``, in seconds."""
    frames = audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME)
    silent = np.abs(frames).max(axis=1) < SILENT
    # Runs of silent frames: the edges where the flag changes, padded at both ends.
    edges = np.flatnonzero(np.diff(np.concatenate(([0], silent.astype(np.int8), [0]))))
    starts, ends = edges[::2], edges[1::2]
    if not len(starts):
        return 0.0, 0.0
    longest = int(np.argmax(ends - starts))
    frame_s = FRAME / SAMPLE_RATE
    return float(starts[longest] * frame_s), float((ends[longest] - starts[longest]) * frame_s)


class Shelf:
    """The recordings folder as the soak watches it (see the module's docstring)."""

    def __init__(self, root: Path, keep: int, songs: dict[tuple[str, int], Song]) -> None:
        self.root, self.keep, self.songs = root, keep, songs
        self.seen: dict[str, dict[str, Any]] = {}
        """Every recording whose sidecar appeared: its id (file name stem) -> sidecar."""
        self.violations: list[str] = []
        self.transient = 0
        self.files: list[dict[str, Any]] = []
        """Every file checked: its length and its longest silence (where, how long)."""
        self.kept: dict[str, int] = {}
        self._over: set[str] = set()
        self._left: set[Path] = set()
        self._unfinished: dict[Path, float] = {}
        self._reported: set[object] = set()

    def violation(self, message: str, key: object = None) -> None:
        """Report ``message`` (once per ``key``, when given: a state that lasts is one)."""
        if key is not None:
            if key in self._reported:
                return
            self._reported.add(key)
        print(f"VIOLATION: {message}", flush=True)
        self.violations.append(message)

    def folders(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != TAKES)

    def final_check(self) -> None:
        """Once everything is written: every file belongs to a recording that is there."""
        for folder in self.folders():
            names = [p.name for p in folder.iterdir()]
            sidecars = {n.removesuffix(".json") for n in names if n.endswith(".json")}
            if len(sidecars) > self.keep:
                self.violation(f"{folder.name} ends with {len(sidecars)} recordings")
            for name in names:
                if name.split(".", 1)[0] not in sidecars:
                    self.violation(f"{folder.name}/{name}: belongs to no recording at the end")

    def check(self, now: float) -> None:
        over: set[str] = set()
        left: set[Path] = set()
        for folder in self.folders():
            try:
                names = [p.name for p in folder.iterdir()]
            except FileNotFoundError:
                continue
            sidecars = {n.removesuffix(".json") for n in names if n.endswith(".json")}
            self.kept[folder.name] = len(sidecars)
            if len(sidecars) > self.keep:
                over.add(folder.name)
                if len(sidecars) > self.keep + 1 or folder.name in self._over:
                    self.violation(
                        f"{folder.name} holds {len(sidecars)} recordings (keep {self.keep}): "
                        + ", ".join(sorted(sidecars)),
                        key=("over", folder.name, frozenset(sidecars)),
                    )
                else:
                    self.transient += 1
            for name in names:
                if name.endswith(".tmp"):
                    continue
                recording = name.split(".", 1)[0]
                path = folder / name
                if recording in sidecars:
                    self._unfinished.pop(path, None)
                elif recording in self.seen:
                    left.add(path)
                    if path in self._left:
                        self.violation(
                            f"{path.name}: left behind when its recording was removed",
                            key=("left", path),
                        )
                elif now - self._unfinished.setdefault(path, now) > UNFINISHED_S:
                    self.violation(
                        f"{path.name}: no sidecar for {UNFINISHED_S:.0f} s", key=("alone", path)
                    )
            for recording in sorted(sidecars - set(self.seen)):
                self._new(folder, recording)
        self._over, self._left = over, left

    def _new(self, folder: Path, recording: str) -> None:
        try:
            sidecar = json.loads((folder / f"{recording}.json").read_text())
        except (OSError, ValueError) as exc:
            self.violation(f"{recording}.json unreadable: {exc}")
            self.seen[recording] = {}
            return
        self.seen[recording] = sidecar
        song = self.songs.get((sidecar["room"], sidecar["song"]))
        if song is None or song.end_pos is None:
            self.violation(f"{recording}: a recording of no song that ended ({sidecar['song']})")
            return
        if (sidecar["start_pos"], sidecar["end_pos"]) != (song.start_pos, song.end_pos):
            self.violation(
                f"{recording}: positions {sidecar['start_pos']}..{sidecar['end_pos']}, "
                f"the song was {song.start_pos}..{song.end_pos}"
            )
        want_s = (song.end_pos - song.start_pos) / SAMPLE_RATE
        for name in [sidecar["flac"], *(s["file"] for s in sidecar["stems"] if s["singer"])]:
            try:
                audio, _rate = sf.read(str(folder / name), dtype="float32")
            except (OSError, RuntimeError) as exc:  # removed already, or unreadable
                self.violation(f"{name}: unreadable: {exc}")
                continue
            length_s = len(audio) / SAMPLE_RATE
            if abs(length_s - want_s) > LENGTH_TOLERANCE_S:
                self.violation(f"{name}: {length_s:.3f} s long, the song {want_s:.3f} s")
            at_s, quiet_s = longest_silence(audio)
            self.files.append(
                {"file": name, "length_s": length_s, "silence_s": quiet_s, "silence_at_s": at_s}
            )
            if quiet_s > MAX_SILENCE_S:
                self.violation(f"{name}: {quiet_s:.2f} s of silence inside, from {at_s:.2f} s")


def mixer_overruns(client: Any, mixer_id: str) -> int:
    raw = client.get(keys.mixer_heartbeat(mixer_id))
    return records.decode(raw, MixerStatus).counters["tick_overruns"] if raw else -1


def soak(opts: Options) -> dict[str, object]:
    log_dir = results_dir() / "recorder_soak"
    root = log_dir / "recordings"
    shutil.rmtree(root, ignore_errors=True)  # an earlier run's
    root.mkdir(parents=True)
    server = RedisServer()
    server.start()
    assert server.proc is not None
    client = server.client()
    env = {
        "REDIS_URL": server.url,
        "BB_LOG_LEVEL": "WARNING",
        "BB_RECORDINGS_DIR": str(root),
        "BB_RECORDINGS_KEEP": str(opts.keep),
    }
    mixer = Process(["mixer"], {**env, "BB_MIXER_ID": "soak-m"}, log_dir, "mixer")
    recorder = Process(["recorder"], {**env, "BB_RECORDER_ID": "soak-r"}, log_dir, "recorder")
    pids = {"recorder": recorder.proc.pid, "mixer": mixer.proc.pid, "redis": server.proc.pid}
    songs: dict[tuple[str, int], Song] = {}
    shelf = Shelf(root, opts.keep, songs)
    samples: list[dict[str, Any]] = []
    try:
        wait_for(lambda: client.zcard(keys.MIXERS) == 1, 20, "the mixer")
        wait_for(lambda: client.exists(keys.recorder_heartbeat("soak-r")), 20, "the recorder")
        sim = SimGateway(client)
        choirs = [Choir(sim, f"soak{i}") for i in range(opts.rooms)]
        wait_for(lambda: all(sim.owner(c.room) for c in choirs), 20, "every room owned")
        for choir in choirs:
            choir.join()
        began = time.monotonic()
        stagger = (opts.song_s + opts.gap_s) / opts.rooms
        rooms = [Schedule(c, began + i * stagger) for i, c in enumerate(choirs)]
        singing_until = began + 60 * opts.minutes
        last_at, last_cpu = began, {name: cpu_s(pid) for name, pid in pids.items()}

        def sample(now: float) -> None:
            nonlocal last_at, last_cpu
            cpu = {name: cpu_s(pid) for name, pid in pids.items()}
            span = now - last_at
            row: dict[str, Any] = {
                "minute": (now - began) / 60,
                **{f"{n}_rss_mb": rss_mb(pid) for n, pid in pids.items()},
                **{f"{n}_cpu_pct": 100 * (cpu[n] - last_cpu[n]) / span for n in pids},
                "kept": dict(shelf.kept),
                "recorded": len(shelf.seen),
                "ended": sum(1 for s in songs.values() if s.end_pos is not None),
                "tick_overruns": mixer_overruns(client, "soak-m"),
            }
            last_at, last_cpu = now, cpu
            samples.append(row)
            kept = " ".join(f"{r}:{k}" for r, k in sorted(row["kept"].items()))
            print(
                f"min {row['minute']:5.1f}  RSS recorder {row['recorder_rss_mb']:6.1f} MB"
                f"  mixer {row['mixer_rss_mb']:6.1f} MB  redis {row['redis_rss_mb']:6.1f} MB"
                f"  CPU recorder {row['recorder_cpu_pct']:4.1f} %"
                f"  mixer {row['mixer_cpu_pct']:4.1f} %"
                f"  kept {kept}  recorded {row['recorded']}/{row['ended']} ended"
                f"  overruns {row['tick_overruns']}",
                flush=True,
            )

        next_check, next_report = began, began + REPORT_EVERY_S

        def step() -> None:
            nonlocal next_check, next_report
            now = time.monotonic()
            for room in rooms:
                if now < room.next_at:
                    continue
                if room.running is not None:
                    room.running.end_pos = room.choir.stop()
                    room.running, room.next_at = None, now + opts.gap_s
                elif now < singing_until:
                    if opts.stems and not room.songs:
                        room.choir.record_stems()  # for every song to come
                    number, start = room.choir.start()
                    song = Song(room.choir.room, number, start)
                    songs[(song.room, number)] = song
                    room.songs.append(song)
                    room.running, room.next_at = song, now + opts.song_s
                else:
                    room.next_at = float("inf")
            if now >= next_check:
                next_check = now + CHECK_EVERY_S
                shelf.check(now)
            if now >= next_report:
                next_report += REPORT_EVERY_S
                sample(now)

        sing(
            client, choirs, lambda: time.monotonic() >= singing_until, 60 * opts.minutes + 60, step
        )
        for room in rooms:  # the songs in progress stop now
            if room.running is not None:
                room.next_at = 0.0
        step()
        if not samples or samples[-1]["minute"] < opts.minutes - 0.1:
            sample(time.monotonic())
        ended = [s for s in songs.values() if s.end_pos is not None]

        def all_recorded() -> bool:
            seen = {(s.get("room"), s.get("song")) for s in shelf.seen.values()}
            return all((s.room, s.number) in seen for s in ended)

        with contextlib.suppress(AssertionError):  # reported below, song by song
            sing(client, choirs, all_recorded, 180, step)
        shelf.final_check()
        seen = {(s.get("room"), s.get("song")) for s in shelf.seen.values()}
        for song in ended:
            if (song.room, song.number) not in seen:
                shelf.violation(f"{song.room} song {song.number}: ended, never recorded")
        leftovers = sorted(p.name for p in (root / TAKES).iterdir())
        if leftovers:
            shelf.violation(f".takes/ still holds {leftovers}")
        raw = client.get(keys.recorder_heartbeat("soak-r"))
        counters = records.decode(raw, RecorderStatus).counters
    finally:
        recorder_code = recorder.stop()
        mixer.stop()
        client.close()
        server.stop()
    for proc in (recorder, mixer):
        if "Traceback" in proc.log():
            shelf.violation(f"{proc.name} logged a traceback (see {proc.log_path})")
    if recorder_code != 0:
        shelf.violation(f"the recorder exited with {recorder_code}")
    warm = min(WARMUP_S / 60, opts.minutes / 2)
    base = next(s for s in samples if s["minute"] >= warm - 0.05)
    end = samples[-1]
    growth = {
        name: end[f"{name}_rss_mb"] - base[f"{name}_rss_mb"]
        for name in ("recorder", "mixer", "redis")
    }
    return {
        "options": asdict(opts),
        "samples": samples,
        "rss_growth_mb": growth,
        "rss_growth_from_minute": base["minute"],
        "rss_growth_to_minute": end["minute"],
        "songs_ended": len(ended),
        "recordings_seen": len(shelf.seen),
        "files_checked": shelf.files,
        "transient_over_keep": shelf.transient,
        "recorder_counters": counters,
        "violations": shelf.violations,
    }


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    print(
        f"Recorder soak: {opts.minutes:g} min, {opts.rooms} rooms x 3 singers, "
        f"{opts.song_s:g} s songs {opts.gap_s:g} s apart, keep {opts.keep}"
        f"{', stems' if opts.stems else ''}",
        flush=True,
    )
    results = soak(opts)
    growth, checked = results["rss_growth_mb"], results["files_checked"]
    assert isinstance(growth, dict) and isinstance(checked, list)
    print()
    print_grid(
        f"RSS growth from minute {results['rss_growth_from_minute']:.1f} "
        f"to {results['rss_growth_to_minute']:.1f}",
        ["", "recorder", "mixer", "redis"],
        [["MB", *(f"{growth[n]:+.1f}" for n in ("recorder", "mixer", "redis"))]],
    )
    print(
        f"songs ended {results['songs_ended']}, recorded {results['recordings_seen']}, "
        f"files checked {len(checked)}, one over keep for an instant "
        f"{results['transient_over_keep']} times"
    )
    print(f"JSON: {write_results('recorder_soak', results)}")
    violations = results["violations"]
    assert isinstance(violations, list)
    if violations:
        print(f"FAILED: {len(violations)} violation(s):", *violations, sep="\n  ")
        return 1
    print("OK: no violation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
