// The debug hook, `window.bbDebug`: read-only views of the page's clock,
// playback health and room state, and (once `record(seconds)` is called)
// bounded recordings of the audio this page sent and received, keyed by
// room position. Tools and the end-to-end tests read it; the page itself
// never depends on it.

/** Keeps the last `seconds` of position-stamped sample blocks. */
export class SampleRecorder {
  constructor(sampleRate) {
    this.sampleRate = sampleRate;
    this.capacity = 0;
    this.blocks = new Map();
    this.total = 0;
  }

  start(seconds) {
    this.capacity = Math.round(seconds * this.sampleRate);
    this.blocks.clear();
    this.total = 0;
  }

  add(pos, samples) {
    if (!this.capacity) return;
    const previous = this.blocks.get(pos);
    if (previous) this.total -= previous.length;
    this.blocks.set(pos, Float32Array.from(samples));
    this.total += samples.length;
    for (const [key, block] of this.blocks) {
      if (this.total <= this.capacity) break;
      this.blocks.delete(key); // Map iterates in insertion order: oldest first
      this.total -= block.length;
    }
  }

  /** First and last-plus-one positions recorded, or nulls. */
  span() {
    let start = null;
    let end = null;
    for (const [pos, block] of this.blocks) {
      if (start === null || pos < start) start = pos;
      if (end === null || pos + block.length > end) end = pos + block.length;
    }
    return { start, end };
  }

  /**
   * The recording as one contiguous span: `{start, length, covered, data}`,
   * `data` being little-endian float32 in base64, gaps filled with zeros;
   * `covered` counts the samples actually recorded.
   */
  dump() {
    if (!this.blocks.size) return { start: null, length: 0, covered: 0, data: "" };
    let lo = Infinity;
    let hi = -Infinity;
    for (const [pos, block] of this.blocks) {
      lo = Math.min(lo, pos);
      hi = Math.max(hi, pos + block.length);
    }
    const out = new Float32Array(hi - lo);
    const mask = new Uint8Array(hi - lo);
    for (const [pos, block] of this.blocks) {
      out.set(block, pos - lo);
      mask.fill(1, pos - lo, pos - lo + block.length);
    }
    const covered = mask.reduce((n, v) => n + v, 0);
    const bytes = new Uint8Array(out.buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { start: lo, length: out.length, covered, data: btoa(text) };
  }
}

/** Install `window.bbDebug` over the app's live objects (`app` is read lazily). */
export function installDebugHook(app) {
  const sent = new SampleRecorder(app.constants.sample_rate);
  const received = new SampleRecorder(app.constants.sample_rate);
  const played = new SampleRecorder(app.constants.sample_rate);
  const hook = {
    sent,
    received,
    /** What this page actually played (mix, backing track and clicks), by position. */
    played,
    offsets: [],
    /** Each change of the highlighted lyric line: `{line, pos}` (this page's playback position). */
    lyrics: [],
    /** Start recording sent, received and played audio (the last `seconds` of each). */
    record(seconds = 30) {
      sent.start(seconds);
      received.start(seconds);
      played.start(seconds);
      this.recording = true;
      if (app.engine) app.engine.configure({ record: true });
    },
    recording: false,
    get clock() {
      return app.clock ? app.clock.summary(performance.timeOrigin + performance.now()) : null;
    },
    get roomClock() {
      return app.engine ? app.engine.roomClockNow() : null;
    },
    get playback() {
      return app.engine ? app.engine.lastStats : null;
    },
    get underflows() {
      const stats = app.engine ? app.engine.lastStats : null;
      return stats ? stats.totals.underflowQuanta : 0;
    },
    get state() {
      return app.room;
    },
    get me() {
      return app.me();
    },
    get audioState() {
      return app.engine ? app.engine.ctx.state : null;
    },
    get codec() {
      return app.codec;
    },
    /** The timing check's verdict: the clock in use and the ones found wrong (timing.js). */
    get timing() {
      return app.engine ? app.engine.timing.verdict : null;
    },
    get latencyMs() {
      return app.calibration.latencyMs;
    },
    get levels() {
      return { ...app.levels };
    },
    /**
     * How far playback is from where the clock mapping says it should be:
     * (position being rendered now) − (room clock now − delay), in ms. About
     * the output latency when all is well (rendering runs ahead of the speaker).
     */
    get playbackOffsetMs() {
      const stats = app.engine ? app.engine.lastStats : null;
      const me = app.me();
      const room = app.engine ? app.engine.roomClockNow() : null;
      if (!stats || stats.playPos === null || !me || room === null) return null;
      const frameNow = app.engine.ctx.currentTime * app.sampleRate;
      const playing = stats.playPos + (frameNow - stats.frame);
      return ((playing - (room - me.delay)) * 1000) / app.sampleRate;
    },
    get counters() {
      return { ...app.counters };
    },
  };
  window.bbDebug = hook;
  return hook;
}
