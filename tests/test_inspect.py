"""``brigade inspect``: the pure rendering, then the command against a real Redis and mixer."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
import redis

from common import keys, records
from common.commands import Lead, Start
from common.constants import OCC_FRAME_SAMPLES, SAMPLE_RATE
from common.records import Member, Song
from inspector import command as inspect_cmd
from inspector.view import (
    BLOCKS,
    Occupancy,
    Overview,
    RoomDetail,
    RoomSummary,
    StreamInfo,
    TapInfo,
    render_chart,
    render_overview,
    render_room,
    time_axis,
)
from tests.simgateway import SimGateway, Singer, sing_until
from tests.support import Process, RedisServer, free_port, processes, wait_until

RING = 120 * SAMPLE_RATE
# Not a multiple of the ring, so the ring's oldest frame sits mid-array and the map wraps.
CLOCK = 1_700_000_000 * SAMPLE_RATE + 12_345 * OCC_FRAME_SAMPLES
NOW_US = CLOCK * 1_000_000 // SAMPLE_RATE


def occupancy(*spans_s: tuple[float, float], clock: int = CLOCK) -> Occupancy:
    """A snapshot where the given spans (seconds before the clock) hold audio.

    Built from the documented layout (position p lives at ring index p mod ring,
    frame = index // 128), independently of the renderer's inverse mapping.
    """
    flags = np.zeros(RING // OCC_FRAME_SAMPLES, dtype=bool)
    for ago_start, ago_end in spans_s:
        first = clock - round(ago_start * SAMPLE_RATE)
        last = clock - round(ago_end * SAMPLE_RATE)
        for p in range(first, last, OCC_FRAME_SAMPLES):
            flags[(p % RING) // OCC_FRAME_SAMPLES] = True
    return Occupancy(
        clock=clock,
        ring_samples=RING,
        frame_samples=OCC_FRAME_SAMPLES,
        occupied=int(flags.sum()),
        bitmap=np.packbits(flags).tobytes(),
        mixer="m1",
    )


# --- pure rendering ----------------------------------------------------------------------------


def test_chart_puts_an_occupied_block_in_the_right_columns() -> None:
    occ = occupancy((60, 30), (10, 9.55))
    chart, axis = render_chart(occ, width=120)
    assert len(chart) == 120  # one column per second of the ring
    assert chart[:60] == " " * 60
    assert chart[60:90] == "█" * 30
    assert chart[90:110] == " " * 20
    assert chart[110] == "▄"  # 0.45 of that second holds audio: 4 eighths, rounded up
    assert chart[111:] == " " * 9
    assert axis.startswith("-120s") and axis.endswith("now")


def test_chart_of_the_last_seconds_only() -> None:
    occ = occupancy((60, 30), (10, 9))
    chart, axis = render_chart(occ, width=200, last_s=20)
    # 20 s in at most 200 columns: 0.1 s per column; the block 10 s ago starts mid-chart.
    assert len(chart) == 200
    assert chart == " " * 100 + "█" * 10 + " " * 90
    assert axis.startswith("-20s") and axis.endswith("now")


def test_chart_shows_a_single_occupied_frame_and_folds_columns() -> None:
    occ = occupancy((5, 5 - OCC_FRAME_SAMPLES / SAMPLE_RATE))
    assert occ.occupied == 1
    chart, _ = render_chart(occ, width=40)  # 3 s per column
    assert chart.strip() == BLOCKS[1]
    assert chart.index(BLOCKS[1]) == 38  # 5 s ago falls in the second-to-last 3 s slice


def test_time_axis_labels_both_ends_and_the_middle() -> None:
    axis = time_axis(60, 120)
    assert len(axis) == 60
    assert axis.startswith("-120s")
    assert axis.endswith("now")
    assert axis[28:32] == "-60s"
    assert time_axis(12, 2) == "-2s      now"  # no room for the middle label


def test_occupancy_refuses_a_short_bitmap() -> None:
    with pytest.raises(ValueError, match="bitmap is 3 bytes"):
        Occupancy(CLOCK, RING, OCC_FRAME_SAMPLES, 0, b"\0\0\0", None)


def _member(singer: str, name: str, delay_s: float, late: int, **extra: object) -> Member:
    return msgspec.convert(
        {
            "singer_id": singer,
            "name": name,
            "role": "singer",
            "delay": round(delay_s * SAMPLE_RATE),
            "bucket": 0,
            "joined": CLOCK - SAMPLE_RATE,
            "late": late,
            "chunks": 40,
            **extra,
        },
        Member,
    )


def _detail(**changes: object) -> RoomDetail:
    fields: dict[str, object] = {
        "name": "choir",
        "redis_url": "redis://x",
        "now_us": NOW_US,
        "registered": True,
        "owner": "m1",
        "lease_ttl_ms": 2500,
        "meta": {"capacity": "100", "created_at": str(NOW_US / 1e6 - 60)},
        "password_set": True,
        "song": Song(running=True, leader="a", start_pos=CLOCK - 5 * SAMPLE_RATE, number=1),
        "song_version": 7,
        "ctl_applied": "1-0",
        "ctl_pending": 0,
        "members": [
            _member("a", "Ann", 3, late=0),
            _member("b", "Bob", 6, late=7, level_db=-12.25),
            _member("c", "Cy", 6, late=0, connected=False, disconnected_at=CLOCK - 4 * SAMPLE_RATE),
        ],
        "bad_members": {"zz": "member: missing 'role'"},
        "taps": [
            TapInfo(144000, "bb:{choir}:tap:144000", True, 40, 30, 0, 9600, 96000),
            TapInfo(999, "bb:{choir}:tap:999", False, 1, 9000, None, None, None, "bad entry"),
        ],
        "streams": [StreamInfo("in", "bb:{choir}:in", 3, 200, 10)],
        "stats": {"chunks_in": "40", "late": "7", "clock": str(CLOCK), "mixer": "m1"},
        "occupancy": occupancy((4, 0)),
        "problems": [],
    }
    fields.update(changes)
    return RoomDetail(**fields)  # type: ignore[arg-type]


def test_room_detail_members_table_shows_late_counts() -> None:
    text = render_room(_detail(), width=100)
    lines = text.splitlines()
    header = next(line for line in lines if "LATE" in line and "CHUNKS" in line)
    row = next(line for line in lines if line.startswith("  b "))
    late_end = header.index("LATE") + len("LATE")
    assert row[late_end - 1 : late_end] == "7"
    assert row[: late_end - 1].rstrip().endswith("yes")  # connected, then the late count
    assert "6.000" in row and "-12.2 dB" in row
    cy = next(line for line in lines if line.startswith("  c "))
    assert "no, 4.0 s" in cy
    assert "members (2 connected of 3)" in text
    assert "zz: unreadable record" in text
    assert "owner m1, lease 2.5 s left" in text
    assert "password yes" in text
    assert f"start {CLOCK - 5 * SAMPLE_RATE} (-5.0 s vs ring clock), end -" in text


def test_room_detail_taps_streams_stats_and_chart() -> None:
    lines = render_room(_detail(), width=80).splitlines()
    tap = next(line for line in lines if "tap:144000" in line)
    assert "2.0 s" in tap and "a" in tap.split()[-1]  # lag 96000 samples; member a
    stale = next(line for line in lines if "tap:999" in line)
    assert "stale" in stale and "bad entry" in stale
    assert any(line.startswith("stats from m1, published 0 ms ago") for line in lines)
    occ_at = next(i for i, line in enumerate(lines) if line.startswith("occupancy:"))
    chart, axis = lines[occ_at + 1], lines[occ_at + 2]
    assert len(chart) == len(axis) == 78
    assert chart.rstrip().endswith("██")  # the last 4 s are occupied, at the right edge
    assert axis.strip().startswith("-120s") and axis.endswith("now")


def test_overview_lists_rooms_with_owner_and_members() -> None:
    data = Overview(
        "redis://x",
        NOW_US,
        [],
        [],
        [
            RoomSummary("choir", "m1", 2900, 3, 2, True, 1, 2, 5),
            RoomSummary("empty", None, None, 0, 0, False, 0, 0, 0),
        ],
    )
    lines = render_overview(data).splitlines()
    choir = next(line for line in lines if line.startswith("  choir"))
    assert choir.split() == ["choir", "m1", "2.9", "s", "2/3", "#1", "running", "2", "5"]
    empty = next(line for line in lines if line.startswith("  empty"))
    assert "(none)" in empty


# --- against Redis and a real mixer --------------------------------------------------------


@pytest.fixture
def sim(redis_url: str) -> Iterator[SimGateway]:
    client = redis.Redis.from_url(redis_url)
    yield SimGateway(client)
    client.close()


def _occupied(client: redis.Redis, room: str) -> int:
    raw = client.get(keys.room_occupancy(room))
    return records.decode(raw, records.Occupancy).occupied if raw else 0


def _sing_until_the_ring_fills(sim: SimGateway, room: str) -> tuple[int, int]:
    """Two singers join, A leads and starts; both sing until the snapshot shows audio."""
    for singer, name in (("a", "Ann"), ("b", "Bob")):
        assert sim.join(room, singer, name).ok
    assert sim.command(room, "a", Lead()).ok
    assert sim.command(room, "a", Start()).ok
    start = int(sim.state(room)["song"]["start_pos"])
    da, db = sim.member_delay(room, "a"), sim.member_delay(room, "b")
    singers = [Singer(sim, room, "a", 440, da, start), Singer(sim, room, "b", 660, db, start)]
    sing_until(singers, lambda: _occupied(sim.client, room) >= 10, 10, "audio in the ring")
    assert _occupied(sim.client, room) >= 10, "no audio reached the ring"
    return da, db


def test_inspect_a_room_with_a_running_mixer(
    sim: SimGateway,
    redis_url: str,
    output_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with processes(output_dir) as started:
        env = {"REDIS_URL": redis_url, "BB_MIXER_ID": "m1", "BB_PUBLISH_MS": "100"}
        started.append(Process(["mixer"], env, output_dir, "m1"))
        sim.create_room("choir", capacity=12, password_hash="pbkdf2_sha256$9$salt$SECRETHASH")
        wait_until(lambda: sim.owner("choir") == "m1", 5, "m1 to own the room")
        da, db = _sing_until_the_ring_fills(sim, "choir")
        # A tap stream nobody uses any more (and with a broken entry): found by SCAN.
        sim.client.xadd(keys.room_tap("choir", 999), {"d": b"junk"})

        assert inspect_cmd.main(["--redis-url", redis_url, "--width", "100"]) == 0
        overview = capsys.readouterr().out
        assert "m1: heartbeat" in overview and "1 room(s): choir" in overview
        row = next(line for line in overview.splitlines() if line.startswith("  choir"))
        assert row.split()[1] == "m1" and "2/2" in row and "running" in row

        # Room names are case-insensitive, here as everywhere.
        assert inspect_cmd.main(["--redis-url", redis_url, "Choir", "--width", "100"]) == 0
        detail = capsys.readouterr().out
        (output_dir / "inspect-choir.txt").write_text(detail)
        assert "room choir: owner m1, lease" in detail
        assert "capacity 12, password yes" in detail
        assert "SECRETHASH" not in detail
        assert "song: #1 running, leader a" in detail
        assert any(line.startswith("  a ") and "Ann" in line for line in detail.splitlines())
        assert any(line.startswith("  b ") and "Bob" in line for line in detail.splitlines())
        for delay in (da, db):
            tap = next(line for line in detail.splitlines() if f"tap:{delay} " in line)
            assert "stale" not in tap
        assert "stale ! bad entry" in detail
        lines = detail.splitlines()
        occ_at = next(i for i, line in enumerate(lines) if line.startswith("occupancy:"))
        assert set(lines[occ_at + 1]) & set(BLOCKS[1:]), "the chart shows the audio"
        assert lines[occ_at + 2].strip().startswith("-120s")

        assert inspect_cmd.main(["--redis-url", redis_url, "choir", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["kind"] == "room" and data["owner"] == "m1"
        assert {m["singer_id"] for m in data["members"]} == {"a", "b"}
        assert {"late", "delay", "chunks", "rejected"} <= set(data["members"][0])
        # The live counters, published with the stats (the member records keep those of
        # the room's last change), and not shown as a stats field of their own.
        assert sum(m["chunks"] for m in data["members"]) > 0, data["members"]
        assert "members" not in data["stats"]
        in_use = {t["delay"]: t["in_use"] for t in data["taps"]}
        # Streams of delays given up (B moved when A led) linger until their TTL: stale.
        assert {d for d, used in in_use.items() if used} == {da, db}
        assert in_use[999] is False
        assert [s["name"] for s in data["streams"]] == ["in", "ctl", "events"]
        assert int(data["stats"]["chunks_in"]) > 0
        assert "password_hash" not in data["meta"] and data["password_set"] is True
        bitmap = base64.b64decode(data["occupancy"]["bitmap"])
        assert len(bitmap) == RING // OCC_FRAME_SAMPLES // 8
        assert int(np.unpackbits(np.frombuffer(bitmap, np.uint8)).sum()) > 0

        assert inspect_cmd.main(["--redis-url", redis_url, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["kind"] == "overview"
        assert [m["id"] for m in data["mixers"]] == ["m1"]
        mixer = data["mixers"][0]
        assert mixer["alive"] and mixer["rooms"] == ["choir"] and mixer["counters"]["ticks"] > 0
        assert [(r["name"], r["owner"]) for r in data["rooms"]] == [("choir", "m1")]


def test_room_without_an_owner_and_watch(
    sim: SimGateway,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim.create_room("lonely")
    assert inspect_cmd.main(["--redis-url", redis_url]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "lonely" in line)
    assert row.split()[:3] == ["lonely", "(none)", "-"]
    assert inspect_cmd.main(["--redis-url", redis_url, "lonely"]) == 0
    out = capsys.readouterr().out
    assert "owner: none" in out and "occupancy: (no snapshot" in out

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("inspector.command.time.sleep", sleep)
    # "--watch ROOM" means the default period; an unknown room is shown, not fatal.
    assert inspect_cmd.main(["--redis-url", redis_url, "--watch", "lonely"]) == 0
    out = capsys.readouterr().out
    assert out.count(inspect_cmd.CLEAR_SCREEN) == 2 and "room lonely" in out
    assert sleeps == [1.0, 1.0]
    sleeps.clear()
    assert inspect_cmd.main(["--redis-url", redis_url, "ghost", "--watch", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "'ghost' not found" in out and sleeps == [0.5, 0.5]


def test_unknown_room_exits_1(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect_cmd.main(["--redis-url", redis_url, "ghost"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        "brigade inspect: room 'ghost' not found (not in bb:rooms, no meta/members/song)"
    )


def test_unreachable_redis_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    assert inspect_cmd.main(["--redis-url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("brigade inspect: cannot reach Redis at redis://:***@127.0.0.1:")
    assert err.count("\n") == 1 and "Traceback" not in err and "hunter2" not in err


def test_the_overview_shows_recorders_beside_mixers_and_gateways(
    redis_url: str, output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_url)
    env = {
        "REDIS_URL": redis_url,
        "BB_RECORDER_ID": "rec1",
        "BB_RECORDINGS_DIR": str(output_dir / "recordings"),
    }
    with processes(output_dir) as started:
        recorder = Process(["recorder"], env, output_dir, "rec1")
        started.append(recorder)
        wait_until(lambda: client.exists(keys.recorder_heartbeat("rec1")), 15, "its heartbeat")
        # A heartbeat nobody can read is shown too, not skipped.
        client.set(keys.recorder_heartbeat("broken"), b"junk", px=60_000)

        assert inspect_cmd.main(["--redis-url", redis_url, "--width", "100"]) == 0
        lines = capsys.readouterr().out.splitlines()
        at = lines.index("recorders (2)")
        assert lines[at + 1].startswith("  broken: heartbeat (unreadable heartbeat")
        rec1 = next(line for line in lines[at:] if line.startswith("  rec1: heartbeat (alive"))
        assert f"pid {recorder.proc.pid}" in rec1 and "records 0 room(s)" in rec1

        assert inspect_cmd.main(["--redis-url", redis_url, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        recorders = {r["id"]: r for r in data["recorders"]}
        assert set(recorders) == {"broken", "rec1"}
        assert recorders["rec1"]["alive"] and recorders["rec1"]["pid"] == recorder.proc.pid
        assert not recorders["broken"]["alive"]


def test_the_overview_shows_keepers_and_not_their_markers(
    redis_url: str, output_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_url)
    state = RedisServer()
    state.start()
    env = {"REDIS_URL": redis_url, "BB_STATE_REDIS_URL": state.url, "BB_KEEPER_ID": "kp1"}
    try:
        with processes(output_dir) as started:
            keeper = Process(["keeper"], env, output_dir, "kp1")
            started.append(keeper)
            wait_until(lambda: client.exists(keys.keeper_heartbeat("kp1")), 15, "its heartbeat")
            client.set(keys.keeper_heartbeat("{0}"), b"1")  # a master's marker on a cluster

            assert inspect_cmd.main(["--redis-url", redis_url, "--width", "100"]) == 0
            lines = capsys.readouterr().out.splitlines()
            at = lines.index("keepers (1)")
            assert lines[at + 1].startswith("  kp1: heartbeat (alive"), lines
            assert f"pid {keeper.proc.pid}" in lines[at + 1]
            counters = " ".join(lines[at + 2 : at + 4])  # its counters, wrapped
            assert "keys_copied=" in counters and "restores=" in counters, lines

            assert inspect_cmd.main(["--redis-url", redis_url, "--json"]) == 0
            data = json.loads(capsys.readouterr().out)
            assert [k["id"] for k in data["keepers"]] == ["kp1"]
            assert data["keepers"][0]["alive"] and data["keepers"][0]["pid"] == keeper.proc.pid
    finally:
        client.close()
        state.stop()
