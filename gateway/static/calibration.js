// Latency and volume calibration.
//
// Latency: play 1024 Hz clicks at 105 bpm through the speaker, record the
// microphone over the same audio frames, find each click's onset in the
// recording and take onset − emission as that click's round-trip latency.
// The measurement is accepted only when the spread between the 25th and 75th
// percentile of the per-click latencies is at most 2 ms: an unsteady
// measurement would put the singer's voice in the wrong place, which is
// worse than no measurement.
//
// The analysis functions are pure (arrays in, numbers out) so they can be
// tested on synthetic recordings; the runners at the end drive the audio
// engine (audio.js).

export const CLICK_HZ = 1024;
export const CLICK_BPM = 105;
export const CLICK_MS = 10;
export const CLICK_COUNT = 12;
export const MAX_SPREAD_MS = 2;
export const MAX_LATENCY_MS = 450;
export const MIN_CLICKS_HEARD = 8;
export const TARGET_LEVEL_DB = -20;

/** The q-quantile (0..1) of an ascending array, linearly interpolated. */
export function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo);
}

/**
 * The calibration signal: `count` clicks (1024 Hz bursts of `clickMs`, with
 * 1 ms raised-cosine edges) at `bpm`, after `leadInMs` of silence, followed by
 * room for the last click's echo. Returns the signal and the sample index at
 * which each click starts.
 */
export function renderClicks({
  sampleRate,
  count = CLICK_COUNT,
  bpm = CLICK_BPM,
  clickHz = CLICK_HZ,
  clickMs = CLICK_MS,
  leadInMs = 300,
  amplitude = 0.5,
  maxLatencyMs = MAX_LATENCY_MS,
}) {
  const interval = (60 / bpm) * sampleRate;
  const lead = Math.round((leadInMs / 1000) * sampleRate);
  const clickLen = Math.round((clickMs / 1000) * sampleRate);
  const ramp = Math.round(sampleRate / 1000);
  const emissions = Array.from({ length: count }, (_, k) => lead + Math.round(k * interval));
  const tail = Math.round(((maxLatencyMs + 2 * clickMs) / 1000) * sampleRate);
  const signal = new Float32Array(emissions[count - 1] + tail);
  for (const start of emissions) {
    for (let i = 0; i < clickLen; i++) {
      const edge = Math.min(i, clickLen - 1 - i);
      const env = edge < ramp ? 0.5 - 0.5 * Math.cos((Math.PI * edge) / ramp) : 1;
      signal[start + i] = amplitude * env * Math.sin((2 * Math.PI * clickHz * i) / sampleRate);
    }
  }
  return { signal, emissions, clickSamples: clickLen };
}

/**
 * Magnitude of the recording's correlation with a `length`-sample tone at
 * `hz`, for every window start in [from, to): the signal is shifted to base
 * band and summed with running sums, so the cost is linear in the window.
 */
export function toneEnvelope(recording, from, to, length, hz, sampleRate) {
  const n = to - from + length;
  const re = new Float64Array(n + 1);
  const im = new Float64Array(n + 1);
  const w = (2 * Math.PI * hz) / sampleRate;
  for (let i = 0; i < n; i++) {
    const k = from + i;
    const x = k >= 0 && k < recording.length ? recording[k] : 0;
    re[i + 1] = re[i] + x * Math.cos(w * k);
    im[i + 1] = im[i] - x * Math.sin(w * k);
  }
  const env = new Float64Array(to - from);
  for (let i = 0; i < env.length; i++) {
    env[i] = Math.hypot(re[i + length] - re[i], im[i + length] - im[i]);
  }
  return env;
}

function median(values) {
  return quantile(Float64Array.from(values).sort(), 0.5);
}

/**
 * Finds one click after `emission`: the first point where the tone envelope
 * rises through half its peak, plus half a click length (the envelope of a
 * matched burst is a triangle whose half-height on the rising edge is half a
 * click before full overlap). The rising edge is used rather than the peak
 * so that room echo, which lengthens the tail, does not bias the onset.
 * Returns the onset in (fractional) samples, or null when the click is not
 * clearly above the background.
 */
export function findClick(recording, emission, { sampleRate, clickHz, clickSamples, maxLatencyMs }) {
  // Start one click early so that even a zero latency has its rising edge in the window.
  const from = Math.max(0, emission - clickSamples);
  const to = Math.min(recording.length - clickSamples, emission + Math.round((maxLatencyMs / 1000) * sampleRate));
  if (to <= from) return null;
  const env = toneEnvelope(recording, from, to, clickSamples, clickHz, sampleRate);
  let peak = 0;
  for (let i = 1; i < env.length; i++) if (env[i] > env[peak]) peak = i;
  const amplitude = (2 * env[peak]) / clickSamples;
  const floor = median(env);
  if (amplitude < 1e-3 || env[peak] < 6 * floor) return null;
  const half = env[peak] / 2;
  let i = peak;
  while (i > 0 && env[i - 1] >= half) i--;
  const before = i > 0 ? env[i - 1] : 0;
  const frac = env[i] > before ? (env[i] - half) / (env[i] - before) : 0;
  return from + i - frac + clickSamples / 2;
}

/**
 * Latency from a recording of the clicks rendered by `renderClicks`.
 * `emissions` are the sample indices (in the recording's own frame count) at
 * which each click left the page. Returns
 * `{accepted, latencyMs, spreadMs, reason, latenciesMs, heard}`.
 */
export function analyzeClicks(
  recording,
  emissions,
  {
    sampleRate,
    clickHz = CLICK_HZ,
    clickSamples = Math.round((CLICK_MS / 1000) * sampleRate),
    maxLatencyMs = MAX_LATENCY_MS,
    maxSpreadMs = MAX_SPREAD_MS,
    minHeard = Math.min(MIN_CLICKS_HEARD, emissions.length),
  },
) {
  const latenciesMs = [];
  for (const emission of emissions) {
    const onset = findClick(recording, emission, { sampleRate, clickHz, clickSamples, maxLatencyMs });
    if (onset !== null) latenciesMs.push(((onset - emission) * 1000) / sampleRate);
  }
  const heard = latenciesMs.length;
  const result = { accepted: false, latencyMs: null, spreadMs: null, reason: "", latenciesMs, heard };
  if (heard < minHeard) {
    result.reason =
      `heard ${heard} of ${emissions.length} clicks: turn the speaker up, or hold the ` +
      "headphones against the microphone";
    return result;
  }
  const sorted = Float64Array.from(latenciesMs).sort();
  result.latencyMs = quantile(sorted, 0.5);
  result.spreadMs = quantile(sorted, 0.75) - quantile(sorted, 0.25);
  if (result.spreadMs > maxSpreadMs) {
    result.reason =
      `the clicks came back unevenly (spread ${result.spreadMs.toFixed(1)} ms, at most ` +
      `${maxSpreadMs} ms allowed): close other programs, keep still and quiet, and try again`;
    return result;
  }
  result.accepted = true;
  result.reason = `latency ${result.latencyMs.toFixed(1)} ms (spread ${result.spreadMs.toFixed(2)} ms)`;
  return result;
}

/** RMS level in dBFS of 20 ms blocks; the loudest half is taken as the singing level. */
export function analyzeVolume(recording, { sampleRate, targetDb = TARGET_LEVEL_DB, minDb = -55, maxGain = 16 }) {
  const block = Math.round(sampleRate / 50);
  const levels = [];
  for (let start = 0; start + block <= recording.length; start += block) {
    let sum = 0;
    for (let i = start; i < start + block; i++) sum += recording[i] * recording[i];
    levels.push(Math.sqrt(sum / block));
  }
  levels.sort((a, b) => b - a);
  const loud = levels.slice(0, Math.max(1, Math.floor(levels.length / 2)));
  const rms = Math.sqrt(loud.reduce((s, v) => s + v * v, 0) / loud.length);
  const levelDb = rms > 0 ? 20 * Math.log10(rms) : -Infinity;
  if (!(levelDb >= minDb)) {
    return { accepted: false, levelDb, gain: 1, reason: "almost nothing was heard: is the microphone on and unmuted?" };
  }
  const gain = Math.min(maxGain, Math.max(1 / maxGain, 10 ** ((targetDb - levelDb) / 20)));
  const reason = `level ${levelDb.toFixed(1)} dBFS, gain ×${gain.toFixed(2)} to reach ${targetDb} dBFS`;
  return { accepted: true, levelDb, gain, reason };
}

/** Play the clicks and analyse the recording (`engine` is an AudioEngine). */
export async function runLatencyCalibration(engine, options = {}) {
  const sampleRate = engine.sampleRate;
  const { signal, emissions, clickSamples } = renderClicks({ sampleRate, ...options });
  const recording = await engine.playRecord(signal);
  return analyzeClicks(recording, emissions, { sampleRate, clickSamples });
}

/** Record `seconds` of singing (raw, before any gain) and compute the gain to the target level. */
export async function runVolumeCalibration(engine, seconds = 4) {
  const recording = await engine.playRecord(new Float32Array(Math.round(seconds * engine.sampleRate)));
  return analyzeVolume(recording, { sampleRate: engine.sampleRate });
}
