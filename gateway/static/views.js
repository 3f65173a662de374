// Rendering helpers for the room: buckets, people, chat, meters. Plain DOM,
// no framework; every function takes the data it shows and fills elements,
// so stageview.js stays about what to show when.

import { bucketOf } from "./roomstore.js";

export { bucketOf };

/** Element builder: h("div", {class: "x", onclick: f}, child, "text", ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function seconds(samples, sampleRate) {
  return `${(samples / sampleRate).toFixed(1)} s`;
}

/** dBFS to a meter width in percent (−60 dB … 0 dB). */
export function levelPercent(db) {
  if (!Number.isFinite(db)) return 0;
  return Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
}

function chip(member, meId) {
  const cls = member.singer_id === meId ? "chip me" : "chip";
  const title = member.role === "spectator" ? "listening" : member.muted ? "muted" : "";
  return h("span", { class: cls, title }, member.name);
}

/** The buckets list: label and delay, who sits there, a join button named after its bucket. */
export function renderBuckets(list, room, meId, sampleRate, onJoin) {
  const { buckets, members } = room;
  const me = members.find((m) => m.singer_id === meId);
  const myBucket = me ? bucketOf(me, buckets) : null;
  const rows = [];
  for (let i = 0; i < buckets.n; i++) {
    const inside = members.filter((m) => bucketOf(m, buckets) === i);
    const role = i === 0 ? ", leader" : i === buckets.n - 1 ? ", listeners" : "";
    const mine = i === myBucket;
    rows.push(
      h(
        "li",
        { class: mine ? "bucket mine" : "bucket", dataset: { bucket: String(i) }, tabindex: mine ? "-1" : null },
        h("span", { class: "label" }, `Bucket ${i + 1}`, h("small", {}, `delay ${seconds(buckets.delays[i], sampleRate)}${role}`)),
        h("span", { class: "chips" }, inside.length ? inside.map((m) => chip(m, meId)) : h("span", { class: "chip empty" }, "nobody")),
        mine
          ? h("span", { class: "you" }, "you are here")
          : h("button", { type: "button", class: "small", "aria-label": `Join bucket ${i + 1}`, onclick: () => onJoin(i) }, "Join"),
      ),
    );
  }
  const custom = members.filter((m) => bucketOf(m, buckets) === null);
  if (custom.length) {
    rows.push(
      h(
        "li",
        { class: myBucket === null && me ? "bucket mine" : "bucket", tabindex: myBucket === null && me ? "-1" : null },
        h("span", { class: "label" }, "Custom", h("small", {}, "own delay")),
        h("span", { class: "chips" }, custom.map((m) => h("span", {}, chip(m, meId), ` ${seconds(m.delay, sampleRate)}`))),
        h("span"),
      ),
    );
  }
  list.replaceChildren(...rows);
}

/** A level meter: role=meter with its value, so assistive technology can read it. */
export function meter(label, cls = "meter") {
  return h(
    "div",
    { class: cls, role: "meter", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", "aria-valuetext": "silent" },
    h("div", { class: "level" }),
  );
}

/** Set a meter (the role=meter element) to `percent`, with words for screen readers. */
export function setMeter(el, percent, text = null) {
  const value = Math.round(percent);
  el.firstElementChild.style.width = `${value}%`;
  el.setAttribute("aria-valuenow", String(value));
  el.setAttribute("aria-valuetext", text ?? (value === 0 ? "silent" : `${value} percent`));
}

/** Where a member sits, in words: "bucket 2", or "own delay 7.5 s". */
export function placeOf(member, buckets, sampleRate) {
  const b = bucketOf(member, buckets);
  return b === null ? `own delay ${seconds(member.delay, sampleRate)}` : `bucket ${b + 1}`;
}

/** Everyone in the room, in delay order, with a level meter each (updated by `updateLevels`). */
export function renderPeople(list, room, meId, sampleRate) {
  const members = [...room.members].sort((a, b) => a.delay - b.delay || a.name.localeCompare(b.name));
  list.replaceChildren(
    ...members.map((m) =>
      h(
        "li",
        { class: m.connected === false ? "singer away" : "singer", dataset: { singer: m.singer_id } },
        h(
          "span",
          { class: "who" },
          m.name,
          m.singer_id === meId ? h("span", { class: "badge" }, "you") : null,
          m.singer_id === room.leader ? h("span", { class: "badge lead" }, "leader") : null,
          m.role === "spectator" ? h("span", { class: "badge" }, "listening") : null,
          m.muted ? h("span", { class: "badge" }, "muted") : null,
          m.connected === false ? h("span", { class: "badge" }, "reconnecting") : null,
          m.late ? h("span", { class: "badge", title: "their audio arrived too late for the next bucket" }, "connection slow") : null,
          h("small", { class: "where" }, placeOf(m, room.buckets, sampleRate)),
        ),
        m.role === "spectator" ? h("span") : meter(`${m.name}'s level`),
      ),
    ),
  );
}

export function updateLevels(list, levels) {
  for (const row of list.children) {
    const el = row.querySelector("[role=meter]");
    if (el) setMeter(el, levelPercent(levels[row.dataset.singer]));
  }
}

/** A chat line; an `action` line reads as a sentence ("Lis asks the leader to stop the song."). */
export function appendChat(log, { name, text, action = false }) {
  log.append(action ? h("li", { class: "action" }, h("b", {}, name), ` ${text}.`) : h("li", {}, h("b", {}, `${name}:`), text));
  while (log.children.length > 200) log.firstChild.remove();
  log.scrollTop = log.scrollHeight;
}

/**
 * The status line: a dot and a few short parts (a visual summary; not a live
 * region). A part is a string, or {text, cls}: a part with class "shrink" is
 * the one cut short (…) when the line is too long for a phone.
 */
export function renderStatus(el, { dot, parts }) {
  const nodes = dot ? [h("span", { class: `dot ${dot}`, "aria-hidden": "true" })] : [];
  parts.forEach((part, i) => {
    if (i) nodes.push(h("span", { class: "sep", "aria-hidden": "true" }, "·"));
    const { text, cls } = typeof part === "string" ? { text: part, cls: null } : part;
    nodes.push(h("span", { class: cls ? `part ${cls}` : "part" }, text));
  });
  el.replaceChildren(...nodes);
}
