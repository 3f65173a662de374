"""The mixer's room view and the gateway's (from Redis hashes) must agree."""

from __future__ import annotations

from common import records
from common.constants import SAMPLE_RATE
from common.records import RoomMeta
from gateway.rooms import public_state as gateway_view
from mixer.room import Role, RoomConfig, RoomState
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
    assert [m["singer_id"] for m in expected["members"]] == ["zed", "amy", "lis", "bo"]
    assert expected["leader"] == "amy" and expected["song"]["running"]
    assert expected["taps"] == sorted({m.delay for m in state.members.values() if m.connected})
    bo = next(m for m in expected["members"] if m["singer_id"] == "bo")
    zed = next(m for m in expected["members"] if m["singer_id"] == "zed")
    assert (bo["gain_db"], bo["soloed"], expected["solo"]) == (-6.0, True, ["bo"])
    assert (zed["mix"], zed["hears"]) == ("solo", "solo")
