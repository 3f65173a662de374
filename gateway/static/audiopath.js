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
 * Seconds until the running song reaches a page that plays position
 * `playbackPos` (room clock − its delay) now: the song starts at
 * `song.start_pos` for every bucket, each at its own delay. Null when no song
 * runs, the position is unknown, or the song is already there.
 */
export function songArrivalS(song, playbackPos, sampleRate) {
  if (!song || !song.running || typeof song.start_pos !== "number") return null;
  if (typeof playbackPos !== "number" || !Number.isFinite(playbackPos)) return null;
  const ahead = song.start_pos - playbackPos;
  return ahead > 0 ? ahead / sampleRate : null;
}

/** "The song reaches your bucket in 12 s." (whole seconds, rounded up, never 0). */
export function arrivalText(seconds) {
  return `The song reaches your bucket in ${Math.max(1, Math.ceil(seconds))} s.`;
}

/**
 * Why a running song is silent here, in words: you sing first, the song has
 * not reached your bucket yet (`arrivesInS`), you chose the soloed singers
 * (`hears`, and `soloAhead`: how many of them sit in earlier buckets), or
 * the earlier buckets are silent.
 */
function silenceText({ running, first, arrivesInS, hears, soloAhead }) {
  if (!running) return "Connected. The room is quiet until a song starts.";
  if (first) return "You sing first: nobody is ahead of you to hear.";
  if (arrivesInS !== null && arrivesInS > 0) return arrivalText(arrivesInS);
  if (hears === "solo") {
    return soloAhead > 0
      ? "You hear only the soloed singers, and they are silent for now."
      : "You hear only the soloed singers, and none of them sings before your bucket: choose everyone to hear the room.";
  }
  return "Connected, but nothing to hear yet: the earlier buckets are silent.";
}

/**
 * What the Playback meter says, from the last few stats reports: `{level,
 * percent, text}`, level being "idle", "waiting", "quiet", "good", "warn" or
 * "bad". The meter is full only when audio is actually heard, smoothly.
 * Options: `joined`, `running`, `first` (you are in the first bucket),
 * `arrivesInS` (songArrivalS), `hears` ("full" or "solo") and `soloAhead`.
 */
export function playbackHealth(reports, { joined, running, first = false, arrivesInS = null, hears = "full", soloAhead = 0 }) {
  if (!joined || reports.length === 0) return { level: "idle", percent: 0, text: "" };
  const last = reports[reports.length - 1];
  const quanta = reports.reduce((n, s) => n + s.quanta, 0);
  const under = reports.reduce((n, s) => n + s.underflowQuanta, 0);
  const fraction = quanta ? under / quanta : 0;
  const quiet = silenceText({ running, first, arrivesInS, hears, soloAhead });
  // Before the song reaches you there is nothing to hear, so nothing to break up either.
  if (running && !first && arrivesInS !== null && arrivesInS > 0) return { level: "quiet", percent: 0, text: quiet };
  if (last.starved || !(last.bufferedMs > 0)) {
    // No audio is arriving: between songs or in the first bucket that is expected.
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

/**
 * The reports right after your tap changes (a new bucket or delay, or the
 * other mix) hold the gap of the switch, which says nothing about the
 * connection. The gap comes once the audio buffered before the switch has
 * played, so those reports are left out until then and until
 * `SETTLED_REPORTS` clean ones in a row follow (at most `MAX_SETTLING_REPORTS`
 * in all); meanwhile the meter says what is happening.
 */
export const SETTLED_REPORTS = 2;
export const MAX_SETTLING_REPORTS = 24;

/** A new settling after a switch, given the last report before it (or null) and the sample rate. */
export function startSettling(lastReport, sampleRate) {
  const reportMs = lastReport && lastReport.quanta > 0 ? (lastReport.quanta * 128 * 1000) / sampleRate : 250;
  const bufferedMs = lastReport && lastReport.bufferedMs > 0 ? lastReport.bufferedMs : 0;
  return { drain: Math.ceil(bufferedMs / reportMs) + 1, seen: 0, clean: 0 };
}

/** Count one report into `settling` (mutated); true once the switch has settled. */
export function settle(settling, report) {
  settling.seen++;
  const clean = report.underflowQuanta === 0 && !report.starved && report.bufferedMs > 0;
  settling.clean = clean && settling.seen > settling.drain ? settling.clean + 1 : 0;
  return settling.clean >= SETTLED_REPORTS || settling.seen >= MAX_SETTLING_REPORTS;
}

/** The tap a member is sent: their delay and the mix they hear. */
export function tapOf(member) {
  return member ? `${member.delay}/${member.hears ?? "full"}` : null;
}

/**
 * What the meter says while the sound settles: `change` is "start" (just
 * joined), "moved" (a new delay) or "mix" (the other mix, `hears`).
 */
export function switchingHealth(change, hears) {
  const text =
    change === "start"
      ? "Starting the sound…"
      : change === "moved"
        ? "Moving the sound to your new place in the room…"
        : hears === "solo"
          ? "Switching to the soloed singers…"
          : "Switching back to everyone…";
  return { level: "waiting", percent: 0, text };
}

/** Which change turns tap `before` into tap `after` (tapOf strings): "start", "moved" or "mix". */
export function tapChange(before, after) {
  if (before === null) return "start";
  return before.split("/")[0] === after.split("/")[0] ? "mix" : "moved";
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
    this.tap = null;
    this.settling = null; // while a tap switch settles: {drain, seen, clean} (startSettling)
    this.change = null; // what that settling follows (tapChange)
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
    // A listener is sent only its own tap: it follows the delay that arrives.
    if (this.store.meRole === "listener") this.store.setHeardDelay(delay);
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
  onStats(raw) {
    const store = this.store;
    const me = store.me();
    const state = store.state;
    const first = store.joined && store.bucketOf() === 0;
    const now = this.engine ? this.engine.roomClockNow() : null;
    const arrivesInS = me && now !== null && state ? songArrivalS(state.song, now - me.delay, this.constants.sample_rate) : null;
    // Until the song gets here only silence plays: its dropouts are not held against the song's audio.
    const stats = arrivesInS !== null ? { ...raw, underflowQuanta: 0 } : raw;
    const tap = tapOf(me);
    if (tap !== this.tap) {
      // Joining starts a tap, any later change switches it: either way the first reports hold no room audio yet.
      if (tap !== null) {
        this.settling = startSettling(this.tap === null ? null : (this.reports.at(-1) ?? null), this.constants.sample_rate);
        this.change = tapChange(this.tap, tap);
      }
      this.tap = tap;
      this.reports = [];
    }
    if (this.settling) {
      if (!settle(this.settling, stats)) return switchingHealth(this.change, me && me.hears);
      this.settling = null;
    }
    this.reports.push(stats);
    if (this.reports.length > HEALTH_WINDOW) this.reports.shift();
    const soloAhead = me && state ? state.members.filter((m) => m.soloed && m.delay < me.delay).length : 0;
    return playbackHealth(this.reports, { joined: store.joined, running: store.running, first, arrivesInS, hears: me ? me.hears : "full", soloAhead });
  }
}
