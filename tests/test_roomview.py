"""The mixer's room view and the gateway's (from Redis hashes) must agree."""

from __future__ import annotations

import json
import math

import msgspec
from msgspec import to_builtins
from redis.asyncio import Redis

from common import keys, records
from common.constants import SAMPLE_RATE
from common.protocol import dumps, material_message, page_state
from common.records import RoomMeta
from common.roomview import PublicRoom
from common.settings import MixerSettings
from gateway.rooms import public_state as gateway_view
from mixer.room import Role, RoomConfig, RoomState
from mixer.store import load_room, queue_persist
from mixer.view import public_state as mixer_view

T0 = 1_700_000_000 * SAMPLE_RATE


def test_gateway_view_of_stored_state_equals_the_mixer_view() -> None:
    config = RoomConfig(capacity=12)
    state = RoomState(config)
    for i, (sid, role) in enumerate(
        [("zed", Role.SINGER), ("amy", Role.SINGER), ("lis", Role.SPECTATOR), ("bo", Role.SINGER)]
    ):
        state.join(sid, sid.title(), role, T0 + i)
    state.request_lead("amy", T0 + 10)
    state.start_song("amy", T0 + 20)
    state.set_muted("bo", True)
    state.disconnect("zed", T0 + 30)

    state.set_gain("amy", "bo", -6.0)
    state.solo("amy", "bo", True)
    state.set_mix("zed", "solo")
    raw_members = {sid.encode(): records.encode(m) for sid, m in state.members.items()}
    raw_song = {
        b"state": records.encode(state.song),
        b"version": str(state.version).encode(),
    }
    meta = RoomMeta(
        capacity=config.capacity,
        password_hash="",
        n_buckets=config.n_buckets,
        bucket_spacing_s=config.bucket_spacing / SAMPLE_RATE,
        created_at=0.0,
    )
    expected = mixer_view("choir", state)
    assert gateway_view("choir", meta, raw_members, raw_song) == expected
    expected = to_builtins(expected)
    assert [m["singer_id"] for m in expected["members"]] == ["zed", "amy", "lis", "bo"]
    assert expected["leader"] == "amy" and expected["song"]["running"]
    assert expected["taps"] == sorted({m.delay for m in state.members.values() if m.connected})
    bo = next(m for m in expected["members"] if m["singer_id"] == "bo")
    zed = next(m for m in expected["members"] if m["singer_id"] == "zed")
    assert (bo["gain_db"], bo["soloed"], expected["solo"]) == (-6.0, True, ["bo"])
    assert (zed["mix"], zed["hears"]) == ("solo", "solo")


# The JSON the code before the typed view (085162d) sent for :func:`_scenario`.
CAPTURED_JSON = (
    '{"room":"choir","version":13,"capacity":12,"leader":"amy","song":{"running":true,"number":'
    '2,"start_pos":81600000288000,"end_pos":null,"stopped_by":null,"ended":null,"rounds":{"bpm"'
    ':120.0,"beats":4,"repeats":0},"leader_boost_db":6.0,"track":null,"metronome":{"on":false,"'
    'bpm":100.0,"beats":4,"count_in":false},"recording":{"stems":false,"metronome":false},"star'
    'ted_with":{"track":null,"metronome":{"on":false,"bpm":100.0,"beats":4,"count_in":false}},"'
    'origin":81600000288000,"previous":{"number":1,"start_pos":81599999856020,"end_pos":8160000'
    '0096000,"ended":"stopped","started_with":{"track":null,"metronome":{"on":false,"bpm":100.0'
    ',"beats":4,"count_in":false}},"origin":81599999856020},"earlier":[{"number":1,"start_pos":'
    '81599999856020,"end_pos":81600000096000,"ended":"stopped","started_with":{"track":null,"me'
    'tronome":{"on":false,"bpm":100.0,"beats":4,"count_in":false}},"origin":81599999856020}]},"'
    'material":{"tracks":[],"lyrics":"","image":null,"cues":[],"previous_cues":[],"older_cues":'
    '[]},"buckets":{"n":6,"spacing":144000,"delays":[144000,288000,432000,576000,720000,864000]'
    '},"solo":["zed"],"taps":[144000,432000,864000],"members":[{"singer_id":"zed","name":"Zed '
    '\\u00e9","role":"singer","delay":288000,"bucket":1,"muted":false,"connected":false,"late":'
    '0,"gain_db":0.0,"soloed":true,"mix":"solo","hears":"solo"},{"singer_id":"amy","name":"Amy '
    '\\u00e9","role":"singer","delay":144000,"bucket":0,"muted":false,"connected":true,"late":0'
    ',"gain_db":0.0,"soloed":false,"mix":"full","hears":"full"},{"singer_id":"lis","name":"Lis '
    '\\u00e9","role":"spectator","delay":864000,"bucket":5,"muted":false,"connected":true,"late'
    '":0,"gain_db":0.0,"soloed":false,"mix":"full","hears":"full"},{"singer_id":"bo","name":"Bo'
    ' \\u00e9","role":"singer","delay":432000,"bucket":2,"muted":true,"connected":true,"late":0'
    ',"gain_db":null,"soloed":false,"mix":"full","hears":"full"}]}'
)


def _scenario() -> RoomState:
    state = RoomState(RoomConfig(capacity=12))
    for i, (sid, role) in enumerate(
        [("zed", Role.SINGER), ("amy", Role.SINGER), ("lis", Role.SPECTATOR), ("bo", Role.SINGER)]
    ):
        state.join(sid, sid.title() + " é", role, T0 + i)
    state.request_lead("amy", T0 + 10)
    state.start_song("amy", T0 + 20)
    state.stop_song("amy", T0 + 5 * SAMPLE_RATE)
    state.start_song("amy", T0 + 9 * SAMPLE_RATE)
    state.set_muted("bo", True)
    state.disconnect("zed", T0 + 30)
    state.set_gain("amy", "bo", -math.inf)
    state.solo("amy", "zed", True)
    state.set_mix("zed", "solo")
    return state


# Since pages get the material in a message of its own, the view carries its version too.
EXPECTED_JSON = CAPTURED_JSON.replace('},"material":{', '},"material_version":0,"material":{', 1)


def test_the_typed_view_sends_the_same_bytes_as_before() -> None:
    state = _scenario()
    view = mixer_view("choir", state)
    assert dumps(to_builtins(view)) == EXPECTED_JSON
    expected = json.loads(EXPECTED_JSON)
    assert msgspec.msgpack.encode(view) == msgspec.msgpack.encode(expected)
    # A state event from a mixer before material_version still decodes (version 0).
    old = json.loads(CAPTURED_JSON)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=PublicRoom) == view


def test_pages_get_the_state_without_its_material_and_the_material_on_its_own() -> None:
    state = _scenario()
    state.set_lyrics("amy", "Row, row, row your boat")
    view = mixer_view("choir", state)
    assert view.material_version == 1
    page = page_state(view)
    assert "material" not in page and page["material_version"] == 1
    assert list(page) == [k for k in to_builtins(view) if k != "material"]
    message = material_message(view.material_version, view.material)
    assert message["type"] == "material" and message["version"] == 1
    assert message["material"] == to_builtins(view)["material"]


async def test_the_material_version_is_stored_with_the_material_and_read_back(
    redis_url: str,
) -> None:
    """A mixer taking a room over (and a gateway reading it from Redis) sees the material
    version the last owner had: pages holding that material need no new copy."""
    state = RoomState(RoomConfig())
    state.join("s-ann", "Ann", Role.SINGER, T0)
    state.request_lead("s-ann", T0 + 1)
    state.set_lyrics("s-ann", "Row, row")
    state.set_lyrics("s-ann", "Row, row, row")
    assert state.material_version == 2
    redis = Redis.from_url(redis_url)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            queue_persist(pipe, "mv", state, b"0-0", set(), material=True)
            await pipe.execute()
        loaded, _, _ = await load_room(redis, "mv", MixerSettings(redis_url=redis_url))
        assert loaded.material_version == 2 and loaded.material.lyrics == "Row, row, row"
        song: dict[bytes, bytes] = await redis.hgetall(keys.room_song("mv"))  # type: ignore[assignment]
        members: dict[bytes, bytes] = await redis.hgetall(keys.room_members("mv"))  # type: ignore[assignment]
        view = gateway_view("mv", RoomMeta(), members, song)
        assert view.material_version == 2 and view.material.lyrics == "Row, row, row"
    finally:
        await redis.aclose()
