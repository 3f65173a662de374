"""Stems: each singer's own audio, written as it reaches the room (I/O adapter).

With stems on, the recorder reads the room's input stream (``bb:{R}:in``,
the chunks the gateways push for the mixer) alongside its tap, and writes
each singer's chunks into a file of their own at their song positions:
sample ``i`` of a stem is position ``start_pos + i``, as in the mix, so
every stem lines up with the mix and with the others. The files are
sparse: a position nobody wrote reads as silence, and writing a chunk again
(a successor re-reading the stream) changes nothing.

A stem is the singer's voice as it arrived, before the console's fader (an
editor wants the raw take). A singer who is muted is not recorded: the
mute is read from the member records every poll, so it takes effect within
about a second.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from common.errors import WireError
from common.records import Member
from common.wire import Chunk, decode_chunk
from recorder import files
from recorder.take import TakeInfo, clip

__all__ = ["StemWriter"]


class StemWriter:
    """Writes one take's singers' chunks to their stems (``files.stem_take_path``)."""

    def __init__(self, root: Path, info: TakeInfo) -> None:
        self.root, self.info = root, info
        self.counters: Counter[str] = Counter()
        self._names: dict[str, str] = {}
        self._muted: set[str] = set()

    def members(self, members: Iterable[Member]) -> None:
        """The room's members now: their names (for new stems) and who is muted."""
        members = list(members)
        self._names = {m.singer_id: m.name for m in members}
        self._muted = {m.singer_id for m in members if m.muted}

    def write(self, values: Iterable[bytes | None], limit: int) -> bool:
        """Write the chunks of one read; True when a singer got a stem (``info.singers`` grew)."""
        by_singer: defaultdict[str, list[Chunk]] = defaultdict(list)
        for value in values:
            try:
                chunk = decode_chunk(value or b"")
            except WireError:
                self.counters["stem_bad_chunks"] += 1
                continue
            if chunk.room != self.info.room:
                self.counters["stem_bad_chunks"] += 1
            elif chunk.singer in self._muted:
                self.counters["stem_muted_chunks"] += 1
            else:
                by_singer[chunk.singer].append(chunk)
        grew = False
        for singer, chunks in by_singer.items():
            placed = [
                (span, chunk)
                for chunk in chunks
                if (span := clip(self.info.start_pos, limit, chunk.start, len(chunk.samples)))
            ]
            if not placed:
                continue
            if singer not in self.info.singers:
                self.info.singers[singer] = self._names.get(singer, singer)
                grew = True
            path = files.stem_take_path(self.root, self.info, singer)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                for (offset, lo, hi), chunk in placed:
                    os.pwrite(fd, files.to_int16(chunk.samples[lo:hi]), 2 * offset)
                    self.counters["stem_samples"] += hi - lo
            finally:
                os.close(fd)
        return grew
