// The room as this page knows it: the latest `state` (docs/protocol.md, *Room
// state*) with the latest `material` (and the `cues` appended to it since) shown in it
// as `state.material`, who "me"
// is, and the facts the views show, derived in one place so that every
// sentence on the page agrees with every other. Pure: no DOM, no socket; views
// subscribe with `onChange`.

/** The material shown before the first `material` message (an empty room's). */
const NO_MATERIAL = Object.freeze({ tracks: [], lyrics: "", image: null, cues: [], previous_cues: [], older_cues: [] });

/** Which bucket a member is in: their `bucket` field, else matched by delay, else null (custom). */
export function bucketOf(member, buckets) {
  if (Number.isInteger(member.bucket) && member.bucket >= 0 && member.bucket < buckets.n) return member.bucket;
  const i = buckets.delays.indexOf(member.delay);
  return i >= 0 ? i : null;
}

/**
 * Why song `song.number` ended, in words: from `song.ended` (docs/protocol.md,
 * *Room state*), naming who stopped it; `member(id)` finds a member, `you(m)`
 * says "You" for this page's member and the name otherwise.
 */
export function endedLine(song, member, you) {
  const n = song.number;
  const stopper = song.stopped_by ? member(song.stopped_by) : null;
  switch (song.ended) {
    case "track":
      return `Song ${n} ended with its backing track.`;
    case "stopped":
      return stopper ? `${you(stopper)} stopped song ${n}.` : `Song ${n} was stopped by its leader, who has since left.`;
    case "halted":
      return stopper ? `${you(stopper)} halted song ${n}.` : `Song ${n} was halted by its leader, who has since left.`;
    case "leader_left":
      return `Song ${n} ended: its leader left the room.`;
    default:
      // A state without `ended` (a server from before it said why): only a stop is known.
      if (stopper) return `${you(stopper)} stopped song ${n}.`;
      return `Song ${n} ended.`;
  }
}

/**
 * The tap a listener (``role: "listener"``: no member of the room) hears: every voice as the
 * last occupied bucket hears it, the rule of gateway/listeners.py (the gateway sends the
 * listener only that tap; `heardDelay` follows what actually arrives).
 */
export function listenerDelay(state, maxDelay = 115 * 48000) {
  const spacing = state.buckets.spacing;
  const heard = state.members.map((m) => (m.role === "spectator" ? m.delay : m.delay + spacing));
  return Math.min(heard.length ? Math.max(...heard) : state.buckets.n * spacing, maxDelay);
}

export class RoomStore {
  constructor() {
    this.state = null;
    this.received = null; // the latest `state` as the server sent it (no `material`)
    this.material = null; // the latest `material` message's material
    this.materialVersion = null; // and its version
    this.meId = null;
    this.meRole = null;
    this.heardDelay = null;
    this.listeners = new Set();
  }

  /** Call `fn(store, previous)` after every change; returns an unsubscribe function. */
  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Forget the room (left it, or back to the form). */
  reset() {
    const previous = this.state;
    this.state = null;
    this.received = null;
    this.material = null;
    this.materialVersion = null;
    this.meId = null;
    this.meRole = null;
    this.heardDelay = null;
    this.emit(previous);
  }

  /** Who this page is: a member's singer id, or a listener's id (`role` "listener"). */
  setMe(singerId, role = null) {
    this.meId = singerId;
    this.meRole = role;
    this.heardDelay = null;
  }

  /** A listener hears the tap its audio arrives on (see `listenerDelay`). */
  setHeardDelay(delay) {
    if (this.meRole !== "listener" || delay === this.heardDelay) return;
    this.heardDelay = delay;
    this.emit(this.state);
  }

  /** Apply a room state; older versions than the one held are ignored. Returns true when applied. */
  apply(state) {
    if (!state || typeof state !== "object") return false;
    const held = this.state ? this.state.version : null;
    if (typeof held === "number" && typeof state.version === "number" && state.version < held) return false;
    const previous = this.state;
    this.received = state;
    this.state = this.withMaterial(state);
    this.emit(previous);
    return true;
  }

  /**
   * Apply a `material` message ({version, material}): the room's material, sent on its own
   * only when it changes (a `state` names its `material_version` instead). It is shown as
   * `state.material` from now on, whichever of the two arrived first. Returns true when kept.
   */
  applyMaterial(msg) {
    if (!msg || typeof msg.material !== "object" || msg.material === null) return false;
    this.material = msg.material;
    this.materialVersion = typeof msg.version === "number" ? msg.version : null;
    if (this.received === null) return true;
    const previous = this.state;
    this.state = this.withMaterial(this.received);
    this.emit(previous);
    return true;
  }

  /**
   * Apply a `cues` message ({version, base, start, cues}): lyric cues appended to the held
   * material's `cues` (the leader advancing the line), sent instead of the whole material to
   * a page holding version `base`. Applied only on top of that version (the cues from index
   * `start` on are replaced by `cues`, and the material's version becomes `version`); any
   * other is ignored (the gateway sends a page the whole `material` unless it holds `base`).
   * Returns true when applied.
   */
  applyCues(msg) {
    if (!msg || this.material === null || !Array.isArray(msg.cues)) return false;
    if (typeof msg.version !== "number" || msg.base !== this.materialVersion) return false;
    const held = Array.isArray(this.material.cues) ? this.material.cues : [];
    if (!Number.isInteger(msg.start) || msg.start < 0 || msg.start > held.length) return false;
    return this.applyMaterial({ version: msg.version, material: { ...this.material, cues: [...held.slice(0, msg.start), ...msg.cues] } });
  }

  /**
   * Whether the held material is (at least) the one the held state names (false until it
   * arrives). A change of the material alone comes without a state, so the material held
   * may be newer than the state's `material_version`.
   */
  get materialCurrent() {
    if (this.received === null) return false;
    if (!("material_version" in this.received)) return true;
    return typeof this.materialVersion === "number" && this.materialVersion >= this.received.material_version;
  }

  withMaterial(state) {
    // A server from before the `material` message sent the material in every state.
    if ("material" in state) return state;
    return { ...state, material: this.material ?? NO_MATERIAL };
  }

  emit(previous) {
    for (const fn of this.listeners) fn(this, previous);
  }

  get joined() {
    return this.state !== null && this.meId !== null;
  }

  get members() {
    return this.state ? this.state.members : [];
  }

  member(singerId) {
    return this.members.find((m) => m.singer_id === singerId) ?? null;
  }

  me() {
    if (this.meId === null) return null;
    if (this.meRole === "listener" && this.state) {
      // No member record: a listener is described by the tap it hears.
      const delay = this.heardDelay ?? listenerDelay(this.state);
      return { singer_id: this.meId, name: "", role: "listener", delay, bucket: null, hears: "full", mix: "full", muted: false, connected: true, soloed: false };
    }
    return this.member(this.meId);
  }

  leader() {
    return this.state && this.state.leader ? this.member(this.state.leader) : null;
  }

  get isLeader() {
    return this.state !== null && this.meId !== null && this.state.leader === this.meId;
  }

  get amSinger() {
    const me = this.me();
    return me !== null && me.role === "singer";
  }

  get running() {
    return Boolean(this.state && this.state.song && this.state.song.running);
  }

  /** Bucket index of `member` (default: me), or null for a custom delay. */
  bucketOf(member = this.me()) {
    return member && this.state ? bucketOf(member, this.state.buckets) : null;
  }

  /** Who is here: connected singers and listeners, and those reconnecting. */
  counts() {
    let singers = 0;
    let listeners = 0;
    let away = 0;
    for (const m of this.members) {
      if (m.connected === false) away++;
      else if (m.role === "spectator") listeners++;
      else singers++;
    }
    return { singers, listeners, away, total: this.members.length };
  }

  /** Nobody else is in the room (it was empty, or was just created by this join). */
  get alone() {
    return this.joined && this.members.every((m) => m.singer_id === this.meId);
  }

  /**
   * The song in words a person needs, from this member's point of view:
   * `{phase, text, stoppedBy}` where phase is "running", "stopped" (a song
   * ended and says by whom), "ready" (a leader, no song yet) or "no-leader".
   */
  song() {
    const state = this.state;
    if (!state) return { phase: "none", text: "" };
    const song = state.song || {};
    const leader = this.leader();
    const you = (m) => (m && m.singer_id === this.meId ? "You" : m ? m.name : null);
    if (song.running) {
      const by = leader ? (leader.singer_id === this.meId ? "you" : leader.name) : "nobody";
      return { phase: "running", text: `Song ${song.number} is running, led by ${by}.` };
    }
    let ended = null;
    if (song.number > 0 && typeof song.end_pos === "number") ended = endedLine(song, (id) => this.member(id), you);
    let next;
    if (leader && leader.singer_id === this.meId) next = "You lead: press Start song when everyone is in place.";
    else if (leader) next = `${leader.name} leads; waiting for the next song.`;
    else if (this.amSinger) next = "Nobody leads yet. Press Lead to lead a song.";
    else next = "Nobody leads yet; a singer can choose to lead.";
    return { phase: ended ? "stopped" : leader ? "ready" : "no-leader", text: ended ? `${ended} ${next}` : next };
  }
}
