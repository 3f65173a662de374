"""Song material at song positions: where a backing track and the metronome's clicks fall.

Pure arithmetic on absolute positions (samples at 48 kHz since the epoch),
shared by the mixer (when a song ends with its track) and mirrored by the
page (gateway/static/metronome.js, backing.js), which plays track sample or
click for position p exactly where it plays the room mix for p.

The song's **origin** is where its music begins: ``start_pos``, plus one bar
of clicks when the metronome counts in. Track sample 0 plays at the origin;
beat k (k = 0, 1, ...) clicks at ``origin + round_half_up(k * 60 * rate / bpm)``;
a count-in bar adds beats ``-beats .. -1``, which start exactly at ``start_pos``.
Beat k is accented when ``k mod beats == 0``. Rounding each beat from the
origin (never adding rounded periods) keeps every click sample-exact: they
cannot drift, whatever the bpm.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from common.constants import SAMPLE_RATE
from common.records import Metronome

__all__ = [
    "CLICK_ACCENT_HZ",
    "CLICK_HZ",
    "CLICK_SAMPLES",
    "MAX_IMAGE_BYTES",
    "MAX_TRACK_BYTES",
    "MAX_TRACK_RATE",
    "MAX_TRACK_S",
    "MIN_TRACK_RATE",
    "Click",
    "beat_position",
    "click_wave",
    "clicks_between",
    "count_in_samples",
    "song_end",
    "song_origin",
    "track_index",
]

MAX_TRACK_BYTES: Final = 20 * 1024 * 1024
"""Largest backing track file accepted (an upload or a library file)."""
MAX_TRACK_S: Final = 600
"""Longest backing track accepted: 10 minutes."""
MIN_TRACK_RATE: Final = 8000
MAX_TRACK_RATE: Final = 192_000
"""Sample rates a backing track may have (Hz, both included); it is resampled to 48 kHz."""
MAX_IMAGE_BYTES: Final = 5 * 1024 * 1024
"""Largest room image accepted."""

CLICK_SAMPLES: Final = 480
"""A click lasts 10 ms (a decaying sine burst, synthesized by the page)."""

CLICK_HZ: Final = 1000.0
CLICK_ACCENT_HZ: Final = 1500.0


def click_wave(accent: bool) -> npt.NDArray[np.float32]:
    """A click's sound, as the page makes it (metronome.js ``clickWave``): a 10 ms sine
    burst with a 0.5 ms attack and an exponential decay, louder when accented."""
    i = np.arange(CLICK_SAMPLES, dtype=np.float64)
    hz, amp = (CLICK_ACCENT_HZ, 0.6) if accent else (CLICK_HZ, 0.4)
    attack = np.minimum(1.0, i / 24)
    wave = amp * attack * np.exp(-i / 120) * np.sin(2 * np.pi * hz * i / SAMPLE_RATE)
    return wave.astype(np.float32)


class Click(NamedTuple):
    """One metronome click: its first sample's position, its beat number, whether accented."""

    pos: int
    beat: int
    accent: bool


def _round_half_up(x: float) -> int:
    # The page rounds with Math.round (half up); Python's round() is half to even.
    return math.floor(x + 0.5)


def beat_position(origin: int, bpm: float, beat: int) -> int:
    """Where beat ``beat`` clicks (negative in the count-in) when the music starts at ``origin``."""
    return origin + _round_half_up(beat * 60 * SAMPLE_RATE / bpm)


def count_in_samples(metronome: Metronome) -> int:
    """How long the count-in bar lasts (0 when the metronome is off or does not count in)."""
    if not (metronome.on and metronome.count_in):
        return 0
    return _round_half_up(metronome.beats * 60 * SAMPLE_RATE / metronome.bpm)


def song_origin(start_pos: int, metronome: Metronome) -> int:
    """Where the song's music (and track sample 0) begins: after the count-in, if any."""
    return start_pos + count_in_samples(metronome)


def song_end(start_pos: int, metronome: Metronome, track_samples: int) -> int:
    """The position where a song with a track of ``track_samples`` ends by itself."""
    return song_origin(start_pos, metronome) + track_samples


def track_index(pos: int, origin: int, track_samples: int) -> int | None:
    """The track sample played at ``pos`` (None outside the track)."""
    index = pos - origin
    return index if 0 <= index < track_samples else None


def clicks_between(
    lo: int, hi: int, start_pos: int, metronome: Metronome, end_pos: int | None = None
) -> list[Click]:
    """The clicks that start in ``[lo, hi)`` for a song started at ``start_pos``.

    None before ``start_pos`` (the count-in starts there) or from ``end_pos`` on.
    """
    if not metronome.on or hi <= lo:
        return []
    origin = song_origin(start_pos, metronome)
    first_beat = -metronome.beats if metronome.count_in else 0
    stop = hi if end_pos is None else min(hi, end_pos)
    period = 60 * SAMPLE_RATE / metronome.bpm
    k = max(first_beat, math.floor((max(lo, start_pos) - origin) / period) - 1)
    clicks: list[Click] = []
    while True:
        pos = beat_position(origin, metronome.bpm, k)
        if pos >= stop:
            return clicks
        if pos >= lo and pos >= start_pos:
            clicks.append(Click(pos, k, k % metronome.beats == 0))
        k += 1
