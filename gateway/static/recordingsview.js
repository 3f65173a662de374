// The Recordings panel: the room's recordings (docs/recording.md, *Listening
// and downloading*), newest first, each with a player and download links,
// looked up again when the recorder says one is listed (the `recording`
// message), while a song that ended has none listed yet, and on Refresh;
// and for the leader the
// two recording options of the next songs (`set_recording`, reflected from
// `song.recording` of the room state).
//
// How the files are reached. In an open room the player and the links point
// straight at the files: the browser streams the player (and seeks with
// ranges) and saves downloads to disk itself. In a room with a password (the
// listing says `members_only`) every request must carry this tab's seat in
// headers (X-BB-Singer, X-BB-Token), which a link or <audio src> cannot send:
// the page fetches a file when asked (Listen, or a download link clicked),
// holds it as a blob, points the player or the link at an object URL, and
// revokes the URL when its recording leaves the list or the page leaves the
// room. Such a file is held in the page's memory until then.

import { h } from "./views.js";

/** How long after a song ends the page looks for its recording: 2 s, 3 s, 5 s, 8 s, then every 15 s, about 5 minutes in all. */
export const RETRY_MS = [2000, 3000, 5000, 8000];
export const RETRY_EVERY_MS = 15000;
export const RETRY_ATTEMPTS = 24;

/** `m:ss` for a length in seconds (whole seconds, rounded down); "–" when unknown. */
export function lengthText(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

const two = (n) => String(n).padStart(2, "0");

/** The Date of a unix time in seconds, or null when it is not one. */
export function dateOf(created) {
  if (typeof created !== "number") return null;
  const d = new Date(created * 1000);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** `YYYY-MM-DD HH:MM` in this browser's time zone for a unix time in seconds; "" when unknown. */
export function localTime(created) {
  const d = dateOf(created);
  if (!d) return "";
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}

/** The address of one file of a room's recording. */
export function fileUrl(room, file) {
  return `/api/rooms/${encodeURIComponent(room)}/recordings/${encodeURIComponent(file)}`;
}

/** A sidecar the panel can show: its mix and listening copy are named. */
export function usable(rec) {
  return Boolean(rec) && typeof rec.flac === "string" && rec.flac.endsWith(".flac") && typeof rec.ogg === "string";
}

/** The recording's stem (its files' common name): the mix's file name without `.flac`. */
export function recordingStem(rec) {
  return rec.flac.slice(0, -".flac".length);
}

export function hasStems(rec) {
  return Array.isArray(rec.stems) && rec.stems.length > 0;
}

/** The links of a recording: `[{label, url, name}]`; the stems' ZIP only when it has stems. */
export function downloads(room, rec) {
  const links = [
    { label: "Mix (Ogg)", url: fileUrl(room, rec.ogg), name: rec.ogg },
    { label: "FLAC", url: fileUrl(room, rec.flac), name: rec.flac },
  ];
  if (hasStems(rec)) {
    const name = `${recordingStem(rec)}.stems.zip`;
    links.push({ label: "Stems (zip)", url: fileUrl(room, name), name });
  }
  return links;
}

/** Usable recordings, newest first (the server sends them so; this keeps the page right either way). */
export function newestFirst(recordings) {
  const time = (r) => (typeof r.created === "number" ? r.created : 0);
  return (Array.isArray(recordings) ? recordings : []).filter(usable).sort((a, b) => time(b) - time(a));
}

/** What to tell a person about a refused recordings request (`what`: the list, or a file). */
export function problemText(status, what = "The list of recordings") {
  switch (status) {
    case 401:
      return "Only the room's members may see its recordings, and this page holds no seat in the room: join it again.";
    case 403:
      return "Your seat is no longer in this room: join it again to see its recordings.";
    case 404:
      return `${what} was not found: the room is gone, or retention removed the recording. Press Refresh.`;
    case 503:
      return "The server cannot reach its database right now: try again in a moment.";
    default:
      return `${what} could not be loaded (HTTP ${status}).`;
  }
}

/** True when `previous` had a song running and `state` has it over: its recording is on its way. */
export function songEnded(previous, state) {
  return Boolean(previous && previous.song && previous.song.running && state && state.song && !state.song.running);
}

/** The songs of `awaiting` ({number, start_pos}) whose recording `recordings` does not list yet. */
export function stillAwaited(awaiting, recordings) {
  const listed = new Set((Array.isArray(recordings) ? recordings : []).map((r) => `${r.song}:${r.start_pos}`));
  return (Array.isArray(awaiting) ? awaiting : []).filter((a) => !listed.has(`${a.number}:${a.start_pos}`));
}

/** `awaiting` with `song` ({number, start_pos}) added once; every earlier song stays awaited. */
export function awaitSong(awaiting, song) {
  const list = Array.isArray(awaiting) ? awaiting : [];
  if (!song || list.some((a) => a.number === song.number && a.start_pos === song.start_pos)) return list;
  return [...list, { number: song.number, start_pos: song.start_pos }];
}

/** The wait (ms) before the attempt-th look for a song's recording, or null to give up. */
export function retryDelayMs(attempt) {
  if (attempt < 0 || attempt >= RETRY_ATTEMPTS) return null;
  return attempt < RETRY_MS.length ? RETRY_MS[attempt] : RETRY_EVERY_MS;
}

/** What the recorder keeps of the next songs, in words (everyone sees it). */
export function recordingSummary(recording, running) {
  const r = recording || {};
  const what = `the mix${r.metronome ? " with the metronome's clicks" : ""}${r.stems ? ", and each singer's voice alone (stems)" : ""}`;
  return `${running ? "This song's recording holds" : "Recordings of the next songs hold"} ${what}.`;
}

/**
 * The panel. `app` gives: store (RoomStore), seat() -> {singer, token} or
 * null, request(type, fields) -> Promise<bool>. `$` finds the elements of
 * index.html's #recordings-card.
 */
export class RecordingsPanel {
  constructor({ app, $ }) {
    this.app = app;
    this.$ = $;
    this.room = null;
    this.membersOnly = false;
    this.recordings = [];
    this.items = new Map(); // stem -> {li, urls: [object URL]}
    this.generation = 0; // a newer refresh wins over one still in flight
    this.awaiting = []; // [{number, start_pos}] of the songs whose recording is expected
    this.attempt = 0;
    this.timer = null;
    this.problem = "";
  }

  bind() {
    const $ = this.$;
    $("recordings-refresh").addEventListener("click", () => this.refresh());
    for (const id of ["rec-stems", "rec-clicks"]) $(id).addEventListener("change", () => this.sendOptions());
  }

  /** Follow the room state (`previous` is the state before this one). */
  onState(state, previous) {
    if (!state || !this.app.store.joined) return;
    if (state.room !== this.room) {
      this.reset();
      this.room = state.room;
      this.refresh();
    }
    this.renderOptions(state);
    if (songEnded(previous, state) && previous.room === state.room) this.expect(state.song);
  }

  renderOptions(state) {
    const $ = this.$;
    const song = state.song || {};
    const recording = song.recording || { stems: false, metronome: false };
    $("recording-summary").textContent = recordingSummary(recording, Boolean(song.running));
    const leading = this.app.store.isLeader;
    $("recording-options").hidden = !leading;
    $("recording-options-hint").hidden = !leading || !song.running;
    $("rec-stems").checked = Boolean(recording.stems);
    $("rec-clicks").checked = Boolean(recording.metronome);
    // The server refuses these during a song (song_running): say so by disabling them.
    $("rec-stems").disabled = Boolean(song.running);
    $("rec-clicks").disabled = Boolean(song.running);
  }

  async sendOptions() {
    const $ = this.$;
    const ok = await this.app.request("set_recording", { stems: $("rec-stems").checked, metronome: $("rec-clicks").checked });
    // Refused: show the room's options again, not what was clicked.
    if (!ok && this.app.store.state) this.renderOptions(this.app.store.state);
  }

  /** Look for a just-ended song's recording (and those of earlier songs not listed yet)
   * a few times, until every one is listed; the recorder's `recording` message comes first. */
  expect(song) {
    clearTimeout(this.timer);
    this.awaiting = awaitSong(this.awaiting, song);
    this.attempt = 0;
    this.renderStatus();
    this.schedule();
  }

  schedule() {
    const wait = retryDelayMs(this.attempt++);
    if (wait === null) {
      this.awaiting = [];
      this.renderStatus();
      return;
    }
    this.timer = setTimeout(async () => {
      await this.refresh();
      if (this.awaiting.length) this.schedule(); // some are not listed yet
    }, wait);
  }

  /** The recorder listed a recording of this room (`recording` message): show the list now. */
  onRecorded(msg) {
    if (!this.room || !msg) return Promise.resolve();
    return this.refresh();
  }

  headers() {
    const seat = this.app.seat();
    return seat ? { "X-BB-Singer": seat.singer, "X-BB-Token": seat.token } : {};
  }

  /** Fetch the list again and show it. */
  async refresh() {
    const room = this.room;
    if (!room) return;
    const generation = ++this.generation;
    this.$("recordings").setAttribute("aria-busy", "true");
    let problem = "";
    let body = null;
    try {
      const response = await fetch(`/api/rooms/${encodeURIComponent(room)}/recordings`, { headers: this.headers(), cache: "no-store" });
      if (response.ok) body = await response.json();
      else problem = problemText(response.status);
    } catch (err) {
      problem = `The recordings could not be loaded: ${err.message || "the server did not answer"}.`;
    }
    if (generation !== this.generation || room !== this.room) return;
    this.$("recordings").removeAttribute("aria-busy");
    this.problem = problem;
    if (body) this.show(newestFirst(body.recordings), Boolean(body.members_only));
    this.renderStatus();
  }

  show(recordings, membersOnly) {
    if (membersOnly !== this.membersOnly) this.clearItems();
    this.membersOnly = membersOnly;
    this.recordings = recordings;
    this.awaiting = stillAwaited(this.awaiting, recordings);
    if (!this.awaiting.length) clearTimeout(this.timer);
    this.renderList();
  }

  renderStatus() {
    const a = this.awaiting;
    const songs = a.map((s) => s.number).join(", ");
    const waiting = a.length
      ? `${a.length > 1 ? "Songs" : "Song"} ${songs} ended: ${a.length > 1 ? "their recordings appear" : "its recording appears"} here once the recorder has saved ${a.length > 1 ? "them" : "it"}.`
      : "";
    const status = this.$("recordings-status");
    status.textContent = this.problem || waiting;
    status.classList.toggle("bad", Boolean(this.problem));
  }

  /** Add new recordings and drop gone ones; the others keep their element (a playing player plays on). */
  renderList() {
    const list = this.$("recordings");
    const wanted = new Map(this.recordings.map((r) => [recordingStem(r), r]));
    for (const [stem, item] of this.items) {
      if (!wanted.has(stem)) {
        this.revoke(item);
        item.li.remove();
        this.items.delete(stem);
      }
    }
    let cursor = list.firstElementChild;
    for (const [stem, rec] of wanted) {
      let item = this.items.get(stem);
      if (!item) {
        item = { stem, li: null, urls: [] };
        item.li = this.renderItem(rec, item);
        this.items.set(stem, item);
      }
      if (item.li === cursor) cursor = cursor.nextElementSibling;
      else list.insertBefore(item.li, cursor);
    }
    this.$("recordings-empty").hidden = this.recordings.length > 0;
  }

  renderItem(rec, item) {
    const room = this.room;
    const when = localTime(rec.created);
    const title = `Song ${rec.song ?? "?"}`;
    const links = downloads(room, rec).map((d) =>
      h(
        "a",
        {
          href: d.url,
          download: d.name,
          class: "download",
          dataset: { file: d.name },
          onclick: (e) => this.onDownload(e, item, d, `${title}: ${d.label}`),
        },
        d.label,
      ),
    );
    return h(
      "li",
      { class: "recording", dataset: { stem: recordingStem(rec) } },
      h(
        "p",
        { class: "what" },
        h("b", {}, title),
        h("span", { class: "length", title: "length" }, lengthText(rec.length_s)),
        when ? h("time", { datetime: dateOf(rec.created).toISOString() }, when) : null,
        rec.leader ? h("span", { class: "leader" }, `led by ${rec.leader}`) : null,
        rec.metronome ? h("span", { class: "badge" }, "clicks") : null,
      ),
      this.player(rec, item, title, `${title}${when ? `, ${when}` : ""}`),
      h("p", { class: "downloads" }, h("span", { class: "hint" }, "Download:"), ...links),
    );
  }

  /** The player: straight to the file in an open room; in a members-only room a button that fetches it first. */
  player(rec, item, title, label) {
    const url = fileUrl(this.room, rec.ogg);
    if (!this.membersOnly) return h("audio", { controls: true, preload: "none", src: url, "aria-label": label });
    const button = h("button", { type: "button", class: "small listen", "aria-label": `Listen to ${label}` }, "Listen");
    button.addEventListener("click", async () => {
      if (button.getAttribute("aria-busy")) return; // not disabled: the focus stays on it
      button.setAttribute("aria-busy", "true");
      button.textContent = "Loading…";
      const objectUrl = await this.fetchObjectUrl(url, item, `${title}: the mix`);
      if (!objectUrl) {
        button.removeAttribute("aria-busy");
        button.textContent = "Listen";
        return;
      }
      const audio = h("audio", { controls: true, src: objectUrl, "aria-label": label });
      button.replaceWith(audio);
      audio.play().catch(() => {});
      audio.focus();
    });
    return button;
  }

  onDownload(event, item, link, what) {
    const a = event.currentTarget;
    if (!this.membersOnly || a.dataset.ready) return; // the browser downloads it
    event.preventDefault();
    if (a.getAttribute("aria-busy")) return;
    a.setAttribute("aria-busy", "true");
    this.fetchObjectUrl(link.url, item, what).then((objectUrl) => {
      a.removeAttribute("aria-busy");
      if (!objectUrl) return;
      a.href = objectUrl;
      a.dataset.ready = "1";
      a.click();
    });
  }

  /** A file fetched with this tab's seat, as an object URL kept with `item`; null (and a message) on failure. */
  async fetchObjectUrl(url, item, what) {
    const room = this.room;
    this.problem = "";
    this.$("recordings-status").textContent = `Fetching ${what}…`;
    let problem;
    try {
      const response = await fetch(url, { headers: this.headers() });
      if (response.ok) {
        const blob = await response.blob();
        if (this.items.get(item.stem) !== item) return null; // left the list (or the room) meanwhile
        const objectUrl = URL.createObjectURL(blob);
        item.urls.push(objectUrl);
        this.renderStatus();
        return objectUrl;
      }
      problem = problemText(response.status, what);
    } catch (err) {
      problem = `${what} could not be fetched: ${err.message || "the server did not answer"}.`;
    }
    if (room === this.room) {
      this.problem = problem;
      this.renderStatus();
    }
    return null;
  }

  revoke(item) {
    for (const url of item.urls) URL.revokeObjectURL(url);
    item.urls = [];
  }

  clearItems() {
    for (const item of this.items.values()) this.revoke(item);
    this.items.clear();
    this.$("recordings").replaceChildren();
  }

  /** Forget the room (left it, or joined another). */
  reset() {
    clearTimeout(this.timer);
    this.timer = null;
    this.awaiting = [];
    this.generation++;
    this.clearItems();
    this.room = null;
    this.recordings = [];
    this.membersOnly = false;
    this.problem = "";
    this.$("recordings-empty").hidden = true;
    this.$("recordings-status").textContent = "";
    this.$("recordings").removeAttribute("aria-busy");
  }
}
