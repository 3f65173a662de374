"""gateway/roommaterial.py, pure: a lyric cue goes to pages as a ``cues`` delta, not as the
whole material, and a change of the material alone sends pages no ``state``.

The rooms are the mixer's own (mixer.roomstate), their public view built as the mixer
builds it; the hub's handling of a state event runs on a hub whose Redis is never
reached (no server is started). No process, no socket.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from common.constants import SAMPLE_RATE
from common.events import State
from common.records import Cue, Image, Role, Track
from common.roomview import PublicRoom
from common.settings import GatewaySettings
from gateway.audience import RoomAudience
from gateway.hub import Hub, Options
from gateway.metrics import Metrics
from gateway.roommaterial import RoomMaterial, appended, follow, only_material
from gateway.session import Identity, Session
from mixer.roomstate import RoomConfig, RoomState
from mixer.view import public_state
from tests.support import REPO

S = SAMPLE_RATE
T0 = 1_700_000_000 * S
LYRICS = "\n".join(f"Line {i}: row, row, row your boat" for i in range(40))


def singing_room() -> RoomState:
    """A led room with lyrics and a running song, cued twice already."""
    state = RoomState(RoomConfig())
    state.join("lead", "Ann", Role.SINGER, T0)
    state.join("bob", "Bob", Role.SINGER, T0 + 1)
    state.request_lead("lead", T0 + S)
    state.add_track("lead", Track(id="t-000000000001", name="Hymn.flac", samples=60 * S))
    state.set_lyrics("lead", LYRICS)
    state.start_song("lead", T0 + 2 * S)
    for line in range(2):
        cue(state, line)
    return state


def cue(state: RoomState, line: int) -> None:
    """The leader advances to ``line``, one second after the song's last cue (or start)."""
    start = state.song.start_pos
    assert start is not None
    pos = (state.material.cues[-1].pos if state.material.cues else start) + S
    state.cue_lyrics("lead", line, pos, pos + state.members["lead"].delay)


def view(state: RoomState) -> PublicRoom:
    return public_state("choir", state)


def session(name: str = "c") -> Session:
    return Session(ws=web.WebSocketResponse(), metrics=Metrics(), audio_queue_frames=4, conn=name)


def sent(s: Session) -> list[dict[str, Any]]:
    """What ``s`` has queued, control messages then the latest (a listener's state)."""
    texts = [*s._control, *([s._latest] if s._latest is not None else [])]
    return [json.loads(text) for text in texts]


def page_material(messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
    """The material a page holds after ``messages``, as gateway/static/roomstore.js keeps
    it: the latest ``material``, ``cues`` applied on top of their ``base`` (else ignored)."""
    held: tuple[int, dict[str, Any]] | None = None
    for m in messages:
        if m["type"] == "material":
            held = (m["version"], m["material"])
        elif m["type"] == "cues" and held is not None and held[0] == m["base"]:
            cues = held[1]["cues"][: m["start"]] + m["cues"]
            held = (m["version"], {**held[1], "cues": cues})
    return held


def builtins(material: RoomMaterial) -> tuple[int, dict[str, Any]]:
    return material.version, msgspec.to_builtins(material.view)


# --- the diff -------------------------------------------------------------------------


def test_cues_appended_during_a_song_make_a_delta_of_just_the_new_cues() -> None:
    state = singing_room()
    before = follow(None, view(state))
    cue(state, 2)
    after = follow(before, view(state))
    assert after.version > before.version and after.delta is not None
    message = json.loads(after.delta.text)
    last = state.material.cues[-1]
    assert message == {
        "type": "cues",
        "version": after.version,
        "base": before.version,
        "start": 2,
        "cues": [[last.pos, last.line]],
    }
    assert after.message_for(before) is after.delta.text
    assert after.message_for(after) is None
    assert after.message_for(None) is after.text  # a page holding nothing: the whole material
    # Two cues between two state events (a burst): one delta with both.
    cue(state, 3)
    cue(state, 4)
    burst = follow(after, view(state))
    assert burst.delta is not None and json.loads(burst.delta.text)["start"] == 3
    assert len(json.loads(burst.delta.text)["cues"]) == 2
    # The delta is small beside the material it saves sending.
    assert len(burst.delta.text) * 10 < len(burst.text)


def test_the_first_cue_of_a_song_is_a_delta_too() -> None:
    state = singing_room()
    state.stop_song("lead", T0 + 20 * S)
    state.start_song("lead", T0 + 21 * S)
    before = follow(None, view(state))
    assert state.material.cues == [] and state.material.previous_cues
    cue(state, 0)
    after = follow(before, view(state))
    assert after.delta is not None and json.loads(after.delta.text)["start"] == 0


def test_anything_but_appended_cues_sends_the_whole_material() -> None:
    state = singing_room()
    base = view(state)
    before = follow(None, base)

    def full(after: PublicRoom) -> bool:
        material = follow(before, after)
        return material.delta is None and material.message_for(before) is material.text

    # A changed lyric, with a cue in the same change: still the whole material.
    lyric = msgspec.structs.replace(
        base.material,
        lyrics=LYRICS.replace("Line 3", "Verse 3"),
        cues=[*base.material.cues, Cue(base.material.cues[-1].pos + S, 2)],
    )
    assert full(bumped(base, lyric))
    # A removed cue.
    assert full(bumped(base, msgspec.structs.replace(base.material, cues=base.material.cues[:1])))
    # A cue changed in place (the same count, another line).
    moved = [*base.material.cues[:-1], Cue(base.material.cues[-1].pos, 7)]
    assert full(bumped(base, msgspec.structs.replace(base.material, cues=moved)))
    # A track change with an appended cue.
    more = [*base.material.cues, Cue(base.material.cues[-1].pos + S, 2)]
    assert full(bumped(base, msgspec.structs.replace(base.material, tracks=[], cues=more)))
    # An image shown.
    image = Image(id="i-0c1d2e3f4a5b", content_type="image/png")
    state.set_image("lead", image)
    assert full(view(state))
    # A new song: the cues move to previous_cues.
    state = singing_room()
    before = follow(None, view(state))
    state.stop_song("lead", T0 + 20 * S)
    state.start_song("lead", T0 + 21 * S)
    cue(state, 0)  # and its first cue in the same change
    assert full(view(state))
    # Appended cues under the same (or a lower) version: a reused version, the whole material.
    state = singing_room()
    base = view(state)
    before = follow(None, base)
    cue(state, 2)
    reused = msgspec.structs.replace(view(state), material_version=base.material_version)
    assert full(reused)


def bumped(state: PublicRoom, material: Any) -> PublicRoom:
    """``state`` with ``material`` at the next material version (and room version)."""
    return msgspec.structs.replace(
        state,
        version=state.version + 1,
        material_version=state.material_version + 1,
        material=material,
    )


def test_appended_compares_everything_but_the_new_cues() -> None:
    base = view(singing_room()).material
    more = msgspec.structs.replace(base, cues=[*base.cues, Cue(base.cues[-1].pos + S, 2)])
    assert appended(base, more)
    assert not appended(base, base)  # nothing appended
    assert not appended(more, base)
    assert not appended(base, msgspec.structs.replace(more, previous_cues=[Cue(1, 0)]))


# --- sessions -------------------------------------------------------------------------


async def test_pages_holding_the_base_get_the_same_delta_bytes_and_others_the_whole_material() -> (
    None
):
    state = singing_room()
    first = follow(None, view(state))
    holders = [session(f"c{i}") for i in range(3)]
    for s in holders:
        s.send_material(first)
    late = session("late")  # joined, but holds an older material (read before a change)
    cue(state, 2)
    second = follow(first, view(state))
    older = view(singing_room())
    older = msgspec.structs.replace(
        older,
        material_version=older.material_version - 1,
        material=msgspec.structs.replace(older.material, cues=older.material.cues[:1]),
    )
    late.send_material(follow(None, older))  # the material before the first one's last cue
    again = session("again")  # holds the first material's content in another object
    again.send_material(follow(None, view(singing_room())))
    fresh = session("fresh")
    for s in [*holders, again, late, fresh]:
        s.send_material(second)
    deltas = [s._control[-1] for s in holders]
    assert all(text is deltas[0] for text in deltas), "one delta, built once"
    assert [m["type"] for m in sent(holders[0])] == ["material", "cues"]
    assert [m["type"] for m in sent(again)] == ["material", "cues"]
    assert sent(late)[-1]["type"] == "material" and sent(fresh)[-1]["type"] == "material"
    # A page missing a delta (it held the first when the third came) gets the whole material.
    cue(state, 3)
    third = follow(second, view(state))
    skipped = session("skipped")
    skipped.send_material(first)
    skipped.send_material(third)
    assert [m["type"] for m in sent(skipped)] == ["material", "material"]
    # Every page ends holding what the server holds.
    for s in [*holders, again, late, fresh, skipped]:
        s.send_material(third)
        assert page_material(sent(s)) == builtins(third), s.conn


# --- no state for a change of the material alone --------------------------------------


def test_only_material_is_a_change_of_the_material_and_nothing_else() -> None:
    state = singing_room()
    before = view(state)
    cue(state, 2)
    assert only_material(before, view(state))
    assert not only_material(None, view(state))
    assert not only_material(view(state), view(state))  # no material change
    state.set_lyrics("lead", LYRICS + "\nLife is but a dream")
    assert only_material(before, view(state))  # lyrics alone: no state either
    cued = view(state)
    state.set_muted("bob", True)
    assert not only_material(cued, view(state))  # a mute
    muted = view(state)
    cue(state, 3)
    state.set_muted("bob", False)
    assert not only_material(muted, view(state))  # a cue and a mute in one change
    # A new song changes the song too.
    playing = view(state)
    state.stop_song("lead", T0 + 30 * S)
    assert not only_material(playing, view(state))


def hub() -> Hub:
    """A gateway's hub whose Redis is never reached (nothing here does I/O)."""
    return Hub(GatewaySettings(), Redis.from_url("redis://127.0.0.1:1"), Options())


def member(h: Hub, singer: str, role: Role | Literal["listener"] = Role.SINGER) -> Session:
    """A joined session of ``singer`` in the hub's room "choir" (a member, or a listener)."""
    s = session(singer)
    s.member = Identity(room="choir", singer=singer, name=singer, role=role, codec="opus")
    s.joined = True
    if role == "listener":
        audience = h.audience.rooms.setdefault("choir", RoomAudience("choir"))
        audience.sessions.add(s)
    else:
        h.by_room.setdefault("choir", set()).add(s)
    return s


async def test_a_cue_sends_members_and_listeners_a_delta_and_no_state() -> None:
    h = hub()
    ann, bob, fan = member(h, "lead"), member(h, "bob"), member(h, "fan", "listener")
    state = singing_room()
    h._on_event("choir", State(version=state.version, state=view(state)))
    held = h.views["choir"].material
    for s in (ann, bob, fan):
        assert [m["type"] for m in sent(s)] == ["material", "state"]
        s._control.clear()
        s._latest = None
    cue(state, 2)
    h._on_event("choir", State(version=state.version, state=view(state)))
    # The gateway's own view moved on.
    assert h.views["choir"].state.version == state.version
    assert h.views["choir"].material.version > held.version
    for s in (ann, bob, fan):
        assert [m["type"] for m in sent(s)] == ["cues"], s.conn
        s._control.clear()
    # A mute is a state again (no material: it did not change).
    state.set_muted("bob", True)
    h._on_event("choir", State(version=state.version, state=view(state)))
    for s in (ann, bob, fan):
        assert [m["type"] for m in sent(s)] == ["state"], s.conn
        assert sent(s)[0]["state"]["material_version"] == state.material_version
    await h.redis.aclose()


def test_the_documented_cues_message_is_what_pages_get() -> None:
    """docs/protocol.md's *Cues* example, key for key and in order, against a delta."""
    text = (REPO / "docs" / "protocol.md").read_text()
    block = text[text.index("**Cues.**") :]
    example = json.loads(block[block.index("```json") + 7 : block.index("```\n", 10)])
    state = singing_room()
    before = follow(None, view(state))
    cue(state, 2)
    delta = follow(before, view(state)).delta
    assert delta is not None
    message = json.loads(delta.text)
    assert list(example) == list(message)
    assert len(example["cues"][0]) == len(message["cues"][0]) == 2  # [pos, line]


async def test_a_listeners_cue_leaves_with_its_next_write_a_members_at_once() -> None:
    """A concert's listeners get a cue with their next audio write (no write of its own);
    members, who may be leading, get it at the next flush."""
    h = hub()
    ann, fan = member(h, "lead"), member(h, "fan", "listener")
    for s in (ann, fan):
        s.outbox = h.outbox
    state = singing_room()
    h._on_event("choir", State(version=state.version, state=view(state)))
    h.outbox.close()
    for s in (ann, fan):
        s._control.clear()
        s._latest = None
    cue(state, 2)
    h._on_event("choir", State(version=state.version, state=view(state)))
    assert [m["type"] for m in sent(fan)] == [m["type"] for m in sent(ann)] == ["cues"]
    assert fan in h.outbox._lazy and fan not in h.outbox._dirty
    assert ann in h.outbox._dirty
    h.outbox.close()
    await h.redis.aclose()
