// The page's audio engine: one 48 kHz AudioContext, the microphone (browser
// echo cancellation, auto gain and noise suppression off) and the worklet
// (worklet.js) that holds the playback buffer and stamps the mic samples.
//
// The clock mapping lives here: the worklet counts context frames; this
// module tells it, a couple of times a second, which room position the frame
// now leaving the speaker should play (room clock at that moment − delay).
// Which clock says when a frame leaves the speaker is decided by timing.js,
// from readings taken every TIMING_MS while the context runs.

import { TimingCheck } from "./timing.js";

const ANCHOR_MS = 500;
const TIMING_MS = 250;

export class AudioEngine {
  /** Create the context and worklet; `wantMic` asks for the microphone too. */
  static async create({ sampleRate, frameSamples, wantMic, ringSeconds = 8, statsMs = 250 }) {
    const ctx = new AudioContext({ sampleRate, latencyHint: "interactive" });
    if (ctx.sampleRate !== sampleRate) {
      await ctx.close();
      throw new Error(`this browser runs audio at ${ctx.sampleRate} Hz, not ${sampleRate} Hz`);
    }
    await ctx.audioWorklet.addModule(new URL("./worklet.js", import.meta.url));
    const node = new AudioWorkletNode(ctx, "brigade", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { ringSamples: ringSeconds * sampleRate, blockSamples: frameSamples, statsMs },
    });
    node.connect(ctx.destination);
    const engine = new AudioEngine(ctx, node, frameSamples);
    if (wantMic) await engine.startMic();
    // Not awaited: without a click the browser may hold sound back until one
    // (a reload that rejoins); the page offers a button for that case.
    if (ctx.state !== "running") ctx.resume().catch(() => {});
    return engine;
  }

  constructor(ctx, node, frameSamples) {
    this.ctx = ctx;
    this.node = node;
    this.frameSamples = frameSamples;
    this.sampleRate = ctx.sampleRate;
    this.mic = null;
    this.micSource = null;
    this.clock = null;
    this.delay = null;
    this.anchorTimer = null;
    this.jobs = new Map();
    this.nextJob = 1;
    this.onMic = () => {};
    this.onStats = () => {};
    this.onPlayed = () => {};
    this.lastStats = null;
    this.lastFrame = null;
    this.timing = new TimingCheck({ sampleRate: this.sampleRate });
    this.timingTimer = setInterval(() => this.sampleTiming(), TIMING_MS);
    node.port.onmessage = (event) => this.onMessage(event.data);
  }

  get hasMic() {
    return this.mic !== null;
  }

  async startMic() {
    if (this.mic) return;
    this.mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, autoGainControl: false, noiseSuppression: false },
      video: false,
    });
    this.micSource = this.ctx.createMediaStreamSource(this.mic);
    this.micSource.connect(this.node);
  }

  onMessage(msg) {
    if (msg.type === "mic") this.onMic(msg.pos, msg.samples);
    else if (msg.type === "played") this.onPlayed(msg.pos, msg.samples);
    else if (msg.type === "stats") {
      this.lastStats = msg;
      this.lastFrame = { frame: msg.frame, atMs: performance.now() };
      this.onStats(msg);
    } else if (msg.type === "recorded") {
      const resolve = this.jobs.get(msg.id);
      this.jobs.delete(msg.id);
      if (resolve) resolve(msg.recording);
    }
  }

  /** Play `signal` (instead of the mix) and resolve with the raw mic over the same frames. */
  playRecord(signal) {
    const id = this.nextJob++;
    return new Promise((resolve) => {
      this.jobs.set(id, resolve);
      this.node.port.postMessage({ type: "playRecord", id, signal }, [signal.buffer]);
    });
  }

  configure(fields) {
    this.node.port.postMessage({ type: "config", ...fields });
  }

  /**
   * The song window, origin, metronome and track id the worklet adds the material
   * for, and the still audible songs before's (`song.earlier`, newest first; `previous`
   * the first, null: none); backing.js songMaterial.
   */
  setSong(song) {
    const { start, end, origin, metronome, trackId, previous, earlier } = song;
    this.node.port.postMessage({ type: "song", start, end, origin, metronome, trackId, previous, earlier });
  }

  /** Track `id`'s samples (48 kHz mono; null: forget them). Kept while a song names it. */
  setTrack(id, samples) {
    if (samples) this.node.port.postMessage({ type: "track", id, samples }, [samples.buffer]);
    else this.node.port.postMessage({ type: "track", id, samples: null });
  }

  /** Write decoded samples at their room position. */
  pushFrame(pos, samples) {
    this.node.port.postMessage({ type: "frame", pos, samples }, [samples.buffer]);
  }

  /** Follow `clock` (a ClockEstimator) at `delay` samples behind the room. */
  follow(clock, delay) {
    const changed = delay !== this.delay;
    this.clock = clock;
    this.delay = delay;
    if (changed) this.node.port.postMessage({ type: "reset" });
    this.sendAnchor();
    if (this.anchorTimer === null) this.anchorTimer = setInterval(() => this.sendAnchor(), ANCHOR_MS);
  }

  latencyS() {
    return (this.ctx.baseLatency || 0) + (this.ctx.outputLatency || 0);
  }

  /** One reading of every clock, for the timing check (while the context runs). */
  sampleTiming() {
    if (this.ctx.state !== "running") {
      this.timing.reset();
      this.lastFrame = null;
      return;
    }
    const ts = this.ctx.getOutputTimestamp ? this.ctx.getOutputTimestamp() : null;
    this.timing.add({
      atMs: performance.now(),
      currentTime: this.ctx.currentTime,
      latencyS: this.latencyS(),
      output: ts ? { contextTime: ts.contextTime, performanceTime: ts.performanceTime } : null,
      frame: this.lastFrame,
    });
  }

  /** Local time (ms, epoch-based) at which context time `contextTime` reaches the speaker. */
  outputTimeMs() {
    const source = this.timing.verdict.source;
    const now = performance.now();
    if (source === "outputTimestamp") {
      const ts = this.ctx.getOutputTimestamp();
      return { contextTime: ts.contextTime, localMs: performance.timeOrigin + ts.performanceTime };
    }
    const localMs = performance.timeOrigin + now + this.latencyS() * 1000;
    if (source === "frames" && this.lastFrame) {
      return { contextTime: this.lastFrame.frame / this.sampleRate + (now - this.lastFrame.atMs) / 1000, localMs };
    }
    return { contextTime: this.ctx.currentTime, localMs };
  }

  sendAnchor() {
    if (!this.clock || !this.clock.ready || this.delay === null) return;
    const { contextTime, localMs } = this.outputTimeMs();
    const frame = Math.round(contextTime * this.sampleRate);
    const pos = Math.round(this.clock.roomClock(localMs)) - this.delay;
    this.node.port.postMessage({ type: "anchor", frame, pos });
  }

  /** The room clock now, by this page's estimate (samples), or null before the first pong. */
  roomClockNow() {
    if (!this.clock || !this.clock.ready) return null;
    return this.clock.roomClock(performance.timeOrigin + performance.now());
  }

  stopFollowing() {
    if (this.anchorTimer !== null) clearInterval(this.anchorTimer);
    this.anchorTimer = null;
    this.clock = null;
    this.delay = null;
  }

  async close() {
    this.stopFollowing();
    clearInterval(this.timingTimer);
    if (this.mic) for (const track of this.mic.getTracks()) track.stop();
    await this.ctx.close();
  }
}
