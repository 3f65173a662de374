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

/**
 * What the worklet needs of the room state: the song window, origin, metronome
 * and track id of the running (or last) song. They come from `song.started_with`,
 * the material that song started with: what the leader chooses after it ended
 * (`song.track`, `song.metronome`) is for the next song, and a later bucket
 * still plays this one's end (docs/protocol.md, *Song material*).
 */
export function songMaterial(state) {
  const song = state && state.song;
  if (!song || typeof song.start_pos !== "number") return { start: null, end: null, origin: null, metronome: null, trackId: null };
  const end = typeof song.end_pos === "number" ? song.end_pos : song.running ? null : song.start_pos;
  // A server without `started_with` (before it kept each song's material) sent the choice.
  const played = song.started_with || { track: song.track, metronome: song.metronome };
  return {
    start: song.start_pos,
    end,
    origin: typeof song.origin === "number" ? song.origin : songOrigin(song.start_pos, played.metronome),
    metronome: played.metronome || null,
    trackId: played.track ? played.track.id : null,
  };
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
    this.trackId = null;
    this.loaded = new Map(); // id -> Float32Array (at most two kept)
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

  /** Follow a new room state: the song window, and the track's audio when it changed. */
  apply(state) {
    if (!this.engine) return;
    const song = songMaterial(state);
    const key = JSON.stringify(song);
    if (key !== this.lastSong) {
      this.lastSong = key;
      this.engine.setSong(song);
    }
    if (song.trackId !== this.trackId) {
      this.trackId = song.trackId;
      if (song.trackId === null) this.engine.setTrack(null, null);
      else this.load(song.trackId).catch((err) => {
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
      for (const old of this.loaded.keys()) if (this.loaded.size > 2 && old !== id) this.loaded.delete(old);
      this.onStatus("");
    }
    if (this.trackId === id) this.engine.setTrack(id, samples.slice());
  }
}
