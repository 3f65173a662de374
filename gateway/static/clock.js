// NTP-style estimate of the offset between this page's clock and the room
// clock (docs/protocol.md, "Clock sync"). Pure: no timers, no sockets; the
// connection feeds it ping/pong samples and asks for the offset at a time.
//
// Local time is `performance.timeOrigin + performance.now()` in ms (monotonic,
// epoch-based). The room clock counts samples at `sampleRate` since the epoch.

/** Offset (server − local, ms) of one ping/pong exchange, with its round trip. */
export function pingSample(tSendMs, tRecvMs, serverClock, sampleRate) {
  if (!(tRecvMs >= tSendMs)) throw new RangeError(`pong received before ping: ${tSendMs} > ${tRecvMs}`);
  const serverMs = (serverClock * 1000) / sampleRate;
  const midMs = (tSendMs + tRecvMs) / 2;
  return { tMs: midMs, rttMs: tRecvMs - tSendMs, offsetMs: serverMs - midMs };
}

/**
 * Average of the samples with the lowest round trips (the lowest `keepFraction`,
 * at least one): those are the ones whose request and reply took equally
 * long, so their midpoint error is smallest. Returns null for no samples.
 */
export function bestOffset(samples, keepFraction = 0.25) {
  if (samples.length === 0) return null;
  const sorted = [...samples].sort((a, b) => a.rttMs - b.rttMs);
  const keep = sorted.slice(0, Math.max(1, Math.floor(sorted.length * keepFraction)));
  const mean = (key) => keep.reduce((sum, s) => sum + s[key], 0) / keep.length;
  return { tMs: mean("tMs"), offsetMs: mean("offsetMs"), rttMs: mean("rttMs"), used: keep.length };
}

/** Least-squares slope of offsetMs over tMs (ms per ms), or 0 with fewer than two points. */
export function driftSlope(points) {
  if (points.length < 2) return 0;
  const n = points.length;
  const tBar = points.reduce((s, p) => s + p.tMs, 0) / n;
  const oBar = points.reduce((s, p) => s + p.offsetMs, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.tMs - tBar) * (p.offsetMs - oBar);
    den += (p.tMs - tBar) ** 2;
  }
  return den > 0 ? num / den : 0;
}

/**
 * Keeps the last `window` ping samples; the offset is the mean of their
 * lowest-RTT quarter. To follow drift between the two clocks, each estimate
 * is also kept for `driftHorizonMs`, and once they span `minDriftSpanMs` the
 * slope through them extrapolates the (lagging) windowed mean to "now".
 */
export class ClockEstimator {
  constructor({
    sampleRate,
    window = 20,
    keepFraction = 0.25,
    driftHorizonMs = 300_000,
    minDriftSpanMs = 30_000,
    maxDriftPpm = 1000,
  }) {
    if (!(sampleRate > 0)) throw new RangeError(`sampleRate must be positive, got ${sampleRate}`);
    this.sampleRate = sampleRate;
    this.window = window;
    this.keepFraction = keepFraction;
    this.driftHorizonMs = driftHorizonMs;
    this.minDriftSpanMs = minDriftSpanMs;
    this.maxDriftPpm = maxDriftPpm;
    this.samples = [];
    this.history = [];
    this.current = null;
    this.slope = 0;
  }

  /** Add one exchange; returns the new estimate. */
  add(tSendMs, tRecvMs, serverClock) {
    this.samples.push(pingSample(tSendMs, tRecvMs, serverClock, this.sampleRate));
    if (this.samples.length > this.window) this.samples.shift();
    this.current = bestOffset(this.samples, this.keepFraction);
    this.history.push({ tMs: this.current.tMs, offsetMs: this.current.offsetMs });
    const horizon = tRecvMs - this.driftHorizonMs;
    while (this.history.length && this.history[0].tMs < horizon) this.history.shift();
    const span = this.history.length ? this.history[this.history.length - 1].tMs - this.history[0].tMs : 0;
    const limit = this.maxDriftPpm * 1e-6;
    this.slope = span >= this.minDriftSpanMs ? Math.max(-limit, Math.min(limit, driftSlope(this.history))) : 0;
    return this.summary(tRecvMs);
  }

  get ready() {
    return this.current !== null;
  }

  /** server − local, in ms, at local time `nowMs`. */
  offsetMs(nowMs) {
    if (!this.current) throw new Error("no clock samples yet");
    return this.current.offsetMs + this.slope * (nowMs - this.current.tMs);
  }

  /** The room clock (samples, fractional) at local time `localMs`. */
  roomClock(localMs) {
    return ((localMs + this.offsetMs(localMs)) * this.sampleRate) / 1000;
  }

  summary(nowMs) {
    if (!this.current) return null;
    return {
      offsetMs: this.offsetMs(nowMs),
      rttMs: this.current.rttMs,
      driftPpm: this.slope * 1e6,
      samples: this.samples.length,
    };
  }
}
