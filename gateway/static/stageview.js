// The room on screen: the room card (invite link, "nobody else here"), the
// song card, buckets, microphone and playback meters, people, chat, the
// status line and the Details panel. Everything shown is derived from the
// room store on every change, so no sentence outlives the state it describes.
// Changes a person cares about (a song starts or stops, you moved, someone
// came or went) are announced once through a polite live region.

import { renderConsole } from "./console.js";
import { listenLink, roomLink } from "./seat.js";
import * as views from "./views.js";

const $ = (id) => document.getElementById(id);

/** The chat line a member sends with "Ask the leader to stop". */
export const ASK_STOP_TEXT = "asks the leader to stop the song";

/** What changed between two room states, in words for the live region (pure). */
export function changesToAnnounce(store, previous) {
  const state = store.state;
  if (!state || !previous) return [];
  const out = [];
  const name = (id) => {
    const m = store.member(id) ?? previous.members.find((x) => x.singer_id === id);
    return m ? (id === store.meId ? "you" : m.name) : "someone";
  };
  const before = new Map(previous.members.map((m) => [m.singer_id, m]));
  const now = new Map(state.members.map((m) => [m.singer_id, m]));
  for (const [id, m] of now) if (!before.has(id) && id !== store.meId) out.push(`${m.name} joined.`);
  for (const [id, m] of before) if (!now.has(id) && id !== store.meId) out.push(`${m.name} left.`);
  if (state.leader !== previous.leader && state.leader) {
    out.push(state.leader === store.meId ? "You lead now." : `${name(state.leader)} leads now.`);
  }
  const wasRunning = Boolean(previous.song && previous.song.running);
  if (store.running && !wasRunning) out.push(`Song ${state.song.number} started.`);
  if (!store.running && wasRunning) out.push(store.song().text.split(".")[0] + ".");
  const me = store.me();
  const mineBefore = before.get(store.meId);
  if (me && mineBefore && me.delay !== mineBefore.delay) {
    const b = store.bucketOf(me);
    out.push(b === null ? "You now have a custom delay." : `You are now in bucket ${b + 1}.`);
  }
  return out;
}

export class StageView {
  /**
   * `actions`: request(type, fields) → Promise, leave(), setMicMode(mode),
   * chat(text), onDetailsToggle(open).
   */
  constructor({ store, sampleRate, actions }) {
    this.store = store;
    this.sampleRate = sampleRate;
    this.actions = actions;
    this.role = null;
    this.room = null;
    this.pendingFocus = null;
    this.askedStop = false;
    this.stopRequests = new Set();
    this.levels = {};
    store.onChange((s, previous) => this.onRoomChange(previous));
  }

  bind() {
    const act = (id, type, focusNext) =>
      $(id).addEventListener("click", async () => {
        this.pendingFocus = focusNext;
        const ok = await this.actions.request(type);
        if (!ok) this.pendingFocus = null;
        this.render();
      });
    act("lead", "lead", "start");
    act("start", "start", "stop");
    act("stop", "stop", "start");
    $("ask-stop").addEventListener("click", () => {
      if (this.actions.chat(ASK_STOP_TEXT)) {
        this.askedStop = true;
        const leader = this.store.leader();
        this.announce(`You asked ${leader ? leader.name : "the leader"} to stop.`);
        this.pendingFocus = "chat-text";
        this.render();
      }
    });
    $("leave").addEventListener("click", () => this.actions.leave());
    $("copy-invite").addEventListener("click", () => this.copyInvite());
    $("custom-delay").addEventListener("submit", (e) => {
      e.preventDefault();
      const delay = Number($("delay-s").value);
      if ($("delay-s").value === "" || !(delay > 0)) return;
      this.pendingFocus = { bucket: null };
      this.actions.request("set_delay", { delay_s: delay }).then((ok) => {
        if (!ok) this.pendingFocus = null;
      });
    });
    $("chat-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = $("chat-text").value.trim();
      if (text && this.actions.chat(text)) $("chat-text").value = "";
    });
    for (const radio of document.querySelectorAll("input[name=mic]")) {
      radio.addEventListener("change", () => this.actions.setMicMode(radio.value));
    }
    $("details").addEventListener("toggle", () => this.actions.onDetailsToggle($("details").open));
  }

  /** Enter the room view for `room` as `role`. */
  show({ room, role }) {
    if (room !== this.room) {
      // A new room (not a reconnect to the same one): start its chat afresh.
      this.askedStop = false;
      this.stopRequests.clear();
      $("chat-log").replaceChildren();
    }
    this.room = room;
    this.role = role;
    $("room-name").textContent = room;
    $("invite-link").value = roomLink(room);
    $("listen-link").value = listenLink(room);
    $("chat-form").hidden = role === "listener";
    for (const el of document.querySelectorAll(".singer-only")) el.hidden = role !== "singer";
    $("mic-title").textContent = role === "singer" ? "Your microphone" : "Listening";
    const entering = $("stage").hidden;
    $("setup").hidden = true;
    $("stage").hidden = false;
    // The form may have been scrolled far down (a phone): the room starts at its top, with the song.
    if (entering) window.scrollTo(0, 0);
    this.render();
  }

  hide() {
    this.room = null;
    $("chat-log").replaceChildren();
    $("stage").hidden = true;
    $("setup").hidden = false;
  }

  announce(text) {
    const el = $("announcer");
    // Clearing first makes a repeated sentence be read again.
    el.textContent = "";
    setTimeout(() => (el.textContent = text), 50);
  }

  onRoomChange(previous) {
    if (!this.room) return;
    const store = this.store;
    if (!store.running) {
      this.askedStop = false;
      this.stopRequests.clear();
    }
    const said = changesToAnnounce(store, previous);
    if (said.length) this.announce(said.join(" "));
    this.render();
  }

  onChat(msg) {
    views.appendChat($("chat-log"), { ...msg, action: msg.text === ASK_STOP_TEXT });
    const store = this.store;
    if (msg.text === ASK_STOP_TEXT && store.isLeader && store.running && msg.singer !== store.meId) {
      this.stopRequests.add(msg.name);
      this.announce(`${msg.name} asks you to stop the song.`);
      this.render();
    }
  }

  render() {
    const store = this.store;
    const state = store.state;
    if (!this.room || !state) return;
    const singer = this.role === "singer";
    const running = store.running;
    const isLeader = store.isLeader;

    // Between songs the microphone reaches nobody; say so rather than let the meter suggest otherwise.
    $("mic-hint").textContent = running ? "" : "The others hear your microphone only while a song runs.";

    // Room card.
    const alone = $("alone");
    alone.hidden = !store.alone;
    alone.textContent = store.alone
      ? `Nobody else is in room "${state.room}" yet. If your choir should be here, check the room name with whoever invited you; to bring people in, send them the invite link.`
      : "";

    // Song card: who may do what, and what happened last.
    const song = store.song();
    const status = $("song-status");
    if (song.phase === "running") status.replaceChildren(views.h("span", { class: "live" }, "● Singing"), " ", song.text);
    else status.textContent = song.text;
    const requests = [...this.stopRequests];
    if (isLeader && running && requests.length) {
      status.append(views.h("span", { class: "request" }, ` ${requests.join(", ")} ${requests.length > 1 ? "ask" : "asks"} you to stop the song.`));
    }
    if (!isLeader && running && this.askedStop) {
      const leader = store.leader();
      status.append(views.h("span", { class: "request" }, ` You asked ${leader ? leader.name : "the leader"} to stop.`));
    }
    $("lead").hidden = !singer || isLeader;
    $("lead").disabled = running;
    $("start").hidden = !isLeader;
    $("stop").hidden = !isLeader;
    $("start").disabled = running;
    $("stop").disabled = !running;
    // The one the leader needs next looks like it.
    $("start").classList.toggle("primary", !running);
    $("stop").classList.toggle("primary", running);
    $("ask-stop").hidden = isLeader || !running || !state.leader;
    $("ask-stop").disabled = this.askedStop;
    // The leader's cue beside the lyrics; the page's order (style.css) follows who you are and the song.
    const lyrics = Boolean(state.material && state.material.lyrics);
    $("cue-row").hidden = !isLeader || !lyrics;
    $("next-line").disabled = !running;
    $("cue-hint").textContent = running ? "or Page Down: each bucket sees the line change when its audio gets there." : "Start the song to move through the lines.";
    $("material-title").textContent = isLeader ? "Song material" : "Backing track and metronome";
    $("stage").classList.toggle("leading", isLeader);
    $("stage").classList.toggle("running", running);

    views.renderBuckets($("buckets"), state, store.meId, this.sampleRate, (bucket) => {
      this.pendingFocus = { bucket };
      this.actions.request("join_bucket", { bucket }).then((ok) => {
        if (!ok) this.pendingFocus = null;
      });
    });
    views.renderPeople($("people"), state, store.meId, this.sampleRate);
    renderConsole($("console"), state, store.meId, (type, fields) => this.actions.request(type, fields));
    views.updateLevels($("people"), this.levels);
    const c = store.counts();
    const parts = [];
    if (c.singers || !c.listeners) parts.push(`${c.singers} ${c.singers === 1 ? "singer" : "singers"}`);
    if (c.listeners) parts.push(`${c.listeners} ${c.listeners === 1 ? "listener" : "listeners"}`);
    if (c.away) parts.push(`${c.away} reconnecting`);
    $("people-count").textContent = `(${parts.join(", ")})`;
    this.restoreFocus();
  }

  /**
   * After an action re-renders the controls, put focus on the control that
   * comes next (`pendingFocus`: an element id, or {bucket} for your new row
   * in the bucket list once the room state shows you there).
   */
  restoreFocus() {
    const target = this.pendingFocus;
    if (!target) return;
    let el;
    if (typeof target === "object") {
      const me = this.store.me();
      if (!me || this.store.bucketOf(me) !== target.bucket) return;
      el = document.querySelector("#buckets li.mine");
    } else {
      el = $(target);
    }
    if (!el || el.hidden || el.disabled) return;
    this.pendingFocus = null;
    el.focus();
  }

  setLevels(levels) {
    this.levels = levels;
    views.updateLevels($("people"), levels);
  }

  setMicLevel(percent) {
    views.setMeter($("mic-meter"), percent);
  }

  setHealth(health) {
    const meter = $("health-meter");
    meter.className = `meter health ${health.level}`;
    views.setMeter(meter, health.percent, health.text || "no audio");
    $("health-text").textContent = health.text;
  }

  /** The status line: connection, room and your place; nothing before you join. */
  renderStatus(sessionStatus) {
    const parts = [];
    let dot = null;
    const store = this.store;
    if (sessionStatus === "connected" && this.room) {
      dot = "ok";
      // The room name is the part cut short on a narrow screen, never your bucket.
      parts.push({ text: `In room ${this.room}`, cls: "shrink" });
      const me = store.me();
      if (me && store.state) {
        const b = store.bucketOf(me);
        parts.push(b === null ? "custom delay" : `bucket ${b + 1} of ${store.state.buckets.n}`);
      }
    } else if (sessionStatus === "reconnecting") {
      dot = "wait";
      parts.push("Connection lost: reconnecting…");
    } else if (sessionStatus === "connecting") {
      dot = "wait";
      parts.push("Joining…");
    }
    views.renderStatus($("status"), { dot, parts });
  }

  async copyInvite() {
    const input = $("invite-link");
    let copied = false;
    try {
      await navigator.clipboard.writeText(input.value);
      copied = true;
    } catch {
      // No clipboard permission: select the link so that Ctrl+C copies it.
      input.select();
    }
    const button = $("copy-invite");
    button.textContent = copied ? "Copied" : "Press Ctrl+C to copy";
    this.announce(copied ? "Invite link copied." : "The invite link is selected: press Ctrl+C to copy it.");
    setTimeout(() => (button.textContent = "Copy invite link"), 3000);
  }
}
