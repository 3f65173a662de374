"""Song material against the real stack: uploads, the room's records, failover and expiry.

A real redis-server, two ``brigade mixer`` and two ``brigade gateway``
processes, protocol clients (tests/test_gateway_e2e.py's ``Peer``) and HTTP
uploads of files made on the spot (tests/uploadfiles.py). The track and
image keys get a TTL of 8 s here (``BB_MATERIAL_TTL_S``; longer than a
failover, which takes about 4 s), so expiry is seen within the test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from common.clock import now_samples
from common.constants import SAMPLE_RATE
from tests.conftest import flush
from tests.support import REPO, RedisServer, Stack, async_wait_until, wait_until
from tests.test_gateway_e2e import Peer, peers
from tests.test_roommaterial import page_material
from tests.uploadfiles import bad_uploads, encode, good_track, png_bytes

TTL_S = 8.0


# Two mixers and two gateways for the module (one Redis), with a tracks library.
pytestmark = pytest.mark.stack(
    mixers=2,
    gateways=2,
    library=True,
    env={"BB_LOG_LEVEL": "INFO", "BB_MATERIAL_TTL_S": str(TTL_S)},
)


@pytest.fixture(scope="module")
def redis_backend(redis_server: RedisServer) -> RedisServer:
    """One Redis only (emptied): the module's ``module_stack`` runs on it."""
    flush(redis_server)
    return redis_server


def material_keys(stack: Stack, rooms: str = "*") -> list[bytes]:
    """The track and image keys of the rooms matching ``rooms`` (a glob)."""
    found: list[bytes] = []
    for pattern in (f"bb:{{{rooms}}}:track:*", f"bb:{{{rooms}}}:image:*"):
        found.extend(bytes(k) for k in stack.redis.scan_iter(match=pattern, count=1000))
    return found


def seat(peer: Peer) -> dict[str, str]:
    return {"X-BB-Singer": peer.singer, "X-BB-Token": peer.token}


async def upload(
    http: aiohttp.ClientSession,
    base: str,
    room: str,
    kind: str,
    data: bytes,
    headers: dict[str, str],
    name: str = "song.wav",
) -> tuple[int, dict[str, Any]]:
    path = f"/api/rooms/{room}/tracks" if kind == "track" else f"/api/rooms/{room}/image"
    async with http.post(base + path, data=data, params={"name": name}, headers=headers) as r:
        return r.status, await r.json()


def latest_state(peer: Peer) -> dict[str, Any]:
    """The newest state ``peer`` got, with the material as its page shows it: the latest
    ``material`` message (with the ``cues`` since), which the gateway sends before any
    state naming its version; a change of the material alone comes with no state, so
    the material may be newer than the state's ``material_version``."""
    states = [m["state"] for m in peer.json if m["type"] in ("state", "welcome") and m["state"]]
    state = dict(max(states, key=lambda s: int(s["version"])))
    assert "material" not in state, "material travels in its own message"
    held = page_material(peer.json)
    assert held is not None and held[0] >= state["material_version"], held
    state["material"] = held[1]
    return state


async def test_twenty_bad_uploads_are_refused_in_words_and_store_nothing(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    ann, ben = peers(http, module_stack, 0, 1)
    await ann.join("badfiles", "Ann")
    await ben.join("badfiles", "Ben")
    await ann.ok("lead")
    base = module_stack.gateways[1]  # not the gateway Ann is connected to
    version = latest_state(ann)["version"]
    good = encode(good_track(), SAMPLE_RATE, "wav")
    # Who may upload: a seat is needed, it must be this room's, and the leader's.
    assert (await upload(http, base, "badfiles", "track", good, {}))[0] == 401
    wrong = {"X-BB-Singer": ann.singer, "X-BB-Token": "not-the-token"}
    assert (await upload(http, base, "badfiles", "track", good, wrong))[0] == 403
    # A real seat sent to a room that does not exist: no such room (docs/protocol.md).
    for kind in ("track", "image"):
        status, body = await upload(http, base, "nosuchroom", kind, good, seat(ann))
        assert (status, body["error"]) == (404, "no such room")
    status, body = await upload(http, base, "badfiles", "track", good, seat(ben))
    assert (status, body["error"]) == (403, "only the leader can add a track or an image")
    status, body = await upload(http, base, "badfiles", "image", png_bytes(), seat(ben))
    assert status == 403

    for bad in bad_uploads():
        status, body = await upload(http, base, "badfiles", bad.endpoint, bad.data, seat(ann))
        print(f"{bad.what}: {status} {body['error']}")
        assert status == bad.status, (bad.what, body)
        assert isinstance(body["error"], str) and 10 < len(body["error"]) < 300
    assert material_keys(module_stack) == []
    # A window for a wrong change to show: what is checked is that nothing happens.
    await asyncio.sleep(0.5)
    state = latest_state(ann)
    assert state["version"] == version, "a refused upload changed the room"
    assert state["material"]["tracks"] == [] and state["material"]["image"] is None
    assert state["song"]["track"] is None
    # The leader's good upload after all that is taken.
    status, body = await upload(http, base, "badfiles", "track", good, seat(ann))
    assert status == 201, body
    await ann.wait(lambda m: m["type"] == "state" and m["state"]["song"]["track"] is not None)
    for peer in (ann, ben):
        await peer.close()


async def test_material_reaches_late_joiners_survives_failover_and_ends_the_song(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    ann = Peer(http, module_stack.ws(0))
    await ann.join("material", "Ann")
    await ann.ok("lead")
    base = module_stack.gateways[0]
    track_file = encode(good_track(44_100), 44_100, "mp3", channels=2)
    status, body = await upload(http, base, "material", "track", track_file, seat(ann), "Hymn.mp3")
    assert status == 201, body
    track = body["track"]
    print(f"2 s stereo MP3 upload decoded and stored in {body['decode_ms']} ms")
    assert track["name"] == "Hymn.mp3" and abs(track["samples"] - 2 * SAMPLE_RATE) < 2000
    status, image = await upload(http, base, "material", "image", png_bytes(), seat(ann))
    assert status == 201, image
    lyrics = "Row, row, row your boat\nGently down the stream\nMerrily, merrily"
    await ann.ok("set_lyrics", text=lyrics)
    await ann.ok("set_metronome", on=True, bpm=120, beats=4, count_in=True)

    # The bytes are served by every gateway, with their own type and nosniff.
    for gateway in module_stack.gateways:
        async with http.get(f"{gateway}/api/rooms/material/tracks/{track['id']}") as r:
            assert r.status == 200 and r.content_type == "audio/ogg"
            assert (await r.read())[:4] == b"OggS"
        async with http.get(f"{gateway}/api/rooms/material/images/{image['image']['id']}") as r:
            assert r.status == 200 and r.content_type == "image/png"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert await r.read() == png_bytes()
    async with http.get(f"{base}/api/rooms/material/images/i-000000000000") as r:
        assert r.status == 404

    # A late joiner gets all of it as it joins: the material, then its welcome.
    late = Peer(http, module_stack.ws(1))
    await late.join("material", "Late", role="spectator")
    assert [m["type"] for m in late.json][:2] == ["material", "welcome"]
    state = latest_state(late)
    assert state["material"]["lyrics"] == lyrics
    assert state["material"]["image"]["id"] == image["image"]["id"]
    assert state["song"]["track"]["id"] == track["id"]
    assert state["song"]["metronome"]["count_in"] is True

    # The owning mixer dies: the other one takes the room over with its material.
    owner = module_stack.owner("material")
    assert owner is not None
    module_stack.mixers[owner].kill()
    await async_wait_until(
        lambda: module_stack.owner("material") not in (None, owner),
        15,
        "another mixer to own the room",
    )
    await ann.ok("set_lyrics", text=lyrics + "\nLife is but a dream")
    await async_wait_until(
        lambda: latest_state(late)["material"]["lyrics"].endswith("Life is but a dream"),
        15,
        "the new lyrics to reach the late joiner",
    )
    state = latest_state(late)
    assert state["song"]["track"]["id"] == track["id"]
    assert state["material"]["image"] is not None
    # A gateway with nobody in the room (as after a restart) reads it all from Redis.
    await late.close()
    # A moment for that gateway to drop its view of the room. Nothing outside the process
    # shows when it has (the answer reads the same either way), so this one stays a sleep.
    await asyncio.sleep(0.5)
    async with http.get(f"{module_stack.gateways[1]}/api/rooms/material") as r:
        from_redis = await r.json()
    assert from_redis["material"]["tracks"][0]["id"] == track["id"]
    assert from_redis["material"]["lyrics"].endswith("Life is but a dream")
    assert from_redis["song"]["metronome"]["count_in"] is True

    # brigade inspect shows it.
    shown = await inspect(module_stack, "material")
    assert "track Hymn.mp3" in shown and "metronome 120 bpm, 4 per bar, count-in" in shown
    assert "lyrics: 4 lines" in shown and "image/png" in shown
    as_json = json.loads(await inspect(module_stack, "material", "--json"))
    assert as_json["material"]["tracks"][0]["id"] == track["id"]

    # The song ends by itself when the track does: count-in bar (2 s) + the track.
    await ann.ok("start")
    started = await ann.wait(lambda m: m["type"] == "state" and m["state"]["song"]["running"])
    song = started["state"]["song"]
    assert song["origin"] == song["start_pos"] + 2 * SAMPLE_RATE
    ended = await ann.wait(
        lambda m: m["type"] == "state" and m["state"]["song"]["end_pos"] is not None,
        timeout_s=15,
    )
    song = ended["state"]["song"]
    assert song["end_pos"] == song["origin"] + track["samples"]
    assert song["stopped_by"] is None and not song["running"]
    await ann.close()
    # Restart the killed mixer so the module's other tests have two again.
    module_stack.add_mixer(owner)


def since(peer: Peer, mark: int, kind: str) -> list[dict[str, Any]]:
    """The messages of type ``kind`` ``peer`` got after its first ``mark`` ones."""
    return [m for m in peer.json[mark:] if m["type"] == kind]


def joined_with(peer: Peer, lyrics: str) -> int:
    """Check ``peer`` got the room's material, holding ``lyrics``, before its welcome (whose
    state names that material's version); its material version."""
    types = [m["type"] for m in peer.json]
    welcome = peer.json[types.index("welcome")]
    material = since(peer, 0, "material")[0]
    assert types.index("material") < types.index("welcome"), types[:3]
    assert material["material"]["lyrics"] == lyrics
    assert "material" not in welcome["state"]
    assert welcome["state"]["material_version"] == material["version"]
    return int(material["version"])


async def lyrics_room(
    http: aiohttp.ClientSession, stack: Stack, room: str, lyrics: str, fan_gateway: int
) -> tuple[Peer, Peer, Peer]:
    """Ann (gateway 0) leads ``room`` and sets ``lyrics``; then Ben joins through gateway 1
    and Fan listens through ``fan_gateway``."""
    ann = Peer(http, stack.ws(0))
    await ann.join(room, "Ann")
    await ann.ok("lead")
    await ann.ok("set_lyrics", text=lyrics)
    ben, fan = peers(http, stack, 1, fan_gateway)
    await ben.join(room, "Ben")
    await fan.join(room, "Fan", role="listener")
    return ann, ben, fan


async def test_states_carry_the_material_version_and_the_material_comes_once_per_change(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    """A room with long lyrics: members and listeners on both gateways get its material
    once as they join; state changes (a mute, a join) send no material; new lyrics are
    one ``material`` message each, before the first state naming their version."""
    lyrics = "\n".join(f"Line {i}: row, row, row your boat, gently" for i in range(120))[:5000]
    ann, ben, fan = await lyrics_room(http, module_stack, "versions", lyrics, fan_gateway=1)
    version = joined_with(ben, lyrics)
    assert joined_with(fan, lyrics) == version
    await ann.wait_member(ben.singer, connected=True)
    assert latest_state(ann)["material_version"] == version
    everyone = (ann, ben, fan)
    marks = [len(peer.json) for peer in everyone]

    # State changes without material: a mute, a join (on the other gateway).
    await ben.ok("mute", muted=True)
    cid = Peer(http, module_stack.ws(0))
    await cid.join("versions", "Cid")
    assert joined_with(cid, lyrics) == version
    for peer in everyone:
        await peer.wait(
            lambda m: (
                m["type"] == "state"
                and any(x["name"] == "Cid" for x in m["state"]["members"])
                and any(x["name"] == "Ben" and x["muted"] for x in m["state"]["members"])
            )
        )
    for peer, mark in zip(everyone, marks, strict=True):
        states = since(peer, mark, "state")
        assert states and all("material" not in m["state"] for m in states)
        assert {m["state"]["material_version"] for m in states} == {version}
        assert since(peer, mark, "material") == [], "material sent though it did not change"

    # New lyrics: one material message, and no state (nothing else changed); the next
    # state (Ben unmutes) names the new version.
    marks = [len(peer.json) for peer in everyone]
    await ann.ok("set_lyrics", text=lyrics + "\nLife is but a dream")
    for peer, mark in zip(everyone, marks, strict=True):
        material = await peer.wait(lambda m: m["type"] == "material", after=mark)
        assert material["material"]["lyrics"].endswith("Life is but a dream")
        assert material["version"] > version
    await ben.ok("mute", muted=False)
    for peer, mark in zip(everyone, marks, strict=True):
        unmuted = await peer.wait(
            lambda m: (
                m["type"] == "state"
                and any(x["name"] == "Ben" and not x["muted"] for x in m["state"]["members"])
            ),
            after=mark,
        )
        assert since(peer, mark, "state") == [unmuted], "a state for the lyrics alone"
        (material,) = since(peer, mark, "material")
        assert material["version"] == unmuted["state"]["material_version"]
        assert peer.json.index(material) < peer.json.index(unmuted)

    # Newcomers, a member and a listener, get the new material before their first state.
    dee = Peer(http, module_stack.ws(1))
    await dee.join("versions", "Dee")
    eve = Peer(http, module_stack.ws(0))
    await eve.join("versions", "Eve", role="listener")
    assert joined_with(dee, lyrics + "\nLife is but a dream") == material["version"]
    assert joined_with(eve, lyrics + "\nLife is but a dream") == material["version"]
    for peer in (*everyone, cid, dee, eve):
        await peer.close()


def cues_up_to(n: int) -> Callable[[dict[str, Any]], bool]:
    """Whether a message is the ``cues`` message that brings the cues up to ``n``."""
    return lambda m: m["type"] == "cues" and m["start"] + len(m["cues"]) == n


async def test_a_cue_sends_the_new_cues_and_no_state(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    """During a song the leader cues lines: members (on both gateways) and a listener get
    each cue as a ``cues`` message holding just the new cue, not the whole material, and
    no ``state``; a member joining mid-song gets the whole material with every cue; every
    page ends holding the room's cues (docs/protocol.md, *Cues*)."""
    lyrics = "\n".join(f"Line {i}: merrily, merrily, merrily" for i in range(40))
    ann, ben, fan = await lyrics_room(http, module_stack, "cued", lyrics, fan_gateway=0)
    await ann.ok("start")
    everyone = (ann, ben, fan)
    for peer in everyone:
        await peer.wait(lambda m: m["type"] == "state" and m["state"]["song"]["running"])
    delay = ann.me()["delay"]
    marks = [len(peer.json) for peer in everyone]
    for line in range(3):
        # The leader's playback position now: the room clock less its delay.
        await ann.ok("cue_lyrics", line=line, pos=now_samples() - delay)
        for peer in everyone:
            await peer.wait(cues_up_to(line + 1))
    for peer, mark in zip(everyone, marks, strict=True):
        deltas = since(peer, mark, "cues")
        assert [(m["start"], len(m["cues"])) for m in deltas] == [(0, 1), (1, 1), (2, 1)]
        assert all(b["base"] == a["version"] for a, b in itertools.pairwise(deltas))
        assert since(peer, mark, "material") == [], "the whole material sent for a cue"
        assert since(peer, mark, "state") == [], "a state sent for a cue"
        assert max(len(json.dumps(m)) for m in deltas) < 200

    # A member joining mid-song gets the whole material, every cue in it, before welcome.
    dee = Peer(http, module_stack.ws(1))
    await dee.join("cued", "Dee")
    assert [m["type"] for m in dee.json][:2] == ["material", "welcome"]
    assert len(dee.json[0]["material"]["cues"]) == 3
    # Every page holds what the room holds (the page's store: gateway/static/roomstore.js).
    async with http.get(f"{module_stack.gateways[0]}/api/rooms/cued") as r:
        room = await r.json()
    assert [line for _, line in room["material"]["cues"]] == [0, 1, 2]
    for peer in (*everyone, dee):
        held = page_material(peer.json)
        assert held is not None and held[0] == room["material_version"]
        assert held[1] == room["material"]
    await ann.ok("stop")
    for peer in (*everyone, dee):
        await peer.close()


async def inspect(module_stack: Stack, *args: str) -> str:
    """``brigade inspect`` as an operator runs it; its standard output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "brigade",
        "inspect",
        "--redis-url",
        module_stack.redis_url,
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    return out.decode()


async def test_abandoned_rooms_leave_no_tracks_or_images_behind(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    """Rooms created, given a track and an image, then left: their bytes expire."""
    long_track = np.tile(good_track(), 5)  # 10 s
    track_file = encode(long_track, SAMPLE_RATE, "flac")
    assert material_keys(module_stack, "abandoned*") == []
    before: Any = module_stack.redis.info("memory")
    rooms = [f"abandoned{i}" for i in range(5)]
    leaders = []
    base = module_stack.gateways[1]
    for room in rooms:
        leader = Peer(http, module_stack.ws(0))
        await leader.join(room, "Ann")
        await leader.ok("lead")
        for _ in range(2):
            status, body = await upload(http, base, room, "track", track_file, seat(leader))
            assert status == 201, body
        status, _ = await upload(http, base, room, "image", png_bytes(), seat(leader))
        assert status == 201
        leaders.append(leader)
    # While their leaders are there the rooms are in use: nothing expires.
    await asyncio.sleep(TTL_S + 1)  # the scenario: longer than the keys' TTL
    held = material_keys(module_stack, "abandoned*")
    assert len(held) == 3 * len(rooms)
    held_bytes = sum(int(module_stack.redis.memory_usage(key) or 0) for key in held)
    during: Any = module_stack.redis.info("memory")
    for leader in leaders:
        await leader.ok("leave")
        await leader.close()

    # The gateway that only took the uploads serves the room's current state, not a copy
    # of a state event it saw while waiting for an upload's reply.
    async def members_listed() -> int:
        async with http.get(f"{base}/api/rooms/{rooms[0]}") as r:
            return len((await r.json())["members"])

    async def nobody_listed() -> bool:
        return await members_listed() == 0

    await async_wait_until(nobody_listed, 5, "the uploads' gateway to list nobody")
    assert await members_listed() == 0
    # Nobody is in these rooms: nothing renews their keys, which expire after TTL_S.
    wait_until(
        lambda: not material_keys(module_stack, "abandoned*"), 3 * TTL_S, "the keys to expire"
    )
    # (The rooms' tap streams go 10 s after their last window, on their own.)
    wait_until(
        lambda: not any(module_stack.redis.scan_iter(match="bb:{abandoned*}:tap:*")), 30, "the taps"
    )
    after: Any = module_stack.redis.info("memory")
    grown = int(after["used_memory"]) - int(before["used_memory"])
    peak = int(during["used_memory"]) - int(before["used_memory"])
    released = int(during["used_memory"]) - int(after["used_memory"])
    print(
        f"5 abandoned rooms: {len(held)} keys of {held_bytes} B; used_memory +{peak} B "
        f"while held, {grown:+d} B after expiry (the rooms' own small records stay)"
    )
    assert held_bytes > 500_000 and released >= 0.9 * held_bytes

    # Someone comes back to such a room: the mixer forgets what expired.
    back = Peer(http, module_stack.ws(0))
    await back.join(rooms[0], "Back")
    await async_wait_until(
        lambda: (
            latest_state(back)["material"]["tracks"] == []
            and latest_state(back)["material"]["image"] is None
        ),
        10,
        "the expired material to leave the room's state",
    )
    await back.close()


async def test_the_library_is_read_on_request_and_its_tracks_are_taken_like_uploads(
    module_stack: Stack, http: aiohttp.ClientSession
) -> None:
    base = module_stack.gateways[0]
    async with http.get(base + "/api/tracks") as r:
        listed = (await r.json())["tracks"]
    folder = Path(module_stack.env["BB_TRACKS_DIR"])
    (folder / "Anthem.flac").write_bytes(encode(good_track(), SAMPLE_RATE, "flac"))
    async with http.get(base + "/api/tracks") as r:
        now_listed = (await r.json())["tracks"]
    assert [t["name"] for t in now_listed] == sorted([*(t["name"] for t in listed), "Anthem.flac"])
    ann = Peer(http, module_stack.ws(0))
    await ann.join("library", "Ann")
    await ann.ok("lead")
    async with http.post(
        f"{base}/api/rooms/library/tracks", params={"library": "Anthem.flac"}, headers=seat(ann)
    ) as r:
        assert r.status == 201
        assert (await r.json())["track"]["name"] == "Anthem.flac"
    async with http.post(
        f"{base}/api/rooms/library/tracks", params={"library": "../x.flac"}, headers=seat(ann)
    ) as r:
        assert r.status == 404
    await ann.wait(
        lambda m: (
            m["type"] == "state" and (m["state"]["song"]["track"] or {}).get("source") == "library"
        )
    )
    await ann.close()
