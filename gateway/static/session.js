// A member's session in a room: join (resuming the saved seat when there is
// one), keep the clock in sync with ping/pong, reconnect after a drop for as
// long as the server keeps the seat (`reconnect_grace_s`, served with the
// constants), and leave. It owns the Connection; the page sees only events.

import { Connection } from "./connection.js";
import { ProtocolError, helloFields } from "./protocol.js";
import { clearSeat, loadSeat, saveSeat } from "./seat.js";

const PING_BURST = 8;
const PING_BURST_MS = 150;
const PING_MS = 2000;
const PING_FORGET_MS = 10_000;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 4000;

const nowMs = () => performance.timeOrigin + performance.now();

/**
 * `handlers`: `welcome(msg, {resumed})`, `state(state)`, `material(msg)` (it may
 * come before `welcome`: the server sends it before the first state naming it), `cues(msg)`
 * (lyric cues appended to the material this page holds), `chat(msg)`,
 * `levels(levels)`, `recording(msg)`, `audio(frame)`, `badFrame()`, `error(msg)` (a non-fatal
 * error without a req), `pong(summary)`, `status(status)` where status is
 * "connected", "reconnecting" or "idle", and `lost(error)` (the seat could not
 * be kept: back to the form).
 */
export class Session {
  constructor({ url, clock, graceMs, handlers }) {
    this.url = url;
    this.clock = clock;
    this.graceMs = graceMs;
    this.handlers = handlers;
    this.conn = null;
    this.seat = null;
    this.status = "idle";
    this.pings = new Map();
    this.pingId = 0;
    this.pingTimer = null;
    this.leaving = false;
    this.fatal = null;
  }

  get isOpen() {
    return this.conn !== null && this.conn.isOpen;
  }

  emit(type, ...args) {
    const handler = this.handlers[type];
    if (handler) handler(...args);
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.emit("status", status);
  }

  /**
   * Join `room` as `name`/`role`. When this tab holds a seat in that room it is
   * resumed (same singer, same bucket); an expired one is dropped and the join
   * starts afresh. Rejects with ProtocolError when the server refuses.
   */
  async join({ room, name, role, password, codec }) {
    const saved = loadSeat();
    const resume = saved && saved.room === room && saved.singer ? { singer: saved.singer, token: saved.token } : null;
    this.seat = { room, name, role, password: password || "", codec };
    try {
      return await this.connect(resume);
    } catch (err) {
      if (!(resume && err instanceof ProtocolError && err.code === "bad_resume")) {
        this.seat = null;
        throw err;
      }
      clearSeat();
      return await this.connect(null);
    }
  }

  async connect(resume) {
    const seat = this.seat;
    this.fatal = null;
    const conn = new Connection(this.url, {
      pong: (m) => this.onPong(m),
      state: (m) => this.emit("state", m.state),
      material: (m) => this.emit("material", m),
      cues: (m) => this.emit("cues", m),
      chat: (m) => this.emit("chat", m),
      levels: (m) => this.emit("levels", m.levels || {}),
      recording: (m) => this.emit("recording", m),
      error: (m) => {
        if (m.fatal) this.fatal = m;
        else this.emit("error", m);
      },
      audio: (frame) => this.emit("audio", frame),
      badFrame: () => this.emit("badFrame"),
      close: () => this.onClose(conn),
    });
    const welcome = await conn.open(helloFields({ ...seat, resume }));
    if (this.seat !== seat) {
      conn.close();
      throw new ProtocolError("closed", "left while joining");
    }
    this.conn = conn;
    // The server names the room in lower case ("Choir" joins "choir").
    seat.room = welcome.room ?? seat.room;
    saveSeat({ ...seat, singer: welcome.singer, token: welcome.token });
    this.emit("welcome", welcome, { resumed: resume !== null && resume.singer === welcome.singer });
    this.setStatus("connected");
    this.startPings();
    return welcome;
  }

  onClose(conn) {
    if (conn !== this.conn) return;
    this.stopPings();
    this.conn = null;
    if (this.leaving || !this.seat) return;
    if (this.fatal) {
      const err = new ProtocolError(this.fatal.code, this.fatal.message, true);
      this.fatal = null;
      this.end(err);
      return;
    }
    this.reconnect().catch((err) => this.end(err));
  }

  end(err) {
    this.seat = null;
    this.setStatus("idle");
    this.emit("lost", err);
  }

  async reconnect() {
    this.setStatus("reconnecting");
    const since = Date.now();
    let wait = RETRY_FIRST_MS;
    while (this.seat && Date.now() - since < this.graceMs) {
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(RETRY_MAX_MS, wait * 2);
      if (!this.seat) return;
      const saved = loadSeat();
      try {
        await this.connect(saved && saved.singer ? { singer: saved.singer, token: saved.token } : null);
        return;
      } catch (err) {
        if (err instanceof ProtocolError && err.code === "bad_resume") {
          // The server gave the seat up (away longer than its grace): join afresh.
          clearSeat();
          continue;
        }
        if (err instanceof ProtocolError && err.fatal) throw err;
      }
    }
    if (this.seat) throw new ProtocolError("closed", "lost the connection to the server");
  }

  /** Leave for good: the server frees the seat at once. */
  async leave() {
    this.leaving = true;
    const conn = this.conn;
    this.seat = null;
    try {
      if (conn && conn.isOpen) await conn.request("leave").catch(() => {});
      if (conn) conn.close();
    } finally {
      clearSeat();
      this.stopPings();
      this.conn = null;
      this.leaving = false;
      this.setStatus("idle");
    }
  }

  /** A control message with a `req`; rejects with ProtocolError when refused. */
  request(type, fields = {}) {
    if (!this.conn) return Promise.reject(new ProtocolError("closed", "not connected"));
    return this.conn.request(type, fields);
  }

  send(type, fields = {}) {
    return this.conn ? this.conn.send(type, fields) : false;
  }

  sendAudio(buffer) {
    return this.conn ? this.conn.sendAudio(buffer) : false;
  }

  // --- clock -------------------------------------------------------------------

  startPings() {
    this.stopPings();
    let sent = 0;
    const tick = () => {
      this.sendPing();
      sent++;
      this.pingTimer = setTimeout(tick, sent < PING_BURST ? PING_BURST_MS : PING_MS);
    };
    tick();
  }

  stopPings() {
    if (this.pingTimer !== null) clearTimeout(this.pingTimer);
    this.pingTimer = null;
    this.pings.clear();
  }

  sendPing() {
    if (!this.conn) return;
    const id = ++this.pingId;
    const t = nowMs();
    for (const [old, sentAt] of this.pings) if (t - sentAt > PING_FORGET_MS) this.pings.delete(old);
    this.pings.set(id, t);
    this.conn.send("ping", { id, t });
  }

  onPong(msg) {
    const sentAt = this.pings.get(msg.id);
    if (sentAt === undefined || typeof msg.clock !== "number") return;
    this.pings.delete(msg.id);
    const first = !this.clock.ready;
    const summary = this.clock.add(sentAt, nowMs(), msg.clock);
    this.emit("pong", summary, { first });
  }
}
