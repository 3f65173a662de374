// Lyrics and the room's image, shown to every member, and timed lyrics: the
// leader advances the current line during a song; each advance carries the
// leader's song position, and this page highlights that line when its own
// playback reaches that position, so every bucket sees the line change
// exactly when it hears the leader get there.

import { h } from "./views.js";

const FOLLOW_MS = 10;

/** The lyrics as lines (no trailing empty line). */
export function lyricLines(text) {
  if (!text) return [];
  const lines = text.split("\n");
  while (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines;
}

/** The current line at position `pos`: the latest cue at or before it (-1: none yet). */
export function currentLine(cues, pos) {
  let line = -1;
  for (const [at, index] of cues || []) {
    if (at > pos) break;
    line = index;
  }
  return line;
}

/**
 * The cues this page follows: those of the songs before, still audible
 * (`material.older_cues`, oldest last in the list, then `material.previous_cues`,
 * the song just before's: a later bucket still sings them after the leader
 * started the next), each song's from its start on no line until its own first
 * cue, then the running song's cues.
 */
export function songCues(state) {
  const material = (state && state.material) || {};
  const cues = material.cues || [];
  const song = (state && state.song) || {};
  const start = song.start_pos;
  if (typeof start !== "number") return cues;
  const before = song.previous || (Array.isArray(song.earlier) ? song.earlier[0] : null);
  // Oldest first: each song's start and its cues.
  const songs = [...(material.older_cues || [])].reverse().map((c) => [c.start_pos, c.cues || []]);
  const previous = material.previous_cues || [];
  if (previous.length) songs.push([before && typeof before.start_pos === "number" ? before.start_pos : null, previous]);
  if (!songs.length) return cues;
  songs.push([start, cues]);
  let out = [];
  songs.forEach(([at, own], i) => {
    if (i > 0 && typeof at === "number") {
      out = out.filter(([pos]) => pos < at);
      out.push([at, -1]);
    }
    out.push(...own);
  });
  return out;
}

/** The line the leader's next advance moves to (the first one when none is current). */
export function nextLine(cues, count) {
  const last = cues && cues.length ? cues[cues.length - 1][1] : -1;
  return Math.min(last + 1, Math.max(0, count - 1));
}

/**
 * Shows `#lyrics` and `#room-image`; `playbackPos()` is this page's playback
 * position now (room clock − delay) or null. `log` (bbDebug.lyrics) gets one
 * `{line, pos}` per highlight change, `pos` being the playback position then.
 */
export class LyricsView {
  constructor({ list, image, card, playbackPos, log }) {
    this.list = list;
    this.image = image;
    this.card = card;
    this.playbackPos = playbackPos;
    this.log = log;
    this.room = null;
    this.text = null;
    this.imageId = null;
    this.cues = [];
    this.shown = -1;
    this.timer = null;
  }

  apply(state, room) {
    const material = (state && state.material) || { lyrics: "", image: null, cues: [] };
    this.room = room;
    if (material.lyrics !== this.text) {
      this.text = material.lyrics;
      this.list.replaceChildren(...lyricLines(material.lyrics).map((line, i) => h("li", { dataset: { line: String(i) } }, line || "\u00a0")));
      this.shown = -2; // redraw the highlight
    }
    const imageId = material.image ? material.image.id : null;
    if (imageId !== this.imageId) {
      this.imageId = imageId;
      this.image.hidden = imageId === null;
      if (imageId === null) this.image.removeAttribute("src");
      else this.image.src = `/api/rooms/${encodeURIComponent(room)}/images/${encodeURIComponent(imageId)}`;
    }
    this.cues = songCues(state);
    this.card.hidden = !material.lyrics && imageId === null;
    if (this.timer === null) this.timer = setInterval(() => this.follow(), FOLLOW_MS);
    this.follow();
  }

  follow() {
    const pos = this.playbackPos();
    const line = pos === null ? -1 : currentLine(this.cues, pos);
    if (line === this.shown) return;
    if (this.shown !== -2 && this.log) this.log.push({ line, pos });
    this.shown = line;
    for (const li of this.list.children) {
      const current = Number(li.dataset.line) === line;
      li.classList.toggle("current", current);
      if (current) li.setAttribute("aria-current", "true");
      else li.removeAttribute("aria-current");
    }
  }

  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
