"""Project files that open a recording's stems together in an audio editor (pure text).

* Audacity's ``.lof`` (list of files): ``File > Import > Audio`` or opening
  the ``.lof`` imports every line's file as a track at its offset. Paths are
  relative to the ``.lof`` itself.
* REAPER's ``.rpp``: a project with one track per stem, each holding one
  item that starts at 0 and plays its FLAC (relative paths resolve next to
  the project file).

Every stem starts at the song's first sample, so every offset is 0: the
files are already aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from common.constants import SAMPLE_RATE

__all__ = ["ProjectStem", "audacity_lof", "reaper_rpp"]


class ProjectStem(NamedTuple):
    """One stem of a project: a track named ``name`` playing ``file`` (a bare file name)."""

    name: str
    file: str


def _quoted(text: str) -> str:
    # Neither format escapes quotes inside a quoted string: use a look-alike.
    return '"' + text.replace('"', "'").replace("\n", " ").replace("\r", " ") + '"'


def audacity_lof(stems: Sequence[ProjectStem]) -> str:
    """An Audacity list of files: every stem at offset 0."""
    return "".join(f"file {_quoted(stem.file)} offset 0\n" for stem in stems)


def reaper_rpp(stems: Sequence[ProjectStem], length: int, title: str) -> str:
    """A REAPER project: one track per stem, each one FLAC item of ``length`` samples."""
    seconds = f"{length / SAMPLE_RATE:.6f}"
    lines = [
        '<REAPER_PROJECT 0.1 "6.0" 0',
        f"  TITLE {_quoted(title)}",
        f"  SAMPLERATE {SAMPLE_RATE} 0 0",
    ]
    for stem in stems:
        lines += [
            "  <TRACK",
            f"    NAME {_quoted(stem.name)}",
            "    <ITEM",
            "      POSITION 0",
            f"      LENGTH {seconds}",
            f"      NAME {_quoted(stem.name)}",
            "      <SOURCE FLAC",
            f"        FILE {_quoted(stem.file)}",
            "      >",
            "    >",
            "  >",
        ]
    lines.append(">")
    return "\n".join(lines) + "\n"
