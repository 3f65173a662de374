// The calibration card: measure or enter the latency, measure the volume,
// and say truthfully where each stands. The measurements themselves are in
// calibration.js; the microphone comes from the page (`ensureEngine`).

import { runLatencyCalibration, runVolumeCalibration } from "./calibration.js";

const CALIBRATION_KEY = "bb.calibration";
const EMPTY = { latencyMs: null, spreadMs: null, method: null, gain: 1, levelDb: null };

const $ = (id) => document.getElementById(id);

/** A refused or missing microphone (getUserMedia's errors), as opposed to any other failure. */
export function isMicBlocked(err) {
  return Boolean(err) && ["NotAllowedError", "SecurityError", "NotFoundError", "NotReadableError", "OverconstrainedError"].includes(err.name);
}

export class CalibrationView {
  /**
   * `ensureEngine(wantMic)` resolves with the AudioEngine; `onChange(calibration)`
   * after every accepted result; `onGiveUp()` when the singer chooses to listen;
   * `onMicBlocked(err)` when the browser refuses the microphone; `onError(err)`.
   */
  constructor({ ensureEngine, onChange, onGiveUp, onMicBlocked, onError }) {
    this.ensureEngine = ensureEngine;
    this.onChange = onChange;
    this.onGiveUp = onGiveUp;
    this.onMicBlocked = onMicBlocked;
    this.onError = onError;
    this.calibration = { ...EMPTY, ...this.load() };
    this.lastFailure = null; // {step, text} of the last failed measurement, shown until the next try
  }

  load() {
    try {
      return JSON.parse(sessionStorage.getItem(CALIBRATION_KEY)) ?? {};
    } catch {
      return {};
    }
  }

  save() {
    try {
      sessionStorage.setItem(CALIBRATION_KEY, JSON.stringify(this.calibration));
    } catch {
      // Not remembered, still used.
    }
    this.onChange(this.calibration);
  }

  get latencyMs() {
    return this.calibration.latencyMs;
  }

  bind() {
    $("cal-latency").addEventListener("click", () => this.measureLatency());
    $("cal-volume").addEventListener("click", () => this.measureVolume());
    $("cal-giveup").addEventListener("click", () => this.onGiveUp());
    $("manual-latency").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = $("latency-ms");
      const value = Number(input.value);
      if (input.value === "" || !(value >= 0 && value <= 1000)) {
        this.fail("latency", "Enter your latency in milliseconds, between 0 and 1000.");
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      input.removeAttribute("aria-invalid");
      this.setManualLatency(value);
    });
    this.render();
  }

  setManualLatency(ms) {
    Object.assign(this.calibration, { latencyMs: ms, spreadMs: null, method: "manual" });
    $("latency-ms").value = String(ms);
    this.lastFailure = null;
    this.save();
    this.render();
  }

  fail(step, text) {
    this.lastFailure = { step, text };
    this.render();
  }

  /** The microphone was refused: say so where the measurement was waiting. */
  micBlocked() {
    this.fail("mic", "The microphone is blocked, so nothing can be measured: see the help above.");
  }

  render() {
    const c = this.calibration;
    const failure = this.lastFailure;
    const latency = $("cal-latency-result");
    if (failure && (failure.step === "latency" || failure.step === "mic")) {
      latency.className = "result bad";
      latency.textContent = failure.text;
    } else if (c.latencyMs !== null) {
      latency.className = "result ok";
      latency.textContent = c.method === "manual" ? `Using your latency: ${c.latencyMs.toFixed(1)} ms.` : `Measured: ${c.latencyMs.toFixed(1)} ms. Steady enough to sing.`;
    } else {
      latency.className = "result";
      latency.textContent = "";
    }
    // "Give up" only makes sense while there is no usable latency.
    $("cal-giveup").hidden = !(failure && failure.step === "latency" && c.latencyMs === null);
    const volume = $("cal-volume-result");
    if (failure && (failure.step === "volume" || failure.step === "mic")) {
      volume.className = "result bad";
      volume.textContent = failure.step === "mic" ? "" : failure.text;
    } else if (c.levelDb !== null) {
      volume.className = "result ok";
      volume.textContent = c.gain > 1.05 ? "Done: the page will make you a little louder." : c.gain < 0.95 ? "Done: the page will make you a little softer." : "Done: your level is just right.";
    } else {
      volume.className = "result";
      volume.textContent = "";
    }
  }

  async measureLatency() {
    const button = $("cal-latency");
    const result = $("cal-latency-result");
    button.disabled = true;
    this.lastFailure = null;
    result.className = "result";
    result.textContent = "Listening for the clicks… keep quiet.";
    try {
      const outcome = await runLatencyCalibration(soundOn(await this.ensureEngine(true)));
      if (outcome.accepted) {
        Object.assign(this.calibration, { latencyMs: outcome.latencyMs, spreadMs: outcome.spreadMs, method: "clicks" });
        this.save();
        this.render();
      } else {
        this.fail("latency", `Not accepted: ${outcome.reason}.`);
      }
      button.textContent = "Measure again";
    } catch (err) {
      this.caught(err, "latency");
    } finally {
      button.disabled = false;
    }
  }

  async measureVolume() {
    const button = $("cal-volume");
    const result = $("cal-volume-result");
    button.disabled = true;
    this.lastFailure = null;
    result.className = "result";
    result.textContent = "Sing now… (4 s)";
    try {
      const outcome = await runVolumeCalibration(soundOn(await this.ensureEngine(true)));
      if (outcome.accepted) {
        Object.assign(this.calibration, { gain: outcome.gain, levelDb: outcome.levelDb });
        this.save();
        this.render();
      } else {
        this.fail("volume", `Not accepted: ${outcome.reason}`);
      }
      button.textContent = "Measure again";
    } catch (err) {
      this.caught(err, "volume");
    } finally {
      button.disabled = false;
    }
  }

  caught(err, step) {
    if (isMicBlocked(err)) {
      this.micBlocked();
      this.onMicBlocked(err);
      return;
    }
    this.fail(step, `That did not work: ${err.message || err}`);
    this.onError(err);
  }

  /** The figures for the Details panel. */
  details() {
    const c = this.calibration;
    const rows = [];
    if (c.latencyMs !== null) {
      rows.push(["Latency", `${c.latencyMs.toFixed(1)} ms (${c.method === "manual" ? "entered" : `measured, spread ${c.spreadMs.toFixed(2)} ms`})`]);
    }
    if (c.levelDb !== null) rows.push(["Singing level", `${c.levelDb.toFixed(1)} dBFS, gain ×${c.gain.toFixed(2)}`]);
    return rows;
  }
}

/**
 * The engine, if its sound runs: a context that never starts (no sound output,
 * e.g. Firefox on Linux without a sound server) would leave the measurement
 * listening forever.
 */
function soundOn(engine) {
  if (engine.ctx.state !== "running") {
    throw new Error("the browser's sound did not start. Check that a speaker or headphones are connected (and not held by another program), then try again");
  }
  return engine;
}
