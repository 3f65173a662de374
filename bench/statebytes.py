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
``--listeners`` listeners of a concert).

Then one lyric cue (the leader advancing the line) in such a room with
``--cues-so-far`` (100) cues: before, each page got the whole ``material``
message again and a ``state`` (the cue bumped the room's version); now a
page holding the material before gets a ``cues`` message of the new cue
and no ``state`` (gateway/roommaterial.py). Printed: the bytes per page
and per cue to the members and listeners, both ways, and their ratio.

Pure arithmetic on the real builders (common/protocol.py,
gateway/roommaterial.py); no process is started. Writes
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
from gateway.roommaterial import follow, only_material
from mixer.roomstate import RoomConfig, RoomState
from mixer.view import public_state

T0 = 1_700_000_000 * SAMPLE_RATE


def room(members: int, lyrics_chars: int, cues: int) -> PublicRoom:
    """The public view of a room of ``members`` with a running song, its lyrics and cues."""
    return public_state("choir", singing(members, lyrics_chars, cues))


def singing(members: int, lyrics_chars: int, cues: int) -> RoomState:
    """A room of ``members`` with a running song, its lyrics and cues."""
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
    return state


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


@dataclass(frozen=True)
class CueBytes:
    """What one lyric cue sends each page: before, the whole material and a state."""

    cues_so_far: int
    material_message_bytes: int
    state_bytes: int
    cues_message_bytes: int
    state_sent: bool
    """Whether a state still follows the cue (it should not: only the material changed)."""

    @property
    def per_page_before(self) -> int:
        return self.material_message_bytes + self.state_bytes

    @property
    def per_page_after(self) -> int:
        return self.cues_message_bytes + (self.state_bytes if self.state_sent else 0)


def measure_cue(members: int, lyrics_chars: int, cues_so_far: int) -> CueBytes:
    """One cue in a room with ``cues_so_far`` cues, sent as the gateway sends it."""
    state = singing(members, lyrics_chars, cues_so_far)
    before = public_state("choir", state)
    held = follow(None, before)
    start = state.song.start_pos
    assert start is not None
    # The cue comes 2 s after the last one (the song's first cue: at its start).
    last = state.material.cues[-1].pos if state.material.cues else start - 2 * SAMPLE_RATE
    lines = state.material.lyrics.count("\n") + 1
    leader = state.members["s-000000000000"]
    state.cue_lyrics(
        leader.singer_id,
        cues_so_far % lines,
        last + 2 * SAMPLE_RATE,
        last + 2 * SAMPLE_RATE + leader.delay,
    )
    after = public_state("choir", state)
    material = follow(held, after)
    delta = material.message_for(held)
    assert delta is not None and material.delta is not None and delta is material.delta.text
    return CueBytes(
        cues_so_far=cues_so_far,
        material_message_bytes=len(material.text),
        state_bytes=len(dumps(state_message(after.version, after)).encode()),
        cues_message_bytes=len(delta),
        state_sent=not only_material(before, after),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--lyrics", type=int, default=5000, help="characters of lyrics")
    parser.add_argument("--cues", type=int, default=200, help="lyric cues in the running song")
    parser.add_argument("--listeners", type=int, default=10_000, help="a concert's audience")
    parser.add_argument(
        "--cues-so-far", type=int, default=100, help="cues in the song before the one measured"
    )
    args = parser.parse_args(argv)
    if args.members < 1 or args.lyrics < 1:
        parser.error("a cue needs a leader and lyrics: --members and --lyrics at least 1")
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
    c = measure_cue(args.members, args.lyrics, args.cues_so_far)
    pages = m.members + m.listeners
    cue_ratio = c.per_page_before / c.per_page_after
    print_grid(
        f"One lyric cue in that room with {c.cues_so_far} cues so far",
        ("", "before", "after", "before/after"),
        [
            (
                "bytes to each page (material + state before, cues after)",
                str(c.per_page_before),
                str(c.per_page_after),
                f"x{cue_ratio:.0f}",
            ),
            (
                f"kB per cue to {m.members} members + {m.listeners} listeners",
                f"{c.per_page_before * pages / 1000:.0f}",
                f"{c.per_page_after * pages / 1000:.0f}",
                f"x{cue_ratio:.0f}",
            ),
        ],
    )
    result: dict[str, object] = {
        **asdict(m),
        "ratio": m.ratio,
        "per_change_bytes_before": before,
        "per_change_bytes_after": after,
        "cue": {
            **asdict(c),
            "per_page_before": c.per_page_before,
            "per_page_after": c.per_page_after,
            "per_cue_bytes_before": c.per_page_before * pages,
            "per_cue_bytes_after": c.per_page_after * pages,
            "ratio": cue_ratio,
        },
    }
    write_results("statebytes", result)
    return result


if __name__ == "__main__":
    main()
