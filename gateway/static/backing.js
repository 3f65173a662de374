// The backing track, played by this page at the song's positions: track
// sample i plays at position origin + i, where the page plays the room mix
// for that position (the worklet adds it in the same render loop), so every
// bucket hears it in time with the voices. The track is fetched once (Ogg
// Opus, 48 kHz mono), decoded by the browser and handed to the worklet.
//
// Each listener has their own backing-track and click volume (0–100 %),
// remembered in localStorage; the room mix is unaffected.

import { songOrigin } from "./metronome.js";

const LEVELS_KEY = "bb-levels";
export const DEFAULT_LEVELS = { track: 80, click: 60 };

/** The track sample played at `pos`, or null outside the track. */
export function trackIndex(pos, origin, length) {
  const i = pos - origin;
  return i >= 0 && i < length ? i : null;
}

/** A volume in percent as a linear gain (a square law: the slider feels even). */
export function levelGain(percent) {
  const p = Math.max(0, Math.min(100, Number(percent) || 0)) / 100;
  return p * p;
}

/** One song's material as the worklet plays it, from its `started_with` (or the choice). */
function played(startPos, endPos, origin, startedWith) {
  const material = startedWith || { track: null, metronome: null };
  return {
    start: startPos,
    end: endPos,
    origin: typeof origin === "number" ? origin : songOrigin(startPos, material.metronome),
    metronome: material.metronome || null,
    trackId: material.track ? material.track.id : null,
  };
}

/**
 * What the worklet needs of the room state: the window, origin, metronome and
 * track id of the running (or last) song, and `earlier`, the same of each song
 * before it still audible, newest first (`previous` is the first, null: none).
 * They come from each song's `started_with`, the material it started with: what
 * the leader chooses after a song ended (`song.track`, `song.metronome`) is for
 * the next song, while a later bucket still plays this one's end
 * (docs/protocol.md, *Song material*). A server that sends neither `earlier`
 * nor `previous` leaves both undefined: the worklet remembers the songs it played.
 */
export function songMaterial(state) {
  const song = state && state.song;
  if (!song || typeof song.start_pos !== "number") return { start: null, end: null, origin: null, metronome: null, trackId: null, previous: null, earlier: [] };
  const end = typeof song.end_pos === "number" ? song.end_pos : song.running ? null : song.start_pos;
  // A server without `started_with` (before songs kept their material) sent the choice.
  const own = song.started_with || { track: song.track, metronome: song.metronome };
  const listed = Array.isArray(song.earlier) ? song.earlier : song.previous === undefined ? undefined : song.previous ? [song.previous] : [];
  let earlier;
  if (listed !== undefined) {
    earlier = listed
      .filter((b) => b && typeof b.start_pos === "number" && typeof b.end_pos === "number" && b.started_with)
      .map((b) => played(b.start_pos, b.end_pos, b.origin, b.started_with));
  }
  const previous = earlier === undefined ? undefined : earlier.length ? earlier[0] : null;
  return { ...played(song.start_pos, end, song.origin, own), previous, earlier };
}

export function loadLevels(storage = globalThis.localStorage) {
  try {
    const saved = JSON.parse(storage.getItem(LEVELS_KEY) || "{}");
    const pick = (v, d) => (Number.isFinite(v) && v >= 0 && v <= 100 ? v : d);
    return { track: pick(saved.track, DEFAULT_LEVELS.track), click: pick(saved.click, DEFAULT_LEVELS.click) };
  } catch {
    return { ...DEFAULT_LEVELS };
  }
}

export function saveLevels(levels, storage = globalThis.localStorage) {
  try {
    storage.setItem(LEVELS_KEY, JSON.stringify({ track: levels.track, click: levels.click }));
  } catch {
    // Private mode or a full storage: the levels hold for this visit only.
  }
}

/** Keeps the worklet's song material in step with the room state. */
export class Backing {
  constructor({ engine, room, onStatus = () => {} }) {
    this.engine = engine;
    this.room = room;
    this.onStatus = onStatus;
    this.sent = new Set(); // ids of the tracks the worklet holds (or is being sent)
    this.failed = new Set(); // ids that could not be loaded
    this.loaded = new Map(); // id -> Float32Array (at most three kept)
    this.levels = loadLevels();
    this.lastSong = null;
    this.sendLevels();
  }

  setLevels(levels) {
    this.levels = { ...this.levels, ...levels };
    saveLevels(this.levels);
    this.sendLevels();
  }

  sendLevels() {
    if (this.engine) this.engine.configure({ trackGain: levelGain(this.levels.track), clickGain: levelGain(this.levels.click) });
  }

  /** Follow a new room state: the songs' material, and the audio of the tracks they name. */
  apply(state) {
    if (!this.engine) return;
    const song = songMaterial(state);
    const key = JSON.stringify(song);
    if (key !== this.lastSong) {
      this.lastSong = key;
      this.engine.setSong(song);
    }
    // The worklet keeps the tracks the audible songs name and forgets the others.
    const wanted = [song.trackId, ...(song.earlier || (song.previous ? [song.previous] : [])).map((e) => e.trackId)].filter((id) => id !== null);
    for (const id of this.sent) if (!wanted.includes(id)) this.sent.delete(id);
    for (const id of wanted) {
      if (this.sent.has(id) || this.failed.has(id)) continue;
      this.sent.add(id);
      this.load(id).catch((err) => {
        this.sent.delete(id);
        this.failed.add(id); // not fetched again on every state: ids are never reused
        this.onStatus(`The backing track could not be loaded: ${err.message}`);
        console.warn(err);
      });
    }
  }

  async load(id) {
    let samples = this.loaded.get(id);
    if (!samples) {
      this.onStatus("Loading the backing track…");
      const response = await fetch(`/api/rooms/${encodeURIComponent(this.room)}/tracks/${encodeURIComponent(id)}`);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const buffer = await this.engine.ctx.decodeAudioData(await response.arrayBuffer());
      samples = buffer.getChannelData(0).slice();
      this.loaded.set(id, samples);
      for (const old of this.loaded.keys()) if (this.loaded.size > 3 && !this.sent.has(old)) this.loaded.delete(old);
      this.onStatus("");
    }
    if (this.sent.has(id)) this.engine.setTrack(id, samples.slice());
  }
}
