"""Recordings on disk for the tests of the gateway's recordings API and the page's panel,
made by the recorder's own code (recorder/files.py ``finish``): real FLAC and Ogg
Opus files, the sidecar, and with stems each singer's FLAC, the track's and the
two projects, under the names the recorder gives them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.constants import SAMPLE_RATE
from recorder import files
from recorder.take import TakeInfo

__all__ = ["make_recording", "sine"]


def sine(freq_hz: float, n: int, amplitude: float = 0.2) -> npt.NDArray[np.float32]:
    t = np.arange(n) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def make_recording(
    root: Path,
    room: str,
    number: int,
    created: float,
    *,
    leader: str = "Ann",
    seconds: float = 1.0,
    stems: Sequence[str] = (),
    track: bool = False,
) -> dict[str, Any]:
    """Song ``number`` of ``room``, finished by the recorder at unix time ``created``
    (its files under ``root/<room>/``); with ``stems`` (singer names), one stem per
    singer, and the track's when ``track``. Returns the sidecar."""
    start = 1_000_000 * number
    n = round(seconds * SAMPLE_RATE)
    singers = {f"s-{i}": name for i, name in enumerate(stems)}
    info = TakeInfo(
        room=room,
        number=number,
        start_pos=start,
        delay=SAMPLE_RATE,
        leader=leader,
        created=created,
        track_id="t-0123456789ab" if track else None,
        origin=start if track else None,
        stems=bool(stems),
        singers=dict(singers),
    )
    pcm, info_path = files.take_paths(root, room, number, start)
    pcm.parent.mkdir(parents=True, exist_ok=True)
    pcm.write_bytes(files.to_int16(sine(440, n)))
    files.write_info(info_path, info)
    for k, singer in enumerate(singers):
        files.stem_take_path(root, info, singer).write_bytes(files.to_int16(sine(300 + 100 * k, n)))
    flac = files.finish(root, info, n, sine(220, n) if track else None)
    sidecar: dict[str, Any] = json.loads(flac.with_suffix(".json").read_text())
    return sidecar
