"""The page's pure modules, run in real Chromium: latency calibration on
synthetic click recordings, the clock estimator, the binary headers and the
occupancy decoding. No gateway: a tiny static server serves the modules."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import numpy as np
import pytest

from common.browser_schema import SCHEMA_PATH
from common.constants import OCC_FRAME_SAMPLES, SAMPLE_RATE
from mixer.room import Role, RoomConfig, RoomState
from mixer.view import public_state
from tests.browser_support import b64_floats

RATE = SAMPLE_RATE
ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000 * SAMPLE_RATE


PAGE_SCRIPT = """async () => {
  window.cal = await import('/static/calibration.js');
  window.clk = await import('/static/clock.js');
  window.conn = await import('/static/protocol.js');
  window.occ = await import('/static/occupancy.js');
  window.f32 = (b64) => new Float32Array(
    Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer);
  window.b64 = (arr) => {
    const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000)
      s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  };
}"""
"""The module's ``page`` (tests/conftest.py): the modules under test, and base64 helpers."""


# --- latency calibration ----------------------------------------------------------


def click_plan(page: Any) -> tuple[np.ndarray, list[int], int]:
    """The page's own calibration signal, click start indices and click length."""
    plan = page.evaluate(
        """(sampleRate) => {
          const r = cal.renderClicks({sampleRate});
          return {signal: b64(r.signal), emissions: r.emissions, clickSamples: r.clickSamples};
        }""",
        RATE,
    )
    signal = np.frombuffer(base64.b64decode(plan["signal"]), "<f4").astype(np.float64)
    return signal, list(plan["emissions"]), int(plan["clickSamples"])


def synthetic_recording(
    signal: np.ndarray,
    emissions: list[int],
    click_samples: int,
    latencies_ms: list[float],
    seed: int,
    noise: float = 0.002,
) -> np.ndarray:
    """What a microphone might hear: each click delayed by its own (fractional)
    latency, quieter, through a gentle low-pass with a room echo, plus noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros(signal.shape[0], np.float64)
    n = np.arange(click_samples + 8)
    for start, latency_ms in zip(emissions, latencies_ms, strict=True):
        click = signal[start : start + click_samples]
        shift = latency_ms * RATE / 1000
        whole = int(np.floor(shift))
        frac = shift - whole
        # Fractional delay by linear interpolation between neighbouring samples.
        padded = np.concatenate([[0.0], click, np.zeros(8)])
        delayed = (1 - frac) * padded[1:] + frac * padded[:-1]
        at = start + whole
        out[at : at + n.shape[0]] += 0.3 * delayed[: n.shape[0]]
    # Symmetric 3-tap low-pass (group delay exactly one sample) and an echo 7 ms later.
    out = np.convolve(out, [0.25, 0.5, 0.25])[1 : out.shape[0] + 1]
    echo = round(0.007 * RATE)
    out[echo:] += 0.25 * out[:-echo].copy()
    out += rng.normal(0, noise, out.shape[0])
    return out.astype(np.float32)


def analyze(page: Any, recording: np.ndarray, emissions: list[int]) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        "([rec, em, sampleRate]) => cal.analyzeClicks(f32(rec), em, {sampleRate})",
        [b64_floats(recording), emissions, RATE],
    )
    return result


def test_click_signal_is_1024_hz_at_105_bpm(page: Any) -> None:
    signal, emissions, click_samples = click_plan(page)
    assert len(emissions) >= 10
    spacing = np.diff(emissions)
    assert np.all(np.abs(spacing - 60 / 105 * RATE) <= 1)
    click = signal[emissions[0] : emissions[0] + click_samples]
    spectrum = np.abs(np.fft.rfft(click, n=RATE))  # zero-padded to 1 Hz bins
    assert abs(int(np.argmax(spectrum)) - 1024) <= 2
    # Silence between clicks: the detector must only hear the clicks.
    assert np.all(signal[emissions[0] + click_samples : emissions[1]] == 0)


@pytest.mark.parametrize("true_ms", [0.0, 87.3, 400.0])
def test_calibration_accepts_a_clean_recording(page: Any, true_ms: float) -> None:
    signal, emissions, click_samples = click_plan(page)
    rng = np.random.default_rng(1)
    latencies = list(true_ms + rng.uniform(-0.3, 0.3, len(emissions)))
    recording = synthetic_recording(signal, emissions, click_samples, latencies, seed=2)
    result = analyze(page, recording, emissions)
    assert result["accepted"], result["reason"]
    assert result["heard"] == len(emissions)
    assert result["spreadMs"] <= 2
    # The low-pass adds exactly one sample of delay.
    assert abs(result["latencyMs"] - (true_ms + 1000 / RATE)) < 0.5


def test_calibration_rejects_a_jittery_recording(page: Any) -> None:
    signal, emissions, click_samples = click_plan(page)
    # Every click still heard clearly, but arriving up to ±5 ms early or late
    # (a busy machine, Bluetooth, a browser that resizes its buffers).
    rng = np.random.default_rng(3)
    latencies = list(120 + rng.uniform(-5, 5, len(emissions)))
    spread = np.percentile(latencies, 75) - np.percentile(latencies, 25)
    assert spread > 3  # the fixture itself is jittery enough to matter
    recording = synthetic_recording(signal, emissions, click_samples, latencies, seed=4)
    result = analyze(page, recording, emissions)
    assert result["heard"] == len(emissions)
    assert not result["accepted"]
    assert result["spreadMs"] > 2
    assert "spread" in result["reason"]


def test_calibration_rejects_a_recording_without_clicks(page: Any) -> None:
    signal, emissions, _ = click_plan(page)
    rng = np.random.default_rng(5)
    recording = rng.normal(0, 0.01, size=(int(signal.shape[0]),)).astype(np.float32)
    result = analyze(page, recording, emissions)
    assert not result["accepted"]
    assert result["heard"] < 8
    assert "heard" in result["reason"]


def test_calibration_ignores_a_few_missed_clicks(page: Any) -> None:
    """Two clicks drowned out: still accepted on the rest (at least 8 of 12 are needed)."""
    signal, emissions, click_samples = click_plan(page)
    latencies = [42.0] * len(emissions)
    recording = synthetic_recording(signal, emissions, click_samples, latencies, seed=6)
    for start in emissions[3:5]:
        recording[start : start + 4000] = 0
    result = analyze(page, recording, emissions)
    assert result["accepted"], result["reason"]
    assert result["heard"] == len(emissions) - 2
    assert abs(result["latencyMs"] - 42.0 - 1000 / RATE) < 0.5


def test_volume_calibration_reaches_the_target(page: Any) -> None:
    # Singing at about -30 dBFS RMS: half the time a note, half silence.
    t = np.arange(4 * RATE) / RATE
    amplitude = np.sqrt(2) * 10 ** (-30 / 20)
    recording = (amplitude * np.sin(2 * np.pi * 330 * t) * (t % 1 < 0.5)).astype(np.float32)
    volume = "([rec, sampleRate]) => cal.analyzeVolume(f32(rec), {sampleRate})"
    result = page.evaluate(volume, [b64_floats(recording), RATE])
    assert result["accepted"]
    assert abs(result["levelDb"] - -30) < 0.5
    assert abs(20 * np.log10(result["gain"]) - 10) < 0.5
    quiet = page.evaluate(volume, [b64_floats(np.zeros(RATE, np.float32)), RATE])
    assert not quiet["accepted"]


# --- clock ------------------------------------------------------------------------


def test_clock_keeps_the_fastest_round_trips(page: Any) -> None:
    """Slow replies (queued on the way back) skew the midpoint; the estimator ignores them."""
    result = page.evaluate(
        """() => {
          const est = new clk.ClockEstimator({sampleRate: 48000});
          const offset = 1234.5;               // server - local, ms
          let t = 1e6;
          let seed = 7;
          const rand = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
          for (let i = 0; i < 20; i++) {
            const up = 5, down = i % 4 === 0 ? 5 : 5 + 80 * rand();  // asymmetric, often slow
            const serverMs = t + up + offset;
            est.add(t, t + up + down, serverMs * 48);
            t += 2000;
          }
          return est.summary(t);
        }"""
    )
    assert abs(result["offsetMs"] - 1234.5) < 0.5
    assert result["rttMs"] < 11


def test_clock_follows_drift(page: Any) -> None:
    """The page clock runs 200 ppm fast; the estimate tracks the offset at 'now'."""
    result = page.evaluate(
        """() => {
          const est = new clk.ClockEstimator({sampleRate: 48000});
          const offsetAt = (t) => 500 - 200e-6 * (t - 1e6);
          let t = 1e6;
          for (let i = 0; i < 60; i++) {
            est.add(t, t + 10, (t + 5 + offsetAt(t + 5)) * 48);
            t += 2000;
          }
          return {est: est.offsetMs(t), truth: offsetAt(t), drift: est.summary(t).driftPpm};
        }"""
    )
    assert abs(result["est"] - result["truth"]) < 0.3
    assert abs(result["drift"] - -200) < 10


# --- protocol headers ----------------------------------------------------------------


def test_upstream_header_matches_the_protocol(page: Any) -> None:
    start = 85_236_480_123_456
    got = page.evaluate(
        """(start) => {
          const buf = conn.packUpstream({codec: 1, stream: 0xdeadbeef, seq: 7, start,
            payload: [new Uint8Array([1, 2, 3]), new Uint8Array([9])]});
          const pcm = conn.packUpstream({codec: 2, stream: 1, seq: 0, start,
            payload: new Int16Array([-32768, 0, 32767])});
          return [b64(new Uint8Array(buf)), b64(new Uint8Array(pcm))];
        }""",
        start,
    )
    opus = base64.b64decode(got[0])
    assert opus[:20] == struct.pack("<BBHIIq", 1, 1, 2, 0xDEADBEEF, 7, start)
    assert opus[20:] == b"\x03\x00\x01\x02\x03\x01\x00\x09"
    pcm = base64.b64decode(got[1])
    assert pcm == struct.pack("<BBHIIq3h", 1, 2, 3, 1, 0, start, -32768, 0, 32767)


def test_downstream_header_is_parsed_and_validated(page: Any) -> None:
    start = 85_236_480_000_960
    frame = struct.pack("<BBHIq", 2, 1, 2, 288_000, start) + b"\x02\x00\xaa\xbb\x01\x00\xcc"
    got = page.evaluate(
        """(b) => {
          const f = conn.unpackDownstream(Uint8Array.from(atob(b), c => c.charCodeAt(0)).buffer);
          return {codec: f.codec, delay: f.delay, start: f.start,
                  packets: f.payload.map(p => Array.from(p))};
        }""",
        base64.b64encode(frame).decode(),
    )
    assert got == {"codec": 1, "delay": 288_000, "start": start, "packets": [[0xAA, 0xBB], [0xCC]]}
    bad = page.evaluate(
        """(b) => {
          try { conn.unpackDownstream(Uint8Array.from(atob(b), c => c.charCodeAt(0)).buffer); }
          catch (e) { return e.message; }
          return null;
        }""",
        base64.b64encode(frame[:-1]).decode(),
    )
    assert bad is not None and "packet 1" in bad


# --- occupancy -------------------------------------------------------------------------


def test_occupancy_is_drawn_in_position_order(page: Any) -> None:
    ring = 64 * OCC_FRAME_SAMPLES
    clock = 10 * ring + 5 * OCC_FRAME_SAMPLES  # ring index of the clock: frame 5
    bits = np.zeros(64, np.uint8)
    bits[[2, 4, 5, 63]] = 1  # frame 4 holds the newest audio, frame 5 the oldest
    snapshot = {
        "clock": clock,
        "ring_samples": ring,
        "frame_samples": OCC_FRAME_SAMPLES,
        "occupied": int(bits.sum()),
        "bitmap": base64.b64encode(np.packbits(bits).tobytes()).decode(),
    }
    got = page.evaluate(
        "(s) => Array.from(occ.framesByPosition(occ.decodeOccupancy(s)).bits)", snapshot
    )
    expected = np.roll(bits, -5).tolist()  # position order starts at the clock's ring frame
    assert got == expected
    assert got[0] == 1 and got[-1] == 1  # oldest (frame 5) first, newest (frame 4) last
    bad = page.evaluate(
        "(s) => { try { occ.decodeOccupancy(s); } catch (e) { return e.message; } return null; }",
        {**snapshot, "bitmap": base64.b64encode(b"\x00").decode()},
    )
    assert bad is not None and "bitmap" in bad


# --- the calibration runner through the real worklet ------------------------------------


def test_calibration_runner_measures_a_loopback(page: Any) -> None:
    """The runner plays clicks through the worklet and records its input; wired
    output → delay line → input, it must measure the delay line (plus the one
    render quantum that Web Audio adds to every cycle). Two engines at once,
    20 ms and 150 ms, to keep the test short."""
    results = page.evaluate(
        """async (loops) => {
          const { AudioEngine } = await import('/static/audio.js');
          const measure = async (loopMs) => {
            const engine = await AudioEngine.create(
              {sampleRate: 48000, frameSamples: 960, wantMic: false});
            const line = new DelayNode(engine.ctx, {maxDelayTime: 1, delayTime: loopMs / 1000});
            engine.node.connect(line);
            line.connect(engine.node);
            try {
              return await cal.runLatencyCalibration(engine);
            } finally {
              await engine.close();
            }
          };
          return Promise.all(loops.map(measure));
        }""",
        [20.0, 150.0],
    )
    quantum_ms = 128 * 1000 / RATE
    for loop_ms, result in zip([20.0, 150.0], results, strict=True):
        assert result["accepted"], result["reason"]
        assert result["heard"] == 12
        assert abs(result["latencyMs"] - (loop_ms + quantum_ms)) < 0.5, result


def test_codec_falls_back_to_pcm16(page: Any) -> None:
    got = page.evaluate(
        """async () => {
          const { chooseCodec } = await import('/static/codec.js');
          const base = {sampleRate: 48000, frameSamples: 960, needEncoder: true};
          const native = await chooseCodec(base);
          const forced = await chooseCodec({...base, forced: 'pcm16'});
          const saved = window.AudioEncoder;
          delete window.AudioEncoder;
          try {
            return {native, forced, missing: await chooseCodec(base),
                    listener: await chooseCodec({...base, needEncoder: false})};
          } finally {
            window.AudioEncoder = saved;
          }
        }"""
    )
    # Debian's Chromium has WebCodecs Opus; without an encoder a singer falls
    # back to pcm16, while a listener (who only decodes) keeps Opus.
    assert got == {"native": "opus", "forced": "pcm16", "missing": "pcm16", "listener": "opus"}


# --- the room store, announcements and playback health (pure modules) ----------------------

ROOM_STATE: dict[str, Any] = {
    "room": "choir",
    "version": 3,
    "capacity": 100,
    "leader": "s-ann",
    "song": {"running": False, "number": 0, "start_pos": None, "end_pos": None, "stopped_by": None},
    "buckets": {"n": 6, "spacing": 144000, "delays": [144000 * (i + 1) for i in range(6)]},
    "taps": [144000, 864000],
    "members": [
        {"singer_id": "s-ann", "name": "Ann", "role": "singer", "delay": 144000, "bucket": 0,
         "muted": False, "connected": True, "late": 0},
        {"singer_id": "s-lis", "name": "Lis", "role": "spectator", "delay": 864000, "bucket": 5,
         "muted": False, "connected": True, "late": 0},
    ],
}  # fmt: skip


def store_facts(page: Any, me: str, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply ``changes`` (song and leader fields) one by one; return what the page would say."""
    return list(
        page.evaluate(
            """async ([state, me, changes]) => {
              const { RoomStore } = await import('/static/roomstore.js');
              const { changesToAnnounce } = await import('/static/stageview.js');
              const store = new RoomStore();
              store.setMe(me);
              store.apply(state);
              const out = [];
              let version = state.version;
              for (const change of changes) {
                const previous = store.state;
                const next = {...previous, ...change, version: ++version,
                              song: {...previous.song, ...(change.song || {})}};
                store.apply(next);
                out.push({song: store.song(), said: changesToAnnounce(store, previous),
                          counts: store.counts(), alone: store.alone});
              }
              return out;
            }""",
            [ROOM_STATE, me, changes],
        )
    )


def test_room_store_shows_the_latest_material_message_as_state_material(page: Any) -> None:
    """The page gets the material in its own message (before the first state naming its
    version, or after a state, or not at all from an older server): views read
    ``state.material`` as before, and a state change keeps the material it had."""
    seen = page.evaluate(
        """async (state) => {
          const { RoomStore } = await import('/static/roomstore.js');
          const store = new RoomStore();
          const out = [];
          const look = () => ({lyrics: store.state ? store.state.material.lyrics : null,
                               current: store.materialCurrent});
          const emitted = [];
          store.onChange((s) => emitted.push(s.state ? s.state.material.lyrics : null));
          const lyrics = (text, version) => ({type: 'material', version,
            material: {tracks: [], lyrics: text, image: null, cues: [], previous_cues: [],
                       older_cues: []}});
          // Material before the first state (as at a join: before welcome).
          store.applyMaterial(lyrics('Row', 3));
          out.push(look());
          store.apply({...state, version: 1, material_version: 3});
          out.push(look());
          const shown = store.state.material;
          // A mute: a new state, the same material (the same object).
          store.apply({...state, version: 2, material_version: 3});
          out.push({...look(), same: store.state.material === shown});
          // A state naming a version not here yet shows the last material until it comes.
          store.apply({...state, version: 3, material_version: 4});
          out.push(look());
          store.applyMaterial(lyrics('Row, row', 4));
          out.push(look());
          // A server from before the material message: its state's own material.
          store.apply({...state, version: 4, material: lyrics('Old', 0).material});
          out.push(look());
          store.reset();
          out.push({material: store.material, state: store.state});
          return {out, emitted};
        }""",
        ROOM_STATE,
    )
    assert seen["out"] == [
        {"lyrics": None, "current": False},
        {"lyrics": "Row", "current": True},
        {"lyrics": "Row", "current": True, "same": True},
        {"lyrics": "Row", "current": False},
        {"lyrics": "Row, row", "current": True},
        {"lyrics": "Old", "current": True},
        {"material": None, "state": None},
    ]
    assert seen["emitted"] == ["Row", "Row", "Row", "Row, row", "Old", None]


def test_room_store_appends_cues_on_top_of_the_material_they_extend(page: Any) -> None:
    """A ``cues`` message (docs/protocol.md, *Cues*) is applied on the material at its
    ``base`` only: appended from ``start``, the version moved on, shown as
    ``state.material`` (a new object, the rest of the material kept); a ``cues`` message
    for another base (a missed one, a stale one, before any material) is ignored."""
    seen = page.evaluate(
        """async (state) => {
          const { RoomStore } = await import('/static/roomstore.js');
          const store = new RoomStore();
          const look = () => ({version: store.materialVersion, current: store.materialCurrent,
                               cues: store.state ? store.state.material.cues : null});
          const out = [];
          const cues = (version, base, start, list) => ({type: 'cues', version, base, start,
                                                         cues: list});
          out.push(store.applyCues(cues(4, 3, 0, [[10, 0]])));  // nothing held yet
          store.applyMaterial({type: 'material', version: 3, material: {tracks: [],
            lyrics: 'a\\nb\\nc', image: null, cues: [[5, 0]], previous_cues: [[1, 0]],
            older_cues: []}});
          store.apply({...state, version: 10, material_version: 3});
          const lyrics = store.state.material.lyrics;
          out.push(store.applyCues(cues(4, 3, 1, [[10, 1]])));
          out.push({...look(), lyrics: store.state.material.lyrics === lyrics,
                    previous: store.state.material.previous_cues});
          out.push(store.applyCues(cues(6, 5, 2, [[30, 2]])));  // a base not held: ignored
          out.push(store.applyCues(cues(4, 3, 1, [[10, 1]])));  // already applied: ignored
          out.push(store.applyCues(cues(5, 4, 2, [[20, 2], [25, 0]])));  // two at once
          out.push(look());  // the state names version 3: the material held is newer
          store.apply({...state, version: 12, material_version: 5});
          out.push(look());
          // A whole material (a new song) replaces the cues; a delta on top of it works.
          store.applyMaterial({type: 'material', version: 6, material: {...store.material,
            cues: [], previous_cues: store.material.cues}});
          out.push(store.applyCues(cues(7, 6, 0, [[40, 0]])));
          out.push({...look(), previous: store.state.material.previous_cues.length});
          return out;
        }""",
        ROOM_STATE,
    )
    assert seen == [
        False,
        True,
        {
            "version": 4,
            "current": True,
            "cues": [[5, 0], [10, 1]],
            "lyrics": True,
            "previous": [[1, 0]],
        },
        False,
        False,
        True,
        {"version": 5, "current": True, "cues": [[5, 0], [10, 1], [20, 2], [25, 0]]},
        {"version": 5, "current": True, "cues": [[5, 0], [10, 1], [20, 2], [25, 0]]},
        True,
        {"version": 7, "current": True, "cues": [[40, 0]], "previous": 4},
    ]


def test_room_store_says_who_stopped_and_counts_listeners_apart(page: Any) -> None:
    run = {"song": {"running": True, "number": 1, "start_pos": 10}}
    stop = {"song": {"running": False, "end_pos": 20, "stopped_by": "s-ann", "ended": "stopped"}}
    lis = store_facts(page, "s-lis", [run, stop])
    assert lis[0]["song"]["text"] == "Song 1 is running, led by Ann."
    assert lis[0]["said"] == ["Song 1 started."]
    assert lis[1]["song"]["text"].startswith("Ann stopped song 1.")
    assert lis[1]["said"] == ["Ann stopped song 1."]
    assert lis[1]["counts"] == {"singers": 1, "listeners": 1, "away": 0, "total": 2}
    ann = store_facts(page, "s-ann", [run, stop])
    assert ann[1]["song"]["text"].startswith("You stopped song 1.")
    # The leader left: the song ended without anyone stopping it.
    gone = {"leader": None, "members": ROOM_STATE["members"][1:]}
    ended = {"running": False, "end_pos": 20, "ended": "leader_left"}
    left = store_facts(page, "s-lis", [run, {**gone, "song": ended}])
    assert left[1]["song"]["text"].startswith("Song 1 ended: its leader left the room.")
    assert "Ann left." in left[1]["said"]
    assert left[1]["alone"]
    # A listener is never told to press Lead.
    nobody = store_facts(page, "s-lis", [{"leader": None}])
    assert "Press Lead" not in nobody[0]["song"]["text"]


def test_playback_health_is_full_only_when_something_is_heard(page: Any) -> None:
    got = page.evaluate(
        """async () => {
          const { playbackHealth, inSongWindow } = await import('/static/audiopath.js');
          const report = (over) => ({quanta: 100, underflowQuanta: 0, starved: false,
                                     bufferedMs: 500, outDb: -20, ...over});
          const h = (reports, opts) => playbackHealth(reports, {joined: true, ...opts});
          return {
            heard: h([report()], {running: true}),
            silent: h([report({outDb: -Infinity})], {running: false}),
            starvedBetween: h([report({starved: true, bufferedMs: 0})], {running: false}),
            starvedInSong: h([report({starved: true, bufferedMs: 0})], {running: true}),
            dropouts: h([report({underflowQuanta: 10})], {running: true}),
            window: [inSongWindow({running: true, start_pos: 100, end_pos: null}, 50, 60),
                     inSongWindow({running: false, start_pos: 100, end_pos: 200}, 200, 10),
                     inSongWindow({running: false, start_pos: 100, end_pos: 200}, 150, 10)],
          };
        }"""
    )
    assert (got["heard"]["level"], got["heard"]["percent"]) == ("good", 100)
    for quiet in ("silent", "starvedBetween"):
        assert (got[quiet]["level"], got[quiet]["percent"]) == ("quiet", 0), got[quiet]
    assert got["starvedInSong"]["level"] == "waiting"
    assert got["dropouts"]["level"] == "bad"
    assert got["window"] == [True, False, True]


def test_the_song_reaches_a_later_bucket_in_so_many_seconds(page: Any) -> None:
    got = page.evaluate(
        """async () => {
          const { songArrivalS, arrivalText, playbackHealth } =
            await import('/static/audiopath.js');
          const song = {running: true, start_pos: 480000};
          const report = (over) => ({quanta: 94, underflowQuanta: 0, starved: false,
                                     bufferedMs: 500, outDb: -Infinity, ...over});
          const h = (reports, opts) =>
            playbackHealth(reports, {joined: true, running: true, ...opts});
          return {
            // 12 s before the song reaches a page playing position 480000 - 12 s.
            ahead: songArrivalS(song, 480000 - 12 * 48000, 48000),
            partial: arrivalText(songArrivalS(song, 480000 - 11.2 * 48000, 48000)),
            reached: songArrivalS(song, 480000, 48000),
            stopped: songArrivalS({running: false, start_pos: 480000, end_pos: 500000}, 0, 48000),
            unknown: songArrivalS(song, null, 48000),
            quiet: h([report()], {arrivesInS: 12}),
            // Before the song is there, a starved or broken-up tap is not the room's fault.
            starved: h([report({starved: true, bufferedMs: 0})], {arrivesInS: 3}),
            dropouts: h([report({underflowQuanta: 40})], {arrivesInS: 3}),
            there: h([report()], {arrivesInS: null}),
            first: h([report()], {arrivesInS: 5, first: true}),
          };
        }"""
    )
    assert got["ahead"] == 12
    assert got["partial"] == "The song reaches your bucket in 12 s."
    assert got["reached"] is None and got["stopped"] is None and got["unknown"] is None
    for case in ("quiet", "starved", "dropouts"):
        assert got[case]["level"] == "quiet", got[case]
        assert got[case]["text"].startswith("The song reaches your bucket in "), got[case]
    assert got["quiet"]["text"] == "The song reaches your bucket in 12 s."
    assert got["there"]["text"] == (
        "Connected, but nothing to hear yet: the earlier buckets are silent."
    )
    assert got["first"]["text"].startswith("You sing first")


# Stats reports recorded from a listener in bucket 6 while she switched to "the soloed
# singers" during a song (Chromium, December 2026): the old tap's buffer drains, the
# switch leaves a gap, then the solo mix (silent until the solo reaches her delay) flows.
SWITCH_TRACE: list[tuple[int, float, float]] = [  # underflow quanta, buffered ms, output dB
    (0, 723, -11), (0, 472, -7), (0, 221, -8), (12, 0, -6), (64, 720, -679), (0, 669, -674),
    (0, 637, -674), (0, 667, -674), (0, 717, -674), (0, 565, -674), (0, 835, -674),
]  # fmt: skip


def test_a_switch_to_the_soloed_singers_is_not_called_a_breakup(page: Any) -> None:
    texts = page.evaluate(
        """async ([trace, state]) => {
          const { AudioPath } = await import('/static/audiopath.js');
          const { RoomStore } = await import('/static/roomstore.js');
          const store = new RoomStore();
          store.setMe('s-lis');
          const withMix = (hears, soloed) => ({...state, version: state.version + 1,
            song: {running: true, number: 1, start_pos: 0, end_pos: null},
            members: state.members.map((m) => m.singer_id === 's-lis' ? {...m, mix: hears, hears}
              : {...m, soloed})});
          store.apply(withMix('full', true));
          const path = new AudioPath({constants: {sample_rate: 48000}, engine: null,
                                      session: null, store, counters: {}, debug: {}});
          const report = ([u, b, db]) => ({quanta: 94, underflowQuanta: u, starved: false,
                                           bufferedMs: b, outDb: db});
          const out = [];
          // Listening to everyone, clearly (the first reports after joining settle first).
          for (let i = 0; i < 8; i++) out.push(path.onStats(report([0, 792, -9])).text);
          store.apply({...withMix('solo', true), version: 9});
          for (const row of trace) out.push(path.onStats(report(row)).text);
          return out;
        }""",
        [SWITCH_TRACE, ROOM_STATE],
    )
    before, after = texts[:8], texts[8:]
    assert not any("breaking up" in t or "Waiting for audio" in t for t in after), after
    assert before[0] == "Starting the sound…"
    assert before[-1] == "You hear the room clearly."
    # The switch is named until the gap has passed and two clean reports followed ...
    assert after[:6] == ["Switching to the soloed singers…"] * 6, after
    # ... then the truth: the solo mix is silent here for now (Ann, soloed, sits earlier).
    assert after[-1] == "You hear only the soloed singers, and they are silent for now."


def test_settling_waits_for_the_buffer_before_the_switch(page: Any) -> None:
    got = page.evaluate(
        """async () => {
          const { startSettling, settle, MAX_SETTLING_REPORTS, tapOf, tapChange,
                  switchingHealth } = await import('/static/audiopath.js');
          const clean = {quanta: 94, underflowQuanta: 0, starved: false, bufferedMs: 600};
          const run = (last, reports) => {
            const s = startSettling(last, 48000);
            const done = reports.map((r) => settle(s, r));
            return {drain: s.drain, settledAt: done.indexOf(true)};
          };
          return {
            // 800 ms buffered at 250.7 ms a report: 4 reports drain, one more for the gap.
            buffered: run({...clean, bufferedMs: 800}, Array(12).fill(clean)),
            joining: run(null, Array(4).fill(clean)),
            never: run(null, Array(40).fill({...clean, starved: true, bufferedMs: 0})),
            max: MAX_SETTLING_REPORTS,
            taps: [tapOf({delay: 144000, hears: 'solo'}), tapOf({delay: 144000}), tapOf(null)],
            changes: [tapChange(null, '144000/full'), tapChange('144000/full', '288000/full'),
                      tapChange('144000/full', '144000/solo')],
            words: ['start', 'moved', 'mix'].map((c) => switchingHealth(c, 'full').text),
          };
        }"""
    )
    assert got["buffered"] == {"drain": 5, "settledAt": 6}
    assert got["joining"] == {"drain": 1, "settledAt": 2}
    assert got["never"]["settledAt"] == got["max"] - 1  # gives up: the meter tells the truth
    assert got["taps"] == ["144000/solo", "144000/full", None]
    assert got["changes"] == ["start", "moved", "mix"]
    assert got["words"] == [
        "Starting the sound…",
        "Moving the sound to your new place in the room…",
        "Switching back to everyone…",
    ]


def test_people_are_placed_in_buckets_not_seconds(page: Any) -> None:
    got = page.evaluate(
        """async (buckets) => {
          const { placeOf } = await import('/static/views.js');
          return [placeOf({delay: 288000, bucket: 1}, buckets, 48000),
                  placeOf({delay: 360000, bucket: null}, buckets, 48000)];
        }""",
        ROOM_STATE["buckets"],
    )
    assert got == ["bucket 2", "own delay 7.5 s"]


def test_dropouts_before_the_song_arrives_are_not_held_against_it(page: Any) -> None:
    texts = page.evaluate(
        """async (state) => {
          const { AudioPath } = await import('/static/audiopath.js');
          const { RoomStore } = await import('/static/roomstore.js');
          const store = new RoomStore();
          store.setMe('s-lis');  // delay 864000: the song reaches her 15 s after the start
          store.apply({...state, song: {running: true, number: 1, start_pos: 0, end_pos: null}});
          const engine = {now: 864000 - 48000 * 4, roomClockNow() { return this.now; }};
          const path = new AudioPath({constants: {sample_rate: 48000}, engine, session: null,
                                      store, counters: {}, debug: {}});
          const report = (u, db) => ({quanta: 94, underflowQuanta: u, starved: false,
                                      bufferedMs: 600, outDb: db});
          const out = [];
          for (let i = 0; i < 16; i++) {
            out.push(path.onStats(report(i % 2 ? 30 : 0, -90)).text);
            engine.now += 12032;  // one report of 94 render quanta
          }
          for (let i = 0; i < 4; i++) {
            out.push(path.onStats(report(0, -12)).text);
            engine.now += 12032;
          }
          return out;
        }""",
        ROOM_STATE,
    )
    assert texts[2] == "The song reaches your bucket in 4 s.", texts
    assert texts[-1] == "You hear the room clearly.", texts


# --- what the page sends ---------------------------------------------------------------


def test_what_the_page_sends_fits_the_generated_schema(page: Any) -> None:
    """hello, ping, chat and the console's commands, as the page's own modules send
    them, validate against docs/browser-messages.schema.json (made from the types)."""
    state = RoomState(RoomConfig(capacity=8))
    state.join("s-1", "Ann", Role.SINGER, T0)
    state.join("s-2", "Ben", Role.SINGER, T0 + 1)
    state.request_lead("s-1", T0 + 2)
    room = msgspec.to_builtins(public_state("choir", state))
    sent: list[dict[str, Any]] = page.evaluate(
        """async (room) => {
          const sent = [];
          class FakeSocket {
            static OPEN = 1;
            constructor() {
              this.readyState = 1;
              queueMicrotask(() => this.onopen());
            }
            send(data) { if (typeof data === "string") sent.push(JSON.parse(data)); }
            close() {}
          }
          const real = window.WebSocket;
          window.WebSocket = FakeSocket;
          try {
            const { Connection } = await import("/static/connection.js");
            const { helloFields } = await import("/static/protocol.js");
            const { renderConsole } = await import("/static/console.js");
            const conn = new Connection("ws://test/ws", {});
            const seat = { room: "choir", name: "Ann", role: "singer", codec: "opus" };
            const resume = { singer: "s-1", token: "t" };
            conn.open(helloFields({ ...seat, password: "pw", resume })).catch(() => {});
            await Promise.resolve();
            conn.send("ping", { id: 1, t: performance.now() });
            conn.request("chat", { text: "hello" }).catch(() => {});
            const el = document.createElement("div");
            document.body.append(el);
            const request = (type, fields) => conn.request(type, fields).catch(() => {});
            renderConsole(el, room, "s-1", request);
            for (const input of el.querySelectorAll("input, select"))
              input.dispatchEvent(new Event("change"));
            for (const button of el.querySelectorAll("button")) button.click();
            el.remove();
          } finally {
            window.WebSocket = real;
          }
          return sent;
        }""",
        room,
    )
    schema = json.loads((ROOT / SCHEMA_PATH).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for message in sent:
        errors = [e.message for e in validator.iter_errors(message)]
        assert errors == [], (message, errors)
    assert {"hello", "ping", "chat", "set_gain", "solo"} <= {m["type"] for m in sent}


def test_a_listener_hears_the_tap_after_the_last_voice_and_follows_what_arrives(
    page: Any,
) -> None:
    """A listener (no member record) is described by its tap: gateway/listeners.py's rule
    (Ann sings at 3 s, heard one spacing later; the spectator Lis hears at 18 s), then
    whatever delay its audio actually arrives on."""
    out = page.evaluate(
        """async (state) => {
          const { RoomStore, listenerDelay } = await import('/static/roomstore.js');
          const store = new RoomStore();
          store.setMe("l-c7", "listener");
          store.apply(state);
          const first = store.me();
          store.setHeardDelay(1008000);
          const empty = listenerDelay({...state, members: []});
          return {first, after: store.me().delay, empty, singer: store.amSinger,
                  listed: store.member("l-c7")};
        }""",
        ROOM_STATE,
    )
    assert out["first"]["role"] == "listener" and out["first"]["delay"] == 864000
    assert out["after"] == 1008000
    assert out["empty"] == 6 * 144000
    assert out["singer"] is False and out["listed"] is None
