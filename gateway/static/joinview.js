// The join form and the help around it: pre-filled from the room link and an
// earlier visit, validated with messages that say what is allowed, and the
// microphone help shown when the browser refuses the microphone, in the
// steps of this browser (browser.js).

import { MIC_STEPS, browserFamily } from "./browser.js";
import { normaliseRoom, validRoom } from "./protocol.js";

const $ = (id) => document.getElementById(id);

export class JoinView {
  /** `onJoin(form)` with {name, room, password, role}; `onListenInstead()` from the microphone help. */
  constructor({ constants, onJoin, onListenInstead, onRetryMic }) {
    this.constants = constants;
    this.onJoin = onJoin;
    this.onListenInstead = onListenInstead;
    this.onRetryMic = onRetryMic;
    this.latencyKnown = () => false;
  }

  bind() {
    const k = this.constants;
    if (k.max_name_chars) $("name").maxLength = k.max_name_chars;
    $("join-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const form = this.read();
      if (form) this.onJoin(form);
    });
    for (const id of ["name", "room"]) $(id).addEventListener("input", () => this.clearInvalid($(id)));
    for (const radio of document.querySelectorAll("input[name=role]")) radio.addEventListener("change", () => this.render());
    $("mic-listen").addEventListener("click", () => this.onListenInstead());
    $("mic-retry").addEventListener("click", () => this.onRetryMic());
  }

  prefill({ room, name, role }) {
    if (room) $("room").value = room;
    if (name) $("name").value = name;
    if (role === "spectator" || role === "singer") this.role = role;
    this.render();
  }

  get role() {
    return document.querySelector("input[name=role]:checked").value;
  }

  set role(value) {
    document.querySelector(`input[name=role][value=${value}]`).checked = true;
    this.render();
  }

  /** Put the cursor where the person has to type next. */
  focusFirstEmpty() {
    for (const id of ["name", "room"]) {
      if (!$(id).value.trim()) {
        $(id).focus();
        return;
      }
    }
    $("join").focus();
  }

  clearInvalid(input) {
    input.removeAttribute("aria-invalid");
    if ($("join-error").dataset.field === input.id) this.showError("");
  }

  invalid(input, text) {
    input.setAttribute("aria-invalid", "true");
    this.showError(text, input.id);
    input.focus();
    return null;
  }

  /** The form's values when they are valid; else shows what is wrong and returns null. */
  read() {
    const name = $("name").value.trim();
    const roomTyped = $("room").value.trim();
    const room = normaliseRoom(roomTyped);
    if (!name) return this.invalid($("name"), "Type your name, so the others know who is singing.");
    if (!roomTyped) return this.invalid($("room"), "Type the room's name (your organiser's link has it).");
    if (!validRoom(room)) {
      return this.invalid($("room"), `"${roomTyped}" cannot be a room name: use only letters, digits, - and _ (no spaces), at most 40.`);
    }
    return { name, room, password: $("password").value, role: this.role };
  }

  /** An error under the Join button (cleared by the next attempt and by joining). */
  showError(text, field = "") {
    const el = $("join-error");
    el.textContent = text;
    el.dataset.field = field;
  }

  setBusy(busy, text = "Join") {
    $("join").disabled = busy;
    $("join").textContent = text;
  }

  render() {
    const singer = this.role === "singer";
    $("calibration").classList.toggle("calibration-off", !singer);
    $("cal-listener").hidden = singer;
    $("join-hint").textContent = singer
      ? this.latencyKnown()
        ? "Use headphones while singing, so the microphone hears only you."
        : "Singers: measure your latency first (or enter it), or choose to only listen."
      : "Listeners hear everyone, from the last bucket.";
  }

  /** The browser refused the microphone: explain how to allow it (this browser's steps), offer to listen. */
  showMicHelp(err) {
    const missing = err && err.name === "NotFoundError";
    const help = MIC_STEPS[browserFamily(navigator.userAgent, navigator.maxTouchPoints)];
    $("mic-help-intro").textContent = help.intro;
    $("mic-help-steps").replaceChildren(
      ...help.steps.map((text) => {
        const li = document.createElement("li");
        li.textContent = text;
        return li;
      }),
    );
    $("mic-help-hint").textContent = help.hint;
    $("mic-help-title").textContent = missing ? "No microphone found" : "Your microphone is blocked";
    $("mic-help-why").textContent = missing
      ? "This computer has no microphone the browser can use, so you cannot sing yet."
      : "The browser did not let this page use your microphone, so you cannot sing yet.";
    $("mic-help").hidden = false;
    $("mic-listen").focus();
  }

  hideMicHelp() {
    $("mic-help").hidden = true;
  }
}
