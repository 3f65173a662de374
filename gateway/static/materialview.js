// The song material controls: every member's own backing-track and click
// volume, and for the leader the track (upload, library, choice), the
// metronome, the lyrics with "Next line", and the image. Uploads go over
// HTTP with this tab's seat (docs/protocol.md, *Song material*); settings
// are room commands.

import { h } from "./views.js";

const TRACK_TYPES = "audio/mpeg,audio/ogg,audio/opus,audio/flac,audio/wav,audio/x-wav,.mp3,.ogg,.opus,.flac,.wav";
const IMAGE_TYPES = "image/png,image/jpeg,image/webp";

const mb = (bytes) => Math.round(bytes / (1024 * 1024));

/** `m:ss` for a length in samples. */
export function duration(samples, sampleRate) {
  const s = Math.floor(samples / sampleRate);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** What the song card says about the material of the next (or running) song. */
export function materialSummary(song, sampleRate) {
  const parts = [];
  if (song && song.track) parts.push(`Backing track: ${song.track.name} (${duration(song.track.samples, sampleRate)})`);
  const m = song && song.metronome;
  if (m && m.on) parts.push(`Metronome: ${m.bpm} bpm, ${m.beats} per bar${m.count_in ? ", one bar counted in" : ""}`);
  return parts.join(". ");
}

function levelSlider(id, label, value, onChange) {
  const out = h("output", { for: id }, `${value} %`);
  const input = h("input", {
    id,
    type: "range",
    min: "0",
    max: "100",
    step: "1",
    value: String(value),
    "aria-valuetext": `${value} %`,
    oninput: (e) => {
      out.textContent = `${e.target.value} %`;
      e.target.setAttribute("aria-valuetext", `${e.target.value} %`);
      onChange(Number(e.target.value));
    },
  });
  return h("label", { class: "level" }, `${label} `, input, out);
}

/**
 * Fill `container`. `ctx`: {state, meId, sampleRate, limits (the served constants), levels, setLevels(levels),
 * request(type, fields), upload(kind, file), library (names or null),
 * loadLibrary(), useLibrary(name), uploaded ({track, image}: names this page uploaded),
 * draft (metronome fields changed but not sent, or null), setDraft(draft)}.
 */
export function renderMaterial(container, ctx) {
  const { state, meId } = ctx;
  // Never rebuild under a control in use (a slider being dragged, a textarea being typed in).
  const active = document.activeElement;
  if (container.contains(active) && (active.type === "range" || active.tagName === "TEXTAREA")) return;
  const song = state.song;
  const parts = [
    h(
      "div",
      { class: "levels row" },
      levelSlider("level-track", "Backing track", ctx.levels.track, (v) => ctx.setLevels({ track: v })),
      levelSlider("level-click", "Click", ctx.levels.click, (v) => ctx.setLevels({ click: v })),
    ),
  ];
  if (state.leader === meId) parts.push(leaderControls(ctx, song));
  container.replaceChildren(...parts);
}

/**
 * A file field that looks like a button and says what it holds: the browser's
 * own "No file chosen" is wrong once the upload went through (the page
 * rebuilds the controls from the room state).
 */
function fileField({ id, label, accept, disabled, ariaLabel, holds, onFile }) {
  const input = h("input", {
    id,
    type: "file",
    class: "file-input",
    accept,
    disabled,
    "aria-label": ariaLabel,
    "aria-describedby": `${id}-holds`,
    onchange: (e) => {
      const f = e.target.files[0];
      if (f) onFile(f);
    },
  });
  return h(
    "div",
    { class: "file-field" },
    h("label", { class: disabled ? "file-button disabled" : "file-button" }, input, label),
    h("span", { id: `${id}-holds`, class: "hint file-holds" }, holds),
  );
}

function leaderControls(ctx, song) {
  const { state, request, sampleRate } = ctx;
  const running = song.running;
  const uploaded = ctx.uploaded || {};
  const tracks = state.material ? state.material.tracks : [];
  const choice = h(
    "select",
    { id: "track-choice", disabled: running, onchange: (e) => request("set_track", { track: e.target.value || null }) },
    h("option", { value: "" }, "No backing track"),
    ...tracks.map((t) => h("option", { value: t.id, selected: song.track && song.track.id === t.id }, `${t.name} (${duration(t.samples, sampleRate)})`)),
  );
  const file = fileField({
    id: "track-file",
    label: "Upload a track…",
    accept: TRACK_TYPES,
    disabled: running,
    ariaLabel: `Upload a backing track (MP3, Ogg, FLAC or WAV, at most ${mb(ctx.limits.max_track_bytes ?? 20971520)} MB and ${Math.round((ctx.limits.max_track_s ?? 600) / 60)} minutes)`,
    holds: uploaded.track ? `Uploaded: ${uploaded.track}` : "MP3, Ogg, FLAC or WAV",
    onFile: (f) => ctx.upload("track", f),
  });
  const library = ctx.library
    ? h(
        "select",
        { id: "track-library", "aria-label": "Tracks on the server", disabled: running, onchange: (e) => e.target.value && ctx.useLibrary(e.target.value) },
        h("option", { value: "" }, ctx.library.length ? "From the server…" : "No tracks on the server"),
        ...ctx.library.map((t) => h("option", { value: t.name }, t.name)),
      )
    : h("button", { type: "button", class: "small", disabled: running, onclick: () => ctx.loadLibrary() }, "Tracks on the server…");
  // A state arriving while the leader edits the metronome rebuilds the form: the edits
  // not yet sent (ctx.draft) are kept until "Set" sends them.
  const m = ctx.draft || song.metronome || { on: false, bpm: 100, beats: 4, count_in: false };
  const fieldsOf = (form) => {
    const data = new FormData(form);
    return { on: data.get("on") === "on", bpm: Number(data.get("bpm")), beats: Number(data.get("beats")), count_in: data.get("count_in") === "on" };
  };
  const between = running ? h("p", { class: "hint locked" }, "Locked while the song runs: change the track and the metronome between songs.") : null;
  const metronome = h(
    "form",
    {
      id: "metronome",
      oninput: (e) => ctx.setDraft && ctx.setDraft(fieldsOf(e.currentTarget)),
      onchange: (e) => ctx.setDraft && ctx.setDraft(fieldsOf(e.currentTarget)),
      onsubmit: (e) => {
        e.preventDefault();
        if (ctx.setDraft) ctx.setDraft(null);
        request("set_metronome", fieldsOf(e.target));
      },
    },
    // A disabled fieldset greys every field at once, so none looks editable during a song.
    h(
      "fieldset",
      { class: "metronome-fields", disabled: running },
      h("legend", { class: "visually-hidden" }, "Metronome"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "on", checked: m.on }), "Metronome on"),
      h("label", {}, "bpm", h("input", { type: "number", name: "bpm", min: "20", max: "300", step: "1", value: String(m.bpm) })),
      h("label", {}, "beats per bar", h("input", { type: "number", name: "beats", min: "1", max: "16", step: "1", value: String(m.beats) })),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "count_in", checked: m.count_in }), "count in one bar"),
      h("button", { type: "submit", class: "small" }, "Set"),
    ),
  );
  const lyrics = h("textarea", { id: "lyrics-text", rows: "4", maxlength: String(ctx.limits.max_lyrics_chars ?? 10000), "aria-label": "Lyrics, one line per row" }, state.material ? state.material.lyrics : "");
  const hasImage = Boolean(state.material && state.material.image);
  const image = fileField({
    id: "image-file",
    label: hasImage ? "Show another image…" : "Show an image…",
    accept: IMAGE_TYPES,
    disabled: false,
    ariaLabel: `Show an image (PNG, JPEG or WebP, at most ${mb(ctx.limits.max_image_bytes ?? 5242880)} MB)`,
    holds: hasImage ? (uploaded.image ? `Shown: ${uploaded.image}` : "An image is shown.") : "PNG, JPEG or WebP",
    onFile: (f) => ctx.upload("image", f),
  });
  return h(
    "div",
    { class: "leader-material" },
    h("h3", {}, "Backing track"),
    h("div", { class: "row" }, h("label", { for: "track-choice", class: "inline-label" }, "Track"), choice, library),
    file,
    h("h3", {}, "Metronome"),
    metronome,
    between,
    h("h3", { class: "lyrics-heading" }, "Lyrics and image"),
    h("label", { class: "lyrics-edit" }, "Lyrics, one line per row", lyrics),
    h(
      "div",
      { class: "row" },
      h("button", { type: "button", class: "small", onclick: () => request("set_lyrics", { text: lyrics.value }) }, "Show lyrics"),
      h("small", { class: "hint" }, "During the song: Next line beside the lyrics, or Page Down"),
    ),
    image,
    hasImage ? h("button", { type: "button", class: "small", onclick: () => request("clear_image", {}) }, "Remove the image") : null,
  );
}

/**
 * The song material of the page: keeps the backing track and clicks (Backing)
 * and the lyrics (LyricsView) in step with the room, renders the controls and
 * does the uploads. `app` gives: store, engine (may be null until joined),
 * sampleRate, request(type, fields), notice, debug, seat() -> {singer, token}.
 */
export class MaterialPanel {
  constructor({ app, Backing, LyricsView, nextLine, lyricLines, $ }) {
    this.app = app;
    this.Backing = Backing;
    this.nextLineOf = nextLine;
    this.lyricLines = lyricLines;
    this.$ = $;
    this.backing = null;
    this.library = null;
    this.uploaded = {}; // kind -> the file name this page last uploaded, shown beside its field
    this.metronomeDraft = null; // the leader's metronome fields changed but not yet sent
    this.lyrics = new LyricsView({
      list: $("lyrics"),
      image: $("room-image"),
      card: $("lyrics-card"),
      playbackPos: () => this.playbackPos(),
      log: app.debug.lyrics,
    });
  }

  /** This page's playback position now (room clock − delay), or null. */
  playbackPos() {
    const engine = this.app.engine;
    const me = this.app.store.me();
    const now = engine ? engine.roomClockNow() : null;
    return now === null || !me ? null : now - me.delay;
  }

  get room() {
    const state = this.app.store.state;
    return state ? state.room : null;
  }

  onState(state) {
    const app = this.app;
    if (!state || !app.store.joined) return;
    if (!this.backing && app.engine) {
      this.backing = new this.Backing({ engine: app.engine, room: state.room, onStatus: (text) => (this.$("material-status").textContent = text) });
    }
    if (this.backing) this.backing.apply(state);
    this.lyrics.apply(state, state.room);
    this.$("material-summary").textContent = materialSummary(state.song, app.sampleRate);
    this.render();
  }

  render() {
    const state = this.app.store.state;
    if (!state) return;
    renderMaterial(this.$("material"), {
      state,
      meId: this.app.store.meId,
      sampleRate: this.app.sampleRate,
      limits: this.app.constants,
      levels: this.backing ? this.backing.levels : { track: 80, click: 60 },
      setLevels: (levels) => this.backing && this.backing.setLevels(levels),
      request: (type, fields) => this.app.request(type, fields),
      upload: (kind, file) => this.upload(kind, file),
      library: this.library,
      loadLibrary: () => this.loadLibrary(),
      useLibrary: (name) => this.upload("track", null, name),
      uploaded: this.uploaded,
      draft: this.metronomeDraft,
      setDraft: (draft) => (this.metronomeDraft = draft),
    });
  }

  async loadLibrary() {
    try {
      const response = await fetch("/api/tracks");
      this.library = (await response.json()).tracks || [];
    } catch {
      this.library = [];
    }
    this.render();
  }

  /** Upload a track or an image (or take a library track): HTTP with this tab's seat. */
  async upload(kind, file, libraryName = null) {
    const seat = this.app.seat();
    const room = this.room;
    if (!seat || !room) return false;
    const base = `/api/rooms/${encodeURIComponent(room)}`;
    const url =
      kind === "image"
        ? `${base}/image`
        : libraryName !== null
          ? `${base}/tracks?library=${encodeURIComponent(libraryName)}`
          : `${base}/tracks?name=${encodeURIComponent(file.name)}`;
    this.$("material-status").textContent = kind === "image" ? "Uploading the image…" : "Uploading and checking the track…";
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { "X-BB-Singer": seat.singer, "X-BB-Token": seat.token },
        body: file,
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        this.app.notice.show(`The ${kind} was not accepted: ${body.error || `HTTP ${response.status}`}`, "error");
        return false;
      }
      this.uploaded[kind] = file ? file.name : libraryName;
      this.render();
      return true;
    } catch (err) {
      this.app.notice.show(`The ${kind} could not be sent: ${err.message}`, "error");
      return false;
    } finally {
      this.$("material-status").textContent = "";
    }
  }

  /** Leader: the next lyric line is current from my playback position now. */
  nextLine() {
    const state = this.app.store.state;
    const pos = this.playbackPos();
    if (!state || pos === null || !state.song.running) return;
    const lines = this.lyricLines(state.material ? state.material.lyrics : "");
    if (!lines.length) return;
    this.app.request("cue_lyrics", { line: this.nextLineOf(state.material.cues, lines.length), pos: Math.round(pos) });
  }

  reset() {
    this.backing = null;
    this.uploaded = {};
    this.lyrics.stop();
  }
}
