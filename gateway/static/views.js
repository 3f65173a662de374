// Rendering of the room: buckets, singers, chat, meters. Plain DOM, no
// framework; every function takes the data it shows and returns or fills
// elements, so app.js stays about wiring.

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

/** Which bucket a member is in: their `bucket` field, else matched by delay, else null (custom). */
export function bucketOf(member, buckets) {
  if (Number.isInteger(member.bucket) && member.bucket >= 0 && member.bucket < buckets.n) return member.bucket;
  const i = buckets.delays.indexOf(member.delay);
  return i >= 0 ? i : null;
}

function chip(member, meId) {
  const cls = member.singer_id === meId ? "chip me" : "chip";
  const title = member.role === "spectator" ? "listening" : member.muted ? "muted" : "";
  return h("span", { class: cls, title }, member.name);
}

/** The buckets list: label and delay, who sits there, a join button. */
export function renderBuckets(list, room, meId, sampleRate, onJoin) {
  const { buckets, members } = room;
  const me = members.find((m) => m.singer_id === meId);
  const myBucket = me ? bucketOf(me, buckets) : null;
  const rows = [];
  for (let i = 0; i < buckets.n; i++) {
    const inside = members.filter((m) => bucketOf(m, buckets) === i);
    const role = i === 0 ? ", leader" : i === buckets.n - 1 ? ", listeners" : "";
    rows.push(
      h(
        "li",
        { class: i === myBucket ? "bucket mine" : "bucket", dataset: { bucket: String(i) } },
        h("span", { class: "label" }, `Bucket ${i + 1}`, h("small", {}, `${seconds(buckets.delays[i], sampleRate)}${role}`)),
        h("span", { class: "chips" }, inside.length ? inside.map((m) => chip(m, meId)) : h("span", { class: "chip empty" }, "nobody")),
        i === myBucket
          ? h("span", { class: "hint" }, "you")
          : h("button", { type: "button", class: "small", onclick: () => onJoin(i) }, "Join"),
      ),
    );
  }
  const custom = members.filter((m) => bucketOf(m, buckets) === null);
  if (custom.length) {
    rows.push(
      h(
        "li",
        { class: myBucket === null && me ? "bucket mine" : "bucket" },
        h("span", { class: "label" }, "Custom", h("small", {}, "own delay")),
        h("span", { class: "chips" }, custom.map((m) => h("span", {}, chip(m, meId), ` ${seconds(m.delay, sampleRate)}`))),
        h("span"),
      ),
    );
  }
  list.replaceChildren(...rows);
}

/** The singer list with a level meter each; meters are updated by `updateLevels`. */
export function renderSingers(list, room, meId, sampleRate) {
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
          m.late ? h("span", { class: "badge", title: "audio arrived too late for the next bucket" }, `late ${m.late}`) : null,
          h("small", {}, seconds(m.delay, sampleRate)),
        ),
        h("div", { class: "meter" }, h("div", { class: "level" })),
      ),
    ),
  );
}

export function updateLevels(list, levels) {
  for (const row of list.children) {
    const db = levels[row.dataset.singer];
    row.querySelector(".level").style.width = `${levelPercent(db)}%`;
  }
}

export function appendChat(log, { name, text }) {
  log.append(h("li", {}, h("b", {}, `${name}:`), text));
  while (log.children.length > 200) log.firstChild.remove();
  log.scrollTop = log.scrollHeight;
}

/** A status line built from parts (strings or [text, cls] pairs for the dot). */
export function renderStatus(el, { dot, parts }) {
  const nodes = [h("span", { class: `dot ${dot}` })];
  parts.forEach((part, i) => {
    if (i) nodes.push(h("span", { class: "sep" }, "·"));
    nodes.push(part);
  });
  el.replaceChildren(...nodes);
}
