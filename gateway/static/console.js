// The mixing console: faders (mic gain in dB), solo, the mix you hear, the
// leader's boost and rounds. Pure rendering plus the requests it sends: it
// is given the room state, your id and a `request(type, fields)` function
// (docs/protocol.md: set_gain, solo, set_mix, set_leader_boost, set_rounds).

import { h } from "./views.js";

/** The fader's range: its lowest step means "off" (−∞ dB, sent as null). */
export const FADER_MIN_DB = -40;
export const FADER_MAX_DB = 12;
const OFF = FADER_MIN_DB - 1;

/** A fader value (dB or null for off) as shown to people. */
export function gainLabel(gainDb) {
  if (gainDb === null || gainDb === undefined || gainDb <= OFF) return "off";
  const rounded = Math.round(gainDb * 10) / 10;
  return `${rounded > 0 ? "+" : ""}${rounded} dB`;
}

/** The slider position for a gain (off and anything below the range sit at the bottom). */
export function sliderValue(gainDb) {
  if (gainDb === null || gainDb === undefined) return OFF;
  return Math.max(OFF, Math.min(FADER_MAX_DB, gainDb));
}

/** What a slider position sends: null (off) at the bottom, else dB. */
export function gainFromSlider(value) {
  const db = Number(value);
  return db <= OFF ? null : db;
}

function fader(member, editable, request) {
  const label = h("output", { class: "fader-value", "aria-hidden": "true" }, gainLabel(member.gain_db));
  const input = h("input", {
    type: "range",
    min: String(OFF),
    max: String(FADER_MAX_DB),
    step: "1",
    value: String(sliderValue(member.gain_db)),
    disabled: !editable,
    "aria-label": `Microphone level of ${member.name}`,
    "aria-valuetext": gainLabel(member.gain_db),
    dataset: { target: member.singer_id },
    oninput: (event) => {
      const gain = gainFromSlider(event.target.value);
      label.textContent = gainLabel(gain);
      event.target.setAttribute("aria-valuetext", gainLabel(gain));
    },
    onchange: (event) => request("set_gain", { target: member.singer_id, gain_db: gainFromSlider(event.target.value) }),
  });
  return h("span", { class: "fader" }, input, label);
}

function soloButton(member, request) {
  return h(
    "button",
    {
      type: "button",
      class: member.soloed ? "small on" : "small",
      "aria-pressed": member.soloed ? "true" : "false",
      "aria-label": `Solo ${member.name}`,
      onclick: () => request("solo", { target: member.singer_id, on: !member.soloed }),
    },
    "Solo",
  );
}

/**
 * Fill `container` with the console for `room` as seen by `meId`. The leader
 * gets a fader and a solo button per singer, the boost and the rounds; every
 * other member their own fader and the choice of mix.
 */
export function renderConsole(container, room, meId, request) {
  const me = room.members.find((m) => m.singer_id === meId);
  if (!me) {
    container.replaceChildren();
    return;
  }
  // Never rebuild under a slider someone is dragging.
  if (container.contains(document.activeElement) && document.activeElement.type === "range") return;
  const leading = room.leader === meId;
  const singers = room.members.filter((m) => m.role === "singer" && m.connected);
  const rows = (leading ? singers : singers.filter((m) => m.singer_id === meId)).map((m) =>
    h(
      "li",
      { class: "console-row" },
      h("span", { class: "name" }, m.singer_id === meId ? `${m.name} (you)` : m.name),
      fader(m, true, request),
      leading ? soloButton(m, request) : m.soloed ? h("span", { class: "hint" }, "solo") : null,
    ),
  );
  const parts = [];
  if (rows.length) parts.push(h("ul", { class: "console", "aria-label": "Microphone levels" }, rows));
  const soloing = room.solo && room.solo.length > 0;
  parts.push(
    h(
      "fieldset",
      { class: "mix-choice" },
      h("legend", {}, "You hear"),
      ...["full", "solo"].map((mix) =>
        h(
          "label",
          {},
          h("input", {
            type: "radio",
            name: "mix",
            value: mix,
            checked: me.mix === mix,
            onchange: () => request("set_mix", { mix }),
          }),
          mix === "full" ? " everyone" : " the soloed singers",
        ),
      ),
      me.mix === "solo" && !soloing ? h("small", { class: "hint" }, "Nobody is soloed: you hear everyone.") : null,
    ),
  );
  if (leading) parts.push(leaderControls(room, request));
  container.replaceChildren(...parts);
}

function leaderControls(room, request) {
  const song = room.song;
  const rounds = song.rounds || { bpm: 120, beats: 4, repeats: 0 };
  const boost = h("input", {
    type: "number",
    min: "0",
    max: "12",
    step: "1",
    value: String(song.leader_boost_db ?? 6),
    "aria-label": "Leader boost in dB",
    onchange: (event) => request("set_leader_boost", { boost_db: Number(event.target.value) }),
  });
  const field = (name, label, value, min, max) =>
    h("label", {}, `${label} `, h("input", { type: "number", name, min: String(min), max: String(max), step: "1", value: String(value) }));
  const form = h(
    "form",
    {
      class: "rounds",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        request("set_rounds", {
          bpm: Number(data.get("bpm")),
          beats: Number(data.get("beats")),
          repeats: Number(data.get("repeats")),
        });
      },
    },
    h("span", { class: "label" }, "Rounds"),
    field("bpm", "bpm", rounds.bpm, 20, 300),
    field("beats", "beats per repeat", rounds.beats, 1, 64),
    field("repeats", "repeats", rounds.repeats, 0, 20),
    h("button", { type: "submit", class: "small", disabled: song.running }, "Set"),
    song.running ? h("small", { class: "hint" }, "Change rounds between songs.") : null,
  );
  return h("div", { class: "leader-controls" }, h("label", {}, "Your voice louder by ", boost, " dB"), form);
}
