// Which of the page's clocks says when a sample reaches the speaker.
//
// The page maps room positions to context frames through one of three
// sources, each read on the main thread at `atMs` (performance.now(), the
// clock the room clock is estimated against):
//   outputTimestamp  getOutputTimestamp(): context time `contextTime` is heard
//                    at performance time `performanceTime`
//   currentTime      the context's currentTime, heard after baseLatency +
//                    outputLatency
//   frames           the worklet's frame counter (its last stats message),
//                    heard after the same latency
// Engines get these wrong in their own ways (WebKitGTK 2.50: the output
// timestamp's performanceTime runs at twice real time, so the page played and
// stamped its audio ever further ahead of the room). So every source is
// checked against performance.now() over a few seconds, and the page uses the
// first of them that keeps time: the output timestamp only once it has shown
// that it does, the others unless they have shown that they do not. Judged on
// the last few seconds, so that an audio stream starting slowly is not held
// against it; a source found wrong `strikes` judgements running stays out.
// Pure: the readings are passed in.

export const SOURCE_ORDER = ["outputTimestamp", "currentTime", "frames"];

export const SOURCE_NAMES = {
  outputTimestamp: "output timestamp",
  currentTime: "audio clock (currentTime)",
  frames: "worklet frame counter",
};

/** Least-squares slope of `y` over `x` in `points` ({x, y}); null when x does not vary. */
export function slope(points) {
  const n = points.length;
  if (n < 2) return null;
  const xBar = points.reduce((s, p) => s + p.x, 0) / n;
  const yBar = points.reduce((s, p) => s + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - xBar) * (p.y - yBar);
    den += (p.x - xBar) ** 2;
  }
  return den > 0 ? num / den : null;
}

/**
 * One raw sample of the page's clocks → per source, the mapping it gives:
 * `{contextTime, localMs}` (context time `contextTime` is heard at
 * performance time `localMs`), with `atMs` and the implied latency (ms from
 * now until the sample being rendered now is heard). A source without a
 * reading in this sample is left out.
 *
 * `sample`: {atMs, currentTime, latencyS, output: {contextTime, performanceTime} | null,
 *            frame: {frame, atMs} | null}
 */
export function readings(sample, sampleRate) {
  const out = {};
  const { atMs, currentTime, latencyS } = sample;
  const o = sample.output;
  if (o && o.performanceTime > 0) {
    out.outputTimestamp = {
      atMs,
      contextTime: o.contextTime,
      localMs: o.performanceTime,
      latencyMs: o.performanceTime + (currentTime - o.contextTime) * 1000 - atMs,
    };
  }
  out.currentTime = { atMs, contextTime: currentTime, localMs: atMs + latencyS * 1000, latencyMs: latencyS * 1000 };
  if (sample.frame) {
    out.frames = {
      atMs: sample.frame.atMs,
      contextTime: sample.frame.frame / sampleRate,
      localMs: sample.frame.atMs + latencyS * 1000,
      latencyMs: latencyS * 1000,
    };
  }
  return out;
}

/** Rate of `key` (seconds or ms, per `scale`) against performance.now() over `list`, or null. */
function rateOf(list, key, scale) {
  return slope(list.map((r) => ({ x: r.atMs, y: r[key] * scale })));
}

/** Whether `list` spans enough readings and time to judge. */
function enough(list, { minSpanMs = 2000, minReadings = 5 }) {
  return list.length >= minReadings && list[list.length - 1].atMs - list[0].atMs >= minSpanMs;
}

/**
 * The sources judged against each other, from their readings (`lists`:
 * source → readings). The worklet's frame counter is what is actually
 * rendered, but read through messages that arrive late under load, so
 * currentTime need only advance as it does within `frameTolerance` (it is
 * caught when it stands still or runs at twice the speed). The output
 * timestamp's context time must advance as currentTime does, its heard-at
 * times (performance.now() times) at real time, both within `rateTolerance`,
 * and the latency it implies must lie in [−50 ms, `maxLatencyMs`]. Returns, per
 * source, `{ok: true|false|null, problem}` (null: not enough readings yet),
 * and `audioRate`: how fast the audio clock runs against real time (a
 * struggling sound card or computer, not a source to avoid).
 */
export function judgeSources(lists, { rateTolerance = 0.05, frameTolerance = 0.25, maxLatencyMs = 1000, ...spans } = {}) {
  const off = (rate, reference, tolerance = rateTolerance) => rate === null || Math.abs(rate - reference) > tolerance * reference;
  const frames = lists.frames || [];
  const current = lists.currentTime || [];
  const output = lists.outputTimestamp || [];
  const framesRate = enough(frames, spans) ? rateOf(frames, "contextTime", 1000) : null;
  const currentRate = enough(current, spans) ? rateOf(current, "contextTime", 1000) : null;
  const result = { audioRate: currentRate ?? framesRate };
  result.frames = framesRate === null ? { ok: null, problem: null } : { ok: framesRate > 0, problem: framesRate > 0 ? null : "it stood still" };
  if (currentRate === null) result.currentTime = { ok: null, problem: null };
  else if (off(currentRate, framesRate ?? 1, frameTolerance)) {
    result.currentTime = { ok: false, problem: `it ran at ${fmtRate(currentRate / (framesRate ?? 1))} the rendered audio` };
  } else result.currentTime = { ok: true, problem: null };
  if (!enough(output, spans)) result.outputTimestamp = { ok: null, problem: null };
  else {
    const heardRate = rateOf(output, "localMs", 1);
    const contextRate = rateOf(output, "contextTime", 1000);
    const latency = output[output.length - 1].latencyMs;
    let problem = null;
    if (off(heardRate, 1)) problem = `its time stamps ran at ${fmtRate(heardRate)} real time`;
    else if (off(contextRate, currentRate ?? framesRate ?? 1)) problem = `its audio time ran at ${fmtRate(contextRate / (currentRate ?? framesRate ?? 1))} currentTime`;
    else if (!(latency >= -50 && latency <= maxLatencyMs)) problem = `it put the speaker ${(latency / 1000).toFixed(2)} s from now`;
    result.outputTimestamp = { ok: problem === null, problem };
  }
  return result;
}

function fmtRate(rate) {
  return rate === null ? "no" : `${rate.toFixed(2)}×`;
}

/**
 * Keeps the last `window` samples and the sources found wrong; `add(sample)`
 * returns the verdict `{source, problems}` (problems: source → text).
 */
export class TimingCheck {
  constructor({ sampleRate, window = 16, strikes = 4, ...options }) {
    this.sampleRate = sampleRate;
    this.window = window;
    this.strikes = strikes;
    this.options = options;
    this.history = [];
    this.bad = {};
    this.condemned = {};
    this.verdict = { source: "currentTime", problems: {}, audioRate: null };
  }

  /** Forget the readings (the context stopped: its time stood still meanwhile). */
  reset() {
    this.history = [];
  }

  add(sample) {
    this.history.push(readings(sample, this.sampleRate));
    if (this.history.length > this.window) this.history.shift();
    const lists = {};
    for (const source of SOURCE_ORDER) {
      const list = this.history.map((r) => r[source]).filter((r) => r !== undefined);
      // Duplicates (the same worklet stats read twice) add nothing.
      lists[source] = list.filter((r, i) => i === 0 || r.atMs !== list[i - 1].atMs);
    }
    const judged = judgeSources(lists, this.options);
    for (const source of SOURCE_ORDER) {
      if (this.condemned[source]) continue;
      this.bad[source] = judged[source].ok === false ? (this.bad[source] || 0) + 1 : 0;
      if (this.bad[source] >= this.strikes) this.condemned[source] = judged[source].problem;
    }
    const usable = (source) => !this.condemned[source] && !this.bad[source] && (source !== "outputTimestamp" || judged[source].ok === true);
    const source = SOURCE_ORDER.find(usable) ?? "currentTime";
    this.verdict = { source, problems: { ...this.condemned }, audioRate: judged.audioRate };
    return this.verdict;
  }

  /** One line for the Details panel: the source in use and why the others are not. */
  describe() {
    const { source, problems, audioRate } = this.verdict;
    const why = Object.entries(problems).map(([s, text]) => `${SOURCE_NAMES[s]}: ${text}`);
    let line = why.length ? `${SOURCE_NAMES[source]} (not the ${why.join("; ")})` : SOURCE_NAMES[source];
    if (audioRate !== null && Math.abs(audioRate - 1) > 0.02) line += `; the audio runs at ${fmtRate(audioRate)} real time (the computer or its sound is struggling)`;
    return line;
  }
}
