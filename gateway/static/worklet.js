// AudioWorkletProcessor: the playback buffer and the microphone tap.
//
// Playback: decoded frames arrive with their absolute room position and are
// written into a ring keyed by position (slot = position mod ring length,
// with the lap number kept per sample, so a stale slot is never mistaken for
// fresh audio). Each render quantum plays the positions that the main
// thread's clock mapping assigns to it: an anchor says "context frame F plays
// position P" (P = room clock at F's output time minus the singer's delay).
// Small disagreements between the anchor and our running position are slewed
// away, one sample per quantum per half millisecond of error, at most
// MAX_SLEW (3 %: enough for an audio clock that runs a little fast or slow
// against the room's, as a loaded computer's or a cheap sound card's may);
// large ones (a new delay, a clock step) jump. A sample that is not in the ring when it is due is an
// underflow, counted and reported.
//
// Microphone: the samples captured in a quantum are stamped with the
// position played in that quantum minus the calibrated round-trip latency,
// and posted to the main thread in contiguous blocks (one Opus frame each).
// When playback slews by some samples, the mic stream repeats or drops as many
// samples too, so its positions stay contiguous and aligned.
//
// Calibration: `playRecord` plays a given signal instead of the mix and
// records the raw microphone over exactly the same frames.
//
// Song material: the backing track and the metronome's clicks are added to
// the mix sample by sample at the same positions (track sample i at the
// song's origin + i, clicks from metronome.js), each with this listener's
// own gain, inside the song window [start, end); and the song before's, with
// its own track and metronome, for its last seconds that a later bucket
// still plays after the leader has started the next. Each song names its
// track by id; the tracks' samples are kept by id (at most the two songs').
//
// Debug: with `record` on, what is played is posted back with its positions
// (bbDebug.played), so tests measure the page's own output.

import { clickSampleAt, clickWave, earlierSongs, songAt } from "./metronome.js";

const JUMP_SAMPLES = 960; // 20 ms: beyond this, jump instead of slewing
const SLEW_DEADBAND = 24; // 0.5 ms: anchor jitter below this is ignored
const MAX_SLEW = 4; // samples per 128-sample quantum
const STARVED_AFTER_QUANTA = 1125; // 3 s without frames: the stream stopped

class BrigadeProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions;
    this.ringSamples = opts.ringSamples;
    this.blockSamples = opts.blockSamples;
    this.statsEvery = Math.max(1, Math.round((opts.statsMs / 1000) * sampleRate / 128));
    this.ring = new Float32Array(this.ringSamples);
    this.lap = new Int32Array(this.ringSamples).fill(-1);
    this.anchor = null;
    this.playPos = null;
    this.latency = null;
    this.gain = 1;
    this.capture = false;
    this.micBlock = null;
    this.micFill = 0;
    this.micStart = 0;
    this.mono = new Float32Array(128);
    this.job = null;
    this.quantaSinceFrame = Infinity;
    this.expectFrom = Infinity;
    this.resetStats();
    this.song = { start: null, end: null, origin: null, metronome: null, trackId: null };
    this.earlier = []; // the songs before, still audible, newest first: {start, end, origin, metronome, trackId}
    this.tracks = new Map(); // track id -> samples, for the audible songs
    this.trackGain = 0.64;
    this.clickGain = 0.36;
    this.waves = [clickWave(false), clickWave(true)];
    this.record = false;
    this.played = null;
    this.playedPos = 0;
    this.playedFill = 0;
    this.totals = { underflowQuanta: 0, underflowSamples: 0, late: 0, early: 0, jumps: 0, slews: 0 };
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  resetStats() {
    this.stats = { quanta: 0, underflowQuanta: 0, underflowSamples: 0, micSq: 0, micN: 0, outSq: 0 };
  }

  onMessage(msg) {
    switch (msg.type) {
      case "anchor":
        this.anchor = { frame: msg.frame, pos: msg.pos };
        break;
      case "frame":
        this.write(msg.pos, msg.samples);
        break;
      case "config":
        if ("latency" in msg && msg.latency !== this.latency) {
          this.latency = msg.latency;
          this.micFill = 0;
        }
        if ("gain" in msg) this.gain = msg.gain;
        if ("trackGain" in msg) this.trackGain = msg.trackGain;
        if ("clickGain" in msg) this.clickGain = msg.clickGain;
        if ("record" in msg) {
          this.record = msg.record;
          this.playedFill = 0;
        }
        if ("capture" in msg) {
          this.capture = msg.capture;
          this.micFill = 0;
        }
        break;
      case "song": {
        const next = { start: msg.start, end: msg.end, origin: msg.origin, metronome: msg.metronome, trackId: msg.trackId ?? null };
        // The room state lists the songs before (docs/protocol.md, *Song material*); without
        // them, the songs this page was playing are.
        if (Array.isArray(msg.earlier)) this.earlier = msg.earlier;
        else if (msg.previous !== undefined) this.earlier = msg.previous ? [msg.previous] : [];
        else this.earlier = earlierSongs(this.song, next, this.earlier);
        this.song = next;
        const used = new Set([next.trackId, ...this.earlier.map((e) => e.trackId)]);
        for (const id of this.tracks.keys()) if (!used.has(id)) this.tracks.delete(id);
        this.bindTracks();
        break;
      }
      case "track":
        if (msg.samples) this.tracks.set(msg.id, msg.samples);
        else this.tracks.delete(msg.id);
        this.bindTracks();
        break;
      case "reset":
        // A new tap (delay): nothing buffered belongs to it.
        this.lap.fill(-1);
        this.quantaSinceFrame = Infinity;
        this.expectFrom = Infinity;
        break;
      case "playRecord":
        this.job = { id: msg.id, signal: msg.signal, rec: new Float32Array(msg.signal.length), at: 0 };
        break;
      default:
        break;
    }
  }

  /** Give each song the samples of its track (`samples`, null until they arrive). */
  bindTracks() {
    for (const song of [this.song, ...this.earlier]) {
      if (song) song.samples = (song.trackId !== null && song.trackId !== undefined && this.tracks.get(song.trackId)) || null;
    }
  }

  lapOf(p) {
    return (p - (p % this.ringSamples)) / this.ringSamples;
  }

  write(pos, samples) {
    if (this.playPos === null) return;
    const n = this.ringSamples;
    let from = 0;
    let to = samples.length;
    if (pos < this.playPos) {
      from = Math.min(to, this.playPos - pos);
      this.totals.late += from;
    }
    if (pos + to > this.playPos + n) {
      const keep = Math.max(from, this.playPos + n - pos);
      this.totals.early += to - keep;
      to = keep;
    }
    if (from >= to) return;
    // After a reset or a long silence, count underflows only from the first
    // position that arrived: the gap before it is a stream starting, not a dropout.
    if (this.quantaSinceFrame >= STARVED_AFTER_QUANTA) this.expectFrom = pos + from;
    for (let i = from; i < to; i++) {
      const p = pos + i;
      const idx = p % n;
      this.ring[idx] = samples[i];
      this.lap[idx] = this.lapOf(p);
    }
    this.quantaSinceFrame = 0;
  }

  /** Contiguous samples available from the play position (capped). */
  bufferedAhead(cap) {
    if (this.playPos === null) return 0;
    let ahead = 0;
    while (ahead < cap) {
      const p = this.playPos + ahead;
      if (this.lap[p % this.ringSamples] !== this.lapOf(p)) break;
      ahead += 128;
    }
    return Math.min(ahead, cap);
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const n = out.length;
    const input = inputs[0];
    const mono = this.mono.length === n ? this.mono : (this.mono = new Float32Array(n));
    mono.fill(0);
    if (input && input.length) {
      for (const channel of input) for (let i = 0; i < n; i++) mono[i] += channel[i] / input.length;
    }

    if (this.job) this.runJob(out, mono, n);
    else this.play(out, mono, n);

    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (++this.stats.quanta >= this.statsEvery) this.postStats();
    return true;
  }

  runJob(out, mono, n) {
    const job = this.job;
    const take = Math.min(n, job.signal.length - job.at);
    out.fill(0);
    out.set(job.signal.subarray(job.at, job.at + take));
    job.rec.set(mono.subarray(0, take), job.at);
    job.at += take;
    if (job.at >= job.signal.length) {
      this.port.postMessage({ type: "recorded", id: job.id, recording: job.rec }, [job.rec.buffer]);
      this.job = null;
    }
  }

  play(out, mono, n) {
    if (this.anchor === null) {
      out.fill(0);
      return;
    }
    const target = this.anchor.pos + (currentFrame - this.anchor.frame);
    if (this.playPos === null || Math.abs(target - this.playPos) > JUMP_SAMPLES) {
      if (this.playPos !== null) this.totals.jumps++;
      this.playPos = target;
      this.micFill = 0;
    }
    const err = target - this.playPos;
    const slew = Math.sign(err) * Math.min(MAX_SLEW, Math.floor(Math.abs(err) / SLEW_DEADBAND));
    if (slew) this.totals.slews++;
    const advance = n + slew;
    // Slew +s: play positions 0..n-1 and skip n..n+s-1. Slew −s: play
    // 0..n-s-1 and repeat n-s-1 (so n-s becomes next quantum's first).
    const ringN = this.ringSamples;
    const primed = this.quantaSinceFrame < STARVED_AFTER_QUANTA;
    let missing = 0;
    for (let j = 0; j < n; j++) {
      const p = this.playPos + Math.min(j, advance - 1);
      const idx = p % ringN;
      if (this.lap[idx] === this.lapOf(p)) {
        out[j] = this.ring[idx];
      } else {
        out[j] = 0;
        if (p >= this.expectFrom) missing++;
      }
      if (this.song.start !== null) out[j] += this.material(p);
      this.stats.outSq += out[j] * out[j];
    }
    if (primed && missing) {
      this.stats.underflowQuanta++;
      this.stats.underflowSamples += missing;
      this.totals.underflowQuanta++;
      this.totals.underflowSamples += missing;
    }
    this.quantaSinceFrame++;

    if (this.capture && this.latency !== null) this.captureMic(mono, n, advance);
    if (this.record) this.recordPlayed(out, Math.min(n, advance));
    this.playPos += advance;
  }

  /** Backing track and click for position p, at this listener's levels. */
  material(p) {
    const song = songAt(p, this.song, this.earlier);
    if (song === null) return 0;
    const track = song.samples;
    let x = 0;
    if (track && this.trackGain > 0) {
      const i = p - song.origin;
      if (i >= 0 && i < track.length) x += track[i] * this.trackGain;
    }
    if (this.clickGain > 0 && song.metronome && song.metronome.on) x += clickSampleAt(p, song, this.waves) * this.clickGain;
    return x;
  }

  /** Post the played samples with their positions, in blocks of contiguous positions. */
  recordPlayed(out, count) {
    if (this.played === null) this.played = new Float32Array(4096);
    if (this.playedFill > 0 && this.playedPos + this.playedFill !== this.playPos) this.flushPlayed();
    if (this.playedFill === 0) this.playedPos = this.playPos;
    for (let j = 0; j < count; j++) {
      this.played[this.playedFill++] = out[j];
      if (this.playedFill === this.played.length) this.flushPlayed();
    }
  }

  flushPlayed() {
    if (this.playedFill === 0) return;
    const samples = this.played.slice(0, this.playedFill);
    this.port.postMessage({ type: "played", pos: this.playedPos, samples }, [samples.buffer]);
    this.playedPos += this.playedFill;
    this.playedFill = 0;
  }

  captureMic(mono, n, advance) {
    if (this.micBlock === null) this.micBlock = new Float32Array(this.blockSamples);
    const micPos = this.playPos - this.latency;
    if (this.micFill === 0) this.micStart = micPos;
    else if (this.micStart + this.micFill !== micPos) {
      this.micFill = 0; // positions moved (latency change): start a new block
      this.micStart = micPos;
    }
    for (let k = 0; k < advance; k++) {
      const x = mono[Math.min(k, n - 1)] * this.gain;
      this.stats.micSq += x * x;
      this.stats.micN++;
      this.micBlock[this.micFill++] = x;
      if (this.micFill === this.blockSamples) {
        this.port.postMessage({ type: "mic", pos: this.micStart, samples: this.micBlock }, [this.micBlock.buffer]);
        this.micBlock = new Float32Array(this.blockSamples);
        this.micStart += this.blockSamples;
        this.micFill = 0;
      }
    }
  }

  postStats() {
    const s = this.stats;
    const db = (sq, count) => (count > 0 && sq > 0 ? 10 * Math.log10(sq / count) : -Infinity);
    this.port.postMessage({
      type: "stats",
      frame: currentFrame,
      playPos: this.playPos,
      quanta: s.quanta,
      underflowQuanta: s.underflowQuanta,
      underflowSamples: s.underflowSamples,
      starved: this.quantaSinceFrame >= STARVED_AFTER_QUANTA,
      bufferedMs: (this.bufferedAhead(2 * sampleRate) * 1000) / sampleRate,
      micDb: db(s.micSq, s.micN),
      outDb: db(s.outSq, s.quanta * 128),
      totals: { ...this.totals },
    });
    this.resetStats();
  }
}

registerProcessor("brigade", BrigadeProcessor);
