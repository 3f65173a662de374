// The audio between the engine (audio.js) and the session: microphone blocks
// go to the encoder and the socket only inside the song window, decoded tap
// frames go to the engine at their room positions, and the engine's playback
// statistics become one plain-language health summary.

import { DownstreamDecoder, UpstreamEncoder } from "./codec.js";

const HEALTH_WINDOW = 20; // stats reports (about 5 s)
const QUIET_DB = -65;

/**
 * The mixer keeps input only inside the song, positions [start_pos, end_pos)
 * (the leader's positions at start and stop). A singer in a later bucket
 * reaches start_pos some seconds after the start and end_pos some seconds
 * after the stop, so audio is sent by position, not by "running".
 */
export function inSongWindow(song, pos, length) {
  if (!song || typeof song.start_pos !== "number" || pos + length <= song.start_pos) return false;
  if (typeof song.end_pos === "number") return pos < song.end_pos;
  return Boolean(song.running);
}

/**
 * What the Playback meter says, from the last few stats reports: `{level,
 * percent, text}`, level being "idle", "waiting", "quiet", "good", "warn" or
 * "bad". The meter is full only when audio is actually heard, smoothly.
 */
export function playbackHealth(reports, { joined, running, first = false }) {
  if (!joined || reports.length === 0) return { level: "idle", percent: 0, text: "" };
  const last = reports[reports.length - 1];
  const quanta = reports.reduce((n, s) => n + s.quanta, 0);
  const under = reports.reduce((n, s) => n + s.underflowQuanta, 0);
  const fraction = quanta ? under / quanta : 0;
  const quiet = running
    ? first
      ? "You sing first: nobody is ahead of you to hear."
      : "Connected, but nothing to hear yet: the earlier buckets are silent."
    : "Connected. The room is quiet until a song starts.";
  if (last.starved || !(last.bufferedMs > 0)) {
    // No audio is arriving: between songs (or in the first bucket) that is expected.
    if (!running || first) return { level: "quiet", percent: 0, text: quiet };
    return { level: "waiting", percent: 0, text: "Waiting for audio from the room…" };
  }
  const heard = reports.some((s) => s.outDb > QUIET_DB);
  if (fraction >= 0.02) {
    return {
      level: "bad",
      percent: Math.round(100 * Math.max(0, 1 - fraction * 10)),
      text: "Playback keeps breaking up: your connection cannot keep up. Try a later bucket.",
    };
  }
  if (fraction > 0) return { level: "warn", percent: 80, text: "A few dropouts in playback." };
  if (!heard) return { level: "quiet", percent: 0, text: quiet };
  return { level: "good", percent: 100, text: "You hear the room clearly." };
}

export class AudioPath {
  constructor({ constants, engine, session, store, counters, debug }) {
    this.constants = constants;
    this.engine = engine;
    this.session = session;
    this.store = store;
    this.counters = counters;
    this.debug = debug;
    this.encoder = null;
    this.decoder = null;
    this.reports = [];
    this.micOn = () => true;
  }

  /** New encoder and decoder for a new connection (each connection is a new stream). */
  open(codec) {
    this.close();
    const k = this.constants;
    this.decoder = new DownstreamDecoder({
      sampleRate: k.sample_rate,
      frameSamples: k.opus_frame_samples,
      lookahead: k.opus_lookahead_samples,
      onSamples: (pos, samples, delay) => this.onSamples(pos, samples, delay),
      onError: () => this.counters.codecErrors++,
    });
    this.encoder = new UpstreamEncoder({
      codec,
      sampleRate: k.sample_rate,
      frameSamples: k.opus_frame_samples,
      lookahead: k.opus_lookahead_samples,
      framesPerMessage: k.frames_per_message,
      send: (buffer) => {
        if (this.session.sendAudio(buffer)) this.counters.sentMessages++;
        else this.counters.droppedUp++;
      },
      onError: () => this.counters.codecErrors++,
    });
  }

  close() {
    if (this.encoder) this.encoder.end();
    if (this.decoder) this.decoder.close();
    this.encoder = null;
    this.decoder = null;
  }

  onAudio(frame) {
    this.counters.receivedFrames++;
    if (!this.decoder) return;
    try {
      this.decoder.push(frame);
    } catch {
      this.counters.codecErrors++;
    }
  }

  onSamples(pos, samples, delay) {
    const me = this.store.me();
    if (!me || delay !== me.delay || !this.engine) return;
    this.debug.received.add(pos, samples);
    this.engine.pushFrame(pos, samples);
  }

  onMic(pos, samples) {
    const song = this.store.state && this.store.state.song;
    const send = this.session.isOpen && this.store.amSinger && this.micOn() && inSongWindow(song, pos, samples.length);
    if (!send || !this.encoder) {
      if (this.encoder) this.encoder.end();
      return;
    }
    this.debug.sent.add(pos, samples);
    this.encoder.push(pos, samples);
  }

  /** Keep the last reports; returns the health summary. */
  onStats(stats) {
    this.reports.push(stats);
    if (this.reports.length > HEALTH_WINDOW) this.reports.shift();
    const first = this.store.joined && this.store.bucketOf() === 0;
    return playbackHealth(this.reports, { joined: this.store.joined, running: this.store.running, first });
  }
}
