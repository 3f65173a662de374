"""A ZIP archive made while it is sent: many large files in one response, memory bounded.

:func:`zip_chunks` is a generator. Each ``next()`` reads at most one block of
one member and returns the bytes of the archive that became ready (a member's
header with its first block, a block, a member's data descriptor, and at the
end the central directory). Nothing is held but that block, whatever the
files' sizes, and nothing waits for the reader: the caller pulls the next
chunk once it has sent the last one (gateway/recordings.py calls ``next`` in
a worker thread per chunk, so a slow client holds no thread, only its place
in the generator).

Members are stored, not compressed: FLAC does not compress further. The
output cannot seek back, so each member's CRC and sizes follow its data in a
data descriptor; unzip programs read them from the central directory.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Generator, Sequence
from typing import BinaryIO, Final

__all__ = ["BLOCK_BYTES", "zip_chunks"]

BLOCK_BYTES: Final = 256 * 1024
"""Bytes read from a member at a time (the memory one archive in progress holds)."""


class _Sink:
    """What zipfile writes, kept until taken. No ``tell``/``seek``: zipfile then
    streams (data descriptors after each member instead of going back)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    """A file's time as ZIP keeps it (local time, no earlier than 1980)."""
    t = time.localtime(mtime)
    if t.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def zip_chunks(
    members: Sequence[tuple[str, BinaryIO]], block_bytes: int = BLOCK_BYTES
) -> Generator[bytes, None, None]:
    """The bytes of a stored ZIP of ``members`` (``(name in the archive, open file)``),
    in chunks of at most ``block_bytes`` plus a few headers; never an empty chunk.

    The files are read from where they are (the caller opens them, and closes
    them after); their size and time come from ``fstat``. Read errors
    (``OSError``) propagate: the archive is then incomplete.
    """
    if block_bytes <= 0:
        raise ValueError(f"block_bytes must be > 0, got {block_bytes}")
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, src in members:
            stat = os.fstat(src.fileno())
            info = zipfile.ZipInfo(name, date_time=_zip_time(stat.st_mtime))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            # Known before the data, so a member over 4 GiB gets ZIP64 fields.
            info.file_size = stat.st_size
            with archive.open(info, "w") as dest:
                while block := src.read(block_bytes):
                    dest.write(block)
                    yield sink.take()
    if tail := sink.take():
        yield tail
