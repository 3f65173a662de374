// The folded Details panel: the technical figures a helper may ask for
// (clock agreement with the server, latency and level, codec, playback
// buffer, counters) and the occupancy chart, which polls only while open.

import { OccupancyChart } from "./occupancy.js";
import { h, seconds } from "./views.js";

const $ = (id) => document.getElementById(id);
const nowMs = () => performance.timeOrigin + performance.now();

/** The codec in use, and what the fallback costs. */
export function codecText(codec) {
  return codec === "opus" ? "Opus (WebCodecs)" : "PCM16, uncompressed: this browser has no Opus in WebCodecs (about 12× the data)";
}

export class DetailsView {
  /** `app` is read for its live objects: clock, calibration, codec, engine, store, counters. */
  constructor(app) {
    this.app = app;
    this.sampleRate = app.sampleRate;
    this.chart = new OccupancyChart($("occupancy"), {
      sampleRate: this.sampleRate,
      markers: (occ) => this.markers(occ),
      // Enough of the ring to show every tap in use, and at least 20 s.
      windowSamples: () => {
        const state = app.store.state;
        const delays = state ? state.taps || [] : [];
        return Math.max(20 * this.sampleRate, Math.max(0, ...delays) + 5 * this.sampleRate);
      },
      onError: (err) => ($("occupancy-info").textContent = `Not available yet (${err.message}).`),
    });
  }

  get open() {
    return $("details").open;
  }

  /** Follow the room's occupancy while the panel is open and a room is joined. */
  follow() {
    const state = this.app.store.joined ? this.app.store.state : null;
    if (this.open && state) this.chart.start(state.room);
    else this.chart.stop();
  }

  stop() {
    this.chart.stop();
  }

  render() {
    if (!this.open) return;
    $("details-list").replaceChildren(...this.rows().flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
  }

  rows() {
    const app = this.app;
    const store = app.store;
    const rows = [];
    const clock = app.clock.ready ? app.clock.summary(nowMs()) : null;
    if (clock) {
      const sign = clock.offsetMs >= 0 ? "+" : "−";
      rows.push(["Clock offset to the server", `${sign}${Math.abs(clock.offsetMs).toFixed(1)} ms`]);
      rows.push(["Round trip", `${clock.rttMs.toFixed(0)} ms`]);
      if (clock.driftPpm) rows.push(["Clock drift", `${clock.driftPpm.toFixed(0)} ppm`]);
    }
    rows.push(...app.calibration.details());
    if (app.codec) rows.push(["Audio codec", codecText(app.codec)]);
    if (app.engine) rows.push(["Timing source", app.engine.timing.describe()]);
    const me = store.me();
    if (me) rows.push(["Your delay", seconds(me.delay, this.sampleRate)]);
    const stats = app.engine ? app.engine.lastStats : null;
    if (stats && store.joined) {
      rows.push(["Playback buffer", `${Math.round(stats.bufferedMs)} ms`]);
      rows.push(["Playback dropouts (total)", String(stats.totals.underflowQuanta)]);
    }
    if (store.joined) {
      const c = app.counters;
      rows.push(["Audio messages sent / frames received", `${c.sentMessages} / ${c.receivedFrames}`]);
    }
    return rows.length ? rows : [["Nothing yet", "join a room to see the connection's figures"]];
  }

  markers(occ) {
    const markers = [];
    const store = this.app.store;
    const room = store.state;
    if (!room) return markers;
    const me = store.me();
    for (const delay of room.taps || []) {
      const mine = me && me.delay === delay;
      const label = `${mine ? "you, " : ""}${seconds(delay, this.sampleRate)}`;
      markers.push({ pos: occ.clock - delay, label, color: mine ? "#c0392b" : "#5b6677" });
    }
    if (room.song && typeof room.song.start_pos === "number") markers.push({ pos: room.song.start_pos, label: "song start", color: "#1e7a45" });
    $("occupancy-info").textContent = `${occ.occupied ?? "?"} of ${occ.nFrames} frames hold audio.`;
    return markers;
  }
}
