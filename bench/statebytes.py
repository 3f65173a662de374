"""Bytes of one ``state`` message with and without the material: ``python -m bench.statebytes``.

A room of ``--members`` (50) members, a leader and a running song, with
``--lyrics`` (5 000) characters of lyrics and ``--cues`` (200) lyric cues in
the song. Before, each ``state`` a gateway sent every page carried the
material (``state.material``); now it carries ``material_version`` and the
material goes in a ``material`` message of its own, only when it changes
(docs/protocol.md, *Room material*). Printed: the bytes of one ``state``
message both ways (the old one built as the old code did: the whole public
view, without ``material_version``), their ratio, the ``material`` message,
and the bytes one state change costs the room's connections (members, plus
``--listeners`` listeners of a concert). Pure arithmetic on the real
builders (common/protocol.py); no process is started. Writes
``bench-results/statebytes.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import msgspec

from bench.results import print_grid, write_results
from common.constants import SAMPLE_RATE
from common.protocol import dumps, material_message, state_message
from common.records import Cue, Role
from common.roomview import PublicRoom
from mixer.roomstate import RoomConfig, RoomState
from mixer.view import public_state

T0 = 1_700_000_000 * SAMPLE_RATE


def room(members: int, lyrics_chars: int, cues: int) -> PublicRoom:
    """The public view of a room of ``members`` with a running song, its lyrics and cues."""
    state = RoomState(RoomConfig(capacity=max(100, members)))
    for i in range(members):
        state.join(f"s-{i:012x}", f"Singer {i + 1}", Role.SINGER, T0 + i)
    leader = "s-000000000000"
    state.request_lead(leader, T0 + members)
    verse = "Row, row, row your boat, gently down the stream"
    text = "\n".join(f"{verse} ({n})" for n in range(lyrics_chars // len(verse) + 1))
    state.set_lyrics(leader, text[:lyrics_chars])
    state.start_song(leader, T0 + 10 * SAMPLE_RATE)
    lines = state.material.lyrics.count("\n") + 1
    start = state.song.start_pos
    assert start is not None
    # Cues as cue_lyrics leaves them: one every 2 s of the song, lines in turn.
    state.material.cues = [Cue(start + k * 2 * SAMPLE_RATE, k % lines) for k in range(cues)]
    state.material_version += cues
    return public_state("choir", state)


def old_state_bytes(view: PublicRoom) -> int:
    """One ``state`` message as the code before the ``material`` message sent it."""
    body = msgspec.to_builtins(view)
    del body["material_version"]
    return len(dumps({"type": "state", "version": view.version, "state": body}).encode())


@dataclass(frozen=True)
class StateBytes:
    members: int
    lyrics_chars: int
    cues: int
    listeners: int
    state_bytes_before: int
    state_bytes_after: int
    material_message_bytes: int

    @property
    def ratio(self) -> float:
        return self.state_bytes_before / self.state_bytes_after

    def per_change(self, state_bytes: int) -> int:
        """Bytes one state change sends the room's connections (members and listeners)."""
        return state_bytes * (self.members + self.listeners)


def measure(members: int, lyrics_chars: int, cues: int, listeners: int) -> StateBytes:
    view = room(members, lyrics_chars, cues)
    return StateBytes(
        members=members,
        lyrics_chars=lyrics_chars,
        cues=cues,
        listeners=listeners,
        state_bytes_before=old_state_bytes(view),
        state_bytes_after=len(dumps(state_message(view.version, view)).encode()),
        material_message_bytes=len(
            dumps(material_message(view.material_version, view.material)).encode()
        ),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--lyrics", type=int, default=5000, help="characters of lyrics")
    parser.add_argument("--cues", type=int, default=200, help="lyric cues in the running song")
    parser.add_argument("--listeners", type=int, default=10_000, help="a concert's audience")
    args = parser.parse_args(argv)
    m = measure(args.members, args.lyrics, args.cues, args.listeners)
    before, after = m.per_change(m.state_bytes_before), m.per_change(m.state_bytes_after)
    print_grid(
        f"One state change in a room of {m.members} members, {m.lyrics_chars} characters of "
        f"lyrics, {m.cues} cues",
        ("", "before", "after", "before/after"),
        [
            (
                "bytes of one state message",
                str(m.state_bytes_before),
                str(m.state_bytes_after),
                f"x{m.ratio:.2f}",
            ),
            (
                f"kB per change to {m.members} members + {m.listeners} listeners",
                f"{before / 1000:.0f}",
                f"{after / 1000:.0f}",
                f"x{m.ratio:.2f}",
            ),
            (
                "bytes of the material message (once per material change)",
                "-",
                str(m.material_message_bytes),
                "",
            ),
        ],
    )
    result: dict[str, object] = {
        **asdict(m),
        "ratio": m.ratio,
        "per_change_bytes_before": before,
        "per_change_bytes_after": after,
    }
    write_results("statebytes", result)
    return result


if __name__ == "__main__":
    main()
