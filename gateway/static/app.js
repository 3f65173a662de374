// The page: wires the form, calibration, connection, audio and views.
// Protocol: docs/protocol.md. Constants come from GET /api/constants.
//
// URL parameters (all optional, for links shared with a choir):
//   room, name, role=singer|spectator  pre-fill the join form
//   latency_ms=N    use a known round-trip latency instead of measuring it
//   codec=pcm16     do not use Opus even when the browser has it
//   debug=1         open the occupancy chart

import { AudioEngine } from "./audio.js";
import { runLatencyCalibration, runVolumeCalibration } from "./calibration.js";
import { ClockEstimator } from "./clock.js";
import { DownstreamDecoder, UpstreamEncoder, chooseCodec } from "./codec.js";
import { Connection, ProtocolError } from "./connection.js";
import { installDebugHook } from "./debug.js";
import { OccupancyChart } from "./occupancy.js";
import * as views from "./views.js";

const $ = (id) => document.getElementById(id);
const nowMs = () => performance.timeOrigin + performance.now();

const CALIBRATION_KEY = "bb.calibration";
const resumeKey = (room) => `bb.resume.${room}`;
const PING_BURST = 8;
const PING_BURST_MS = 150;
const PING_MS = 2000;
const RECONNECT_GIVE_UP_MS = 30_000;
const HEALTH_WINDOW = 20; // stats reports (about 5 s)
const LEVELS_STALE_MS = 1500;

function loadJson(key, fallback) {
  try {
    return JSON.parse(sessionStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

class App {
  constructor(constants, params) {
    this.constants = constants;
    this.sampleRate = constants.sample_rate;
    this.frameSamples = constants.opus_frame_samples;
    this.params = params;
    this.calibration = loadJson(CALIBRATION_KEY, { latencyMs: null, spreadMs: null, method: null, gain: 1, levelDb: null });
    this.clock = new ClockEstimator({ sampleRate: this.sampleRate });
    this.engine = null;
    this.conn = null;
    this.codec = null;
    this.room = null;
    this.meId = null;
    this.joinInfo = null;
    this.levels = {};
    this.levelsAt = null;
    this.micMode = "on";
    this.pttHeld = false;
    this.health = [];
    this.counters = { sentMessages: 0, droppedUp: 0, receivedFrames: 0, badFrames: 0, codecErrors: 0 };
    this.pings = new Map();
    this.pingId = 0;
    this.pingTimer = null;
    this.reconnecting = null;
    this.leaving = false;
    this.fatalError = null;
    this.noticeTimer = null;
    this.debug = installDebugHook(this);
    this.chart = new OccupancyChart($("occupancy"), {
      sampleRate: this.sampleRate,
      markers: (occ) => this.occupancyMarkers(occ),
      // Enough of the ring to show every tap in use, and at least 20 s.
      windowSamples: () => {
        const delays = this.room ? this.room.taps || [] : [];
        return Math.max(20 * this.sampleRate, Math.max(0, ...delays) + 5 * this.sampleRate);
      },
      onError: (err) => ($("occupancy-info").textContent = err.message),
    });
  }

  // --- set-up -------------------------------------------------------------

  start() {
    const p = this.params;
    const k = this.constants;
    if (k.max_name_chars) $("name").maxLength = k.max_name_chars;
    if (k.max_chat_chars) $("chat-text").maxLength = k.max_chat_chars;
    if (k.max_delay_s) $("delay-s").max = String(k.max_delay_s);
    if (p.get("room")) $("room").value = p.get("room");
    if (p.get("name")) $("name").value = p.get("name");
    if (p.get("role") === "spectator") document.querySelector("input[name=role][value=spectator]").checked = true;
    if (p.has("latency_ms")) {
      const value = Number(p.get("latency_ms"));
      if (p.get("latency_ms") !== "" && Number.isFinite(value) && value >= 0) this.setManualLatency(value);
    }
    if (p.get("debug")) $("debug-panel").open = true;

    $("join-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.join().catch((err) => this.fail(err));
    });
    for (const radio of document.querySelectorAll("input[name=role]")) radio.addEventListener("change", () => this.renderSetup());
    $("cal-latency").addEventListener("click", () => this.calibrateLatency().catch((err) => this.fail(err)));
    $("cal-volume").addEventListener("click", () => this.calibrateVolume().catch((err) => this.fail(err)));
    $("cal-giveup").addEventListener("click", () => this.giveUp());
    $("manual-latency").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = Number($("latency-ms").value);
      if ($("latency-ms").value === "" || !(value >= 0 && value <= 1000)) {
        this.showNotice("Enter your latency in milliseconds, between 0 and 1000.", "error");
        return;
      }
      this.setManualLatency(value);
    });
    this.bindStage();
    this.renderSetup();
    setInterval(() => this.renderStatus(), 500);
    this.renderStatus();
    document.body.dataset.ready = "1";
  }

  get role() {
    return document.querySelector("input[name=role]:checked").value;
  }

  saveCalibration() {
    sessionStorage.setItem(CALIBRATION_KEY, JSON.stringify(this.calibration));
    if (this.engine) this.configureEngine();
  }

  setManualLatency(ms) {
    Object.assign(this.calibration, { latencyMs: ms, spreadMs: null, method: "manual" });
    $("latency-ms").value = String(ms);
    this.saveCalibration();
    this.renderSetup();
  }

  giveUp() {
    document.querySelector("input[name=role][value=spectator]").checked = true;
    this.showNotice("No latency, no singing: you will join as a listener. You can measure again at any time.");
    this.renderSetup();
  }

  renderSetup() {
    const c = this.calibration;
    const latency = $("cal-latency-result");
    if (c.latencyMs !== null) {
      latency.className = "result ok";
      latency.textContent =
        c.method === "manual"
          ? `Using your latency: ${c.latencyMs.toFixed(1)} ms.`
          : `Measured ${c.latencyMs.toFixed(1)} ms (spread ${c.spreadMs.toFixed(2)} ms).`;
    }
    const volume = $("cal-volume-result");
    if (c.levelDb !== null) {
      volume.className = "result ok";
      volume.textContent = `Your level ${c.levelDb.toFixed(1)} dBFS; the page applies ×${c.gain.toFixed(2)}.`;
    }
    const singer = this.role === "singer";
    $("calibration").classList.toggle("dim", !singer);
    $("join-hint").textContent = singer
      ? c.latencyMs === null
        ? "Singers: measure your latency first (or enter it), or choose to only listen."
        : "Use headphones while singing, so the microphone hears only you."
      : "Listeners hear everyone, from the last bucket.";
  }

  async ensureEngine(wantMic) {
    if (!this.engine) {
      this.engine = await AudioEngine.create({ sampleRate: this.sampleRate, frameSamples: this.frameSamples, wantMic });
      this.engine.onMic = (pos, samples) => this.onMic(pos, samples);
      this.engine.onStats = (stats) => this.onStats(stats);
    } else if (wantMic && !this.engine.hasMic) {
      await this.engine.startMic();
    }
    if (this.engine.ctx.state !== "running") await this.engine.ctx.resume();
    this.configureEngine();
    return this.engine;
  }

  configureEngine() {
    const c = this.calibration;
    const singing = this.joinInfo !== null && this.joinInfo.role === "singer";
    this.engine.configure({
      latency: c.latencyMs === null ? null : Math.round((c.latencyMs * this.sampleRate) / 1000),
      gain: c.gain,
      capture: singing && this.micMode !== "off",
    });
  }

  async calibrateLatency() {
    const button = $("cal-latency");
    const result = $("cal-latency-result");
    button.disabled = true;
    result.className = "result";
    result.textContent = "Listening for the clicks… keep quiet.";
    try {
      const engine = await this.ensureEngine(true);
      const outcome = await runLatencyCalibration(engine);
      if (outcome.accepted) {
        Object.assign(this.calibration, { latencyMs: outcome.latencyMs, spreadMs: outcome.spreadMs, method: "clicks" });
        this.saveCalibration();
        $("cal-giveup").hidden = true;
        this.renderSetup();
      } else {
        result.className = "result bad";
        result.textContent = `Not accepted: ${outcome.reason}.`;
        $("cal-giveup").hidden = false;
      }
      button.textContent = "Measure again";
    } finally {
      button.disabled = false;
    }
  }

  async calibrateVolume() {
    const button = $("cal-volume");
    const result = $("cal-volume-result");
    button.disabled = true;
    result.className = "result";
    result.textContent = "Sing now… (4 s)";
    try {
      const outcome = await runVolumeCalibration(await this.ensureEngine(true));
      if (outcome.accepted) {
        Object.assign(this.calibration, { gain: outcome.gain, levelDb: outcome.levelDb });
        this.saveCalibration();
        this.renderSetup();
      } else {
        result.className = "result bad";
        result.textContent = `Not accepted: ${outcome.reason}`;
      }
      button.textContent = "Measure again";
    } finally {
      button.disabled = false;
    }
  }

  // --- joining and the connection -------------------------------------------

  async join() {
    const form = $("join-form");
    if (!form.reportValidity()) return;
    const role = this.role;
    if (role === "singer" && this.calibration.latencyMs === null) {
      this.showNotice("Measure your latency first (step 1), enter it if you know it, or choose to only listen.", "error");
      return;
    }
    $("join").disabled = true;
    try {
      this.codec = await this.chooseCodec(role);
      this.joinInfo = { name: $("name").value.trim(), room: $("room").value.trim(), password: $("password").value, role };
      await this.ensureEngine(role === "singer");
      const resume = loadJson(resumeKey(this.joinInfo.room), null);
      try {
        await this.connect(resume);
      } catch (err) {
        if (!(resume && err instanceof ProtocolError && err.code === "bad_resume")) throw err;
        sessionStorage.removeItem(resumeKey(this.joinInfo.room));
        await this.connect(null);
      }
      $("setup").hidden = true;
      $("stage").hidden = false;
      for (const el of document.querySelectorAll(".singer-only")) el.hidden = role !== "singer";
      $("mic-title").textContent = role === "singer" ? "Microphone" : "Listening";
      if ($("debug-panel").open) this.chart.start(this.joinInfo.room);
    } catch (err) {
      this.joinInfo = null;
      throw err;
    } finally {
      $("join").disabled = false;
    }
  }

  chooseCodec(role) {
    return chooseCodec({
      sampleRate: this.sampleRate,
      frameSamples: this.frameSamples,
      needEncoder: role === "singer",
      forced: this.params.get("codec"),
    });
  }

  wsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  async connect(resume) {
    const info = this.joinInfo;
    const hello = { room: info.room, name: info.name, role: info.role, codec: this.codec };
    if (info.password) hello.password = info.password;
    if (resume) hello.resume = resume;
    const conn = new Connection(this.wsUrl(), {
      pong: (m) => this.onPong(m),
      state: (m) => this.onState(m.state, m.version),
      chat: (m) => views.appendChat($("chat-log"), m),
      levels: (m) => this.onLevels(m.levels),
      error: (m) => {
        if (m.fatal) this.fatalError = m;
        this.showNotice(m.message || m.code, "error");
      },
      audio: (frame) => this.onAudio(frame),
      badFrame: () => this.counters.badFrames++,
      close: () => this.onClose(conn),
    });
    const welcome = await conn.open(hello);
    this.conn = conn;
    this.meId = welcome.singer;
    sessionStorage.setItem(resumeKey(info.room), JSON.stringify({ singer: welcome.singer, token: welcome.token }));
    this.decoder = new DownstreamDecoder({
      sampleRate: this.sampleRate,
      frameSamples: this.frameSamples,
      lookahead: this.constants.opus_lookahead_samples,
      onSamples: (pos, samples, delay) => this.onSamples(pos, samples, delay),
      onError: () => this.counters.codecErrors++,
    });
    this.encoder = new UpstreamEncoder({
      codec: this.codec,
      sampleRate: this.sampleRate,
      frameSamples: this.frameSamples,
      lookahead: this.constants.opus_lookahead_samples,
      framesPerMessage: this.constants.frames_per_message,
      send: (buffer) => {
        if (conn.sendAudio(buffer)) this.counters.sentMessages++;
        else this.counters.droppedUp++;
      },
      onError: () => this.counters.codecErrors++,
    });
    this.room = null;
    if (welcome.state) this.onState(welcome.state, welcome.state.version);
    if (this.micMode === "off") conn.send("mute", { muted: true });
    this.configureEngine();
    this.startPings();
  }

  onClose(conn) {
    if (conn !== this.conn) return;
    this.stopPings();
    if (this.encoder) this.encoder.end();
    if (this.decoder) this.decoder.close();
    if (this.leaving || !this.joinInfo) return;
    if (this.fatalError) {
      const { message, code } = this.fatalError;
      this.fatalError = null;
      this.backToSetup();
      this.showNotice(`${message} (${code})`, "error");
      return;
    }
    this.reconnect().catch((err) => {
      this.backToSetup();
      this.fail(err);
    });
  }

  async reconnect() {
    if (this.reconnecting) return;
    const since = Date.now();
    this.reconnecting = since;
    let wait = 500;
    try {
      while (Date.now() - since < RECONNECT_GIVE_UP_MS && this.joinInfo) {
        await new Promise((r) => setTimeout(r, wait));
        wait = Math.min(4000, wait * 2);
        try {
          await this.connect(loadJson(resumeKey(this.joinInfo.room), null));
          this.showNotice("Reconnected; you kept your place.");
          return;
        } catch (err) {
          if (err instanceof ProtocolError && err.fatal) throw err;
        }
      }
      throw new Error("lost the connection to the server");
    } finally {
      this.reconnecting = null;
    }
  }

  async leave() {
    this.leaving = true;
    try {
      if (this.conn && this.conn.isOpen) await this.conn.request("leave").catch(() => {});
      if (this.conn) this.conn.close();
    } finally {
      sessionStorage.removeItem(resumeKey(this.joinInfo.room));
      this.backToSetup();
      this.leaving = false;
    }
  }

  backToSetup() {
    this.stopPings();
    this.chart.stop();
    if (this.engine) this.engine.stopFollowing();
    this.joinInfo = null;
    this.room = null;
    this.meId = null;
    this.conn = null;
    if (this.engine) this.configureEngine();
    $("stage").hidden = true;
    $("setup").hidden = false;
  }

  // --- clock ----------------------------------------------------------------

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
    for (const [old, sentAt] of this.pings) if (t - sentAt > 10_000) this.pings.delete(old);
    this.pings.set(id, t);
    this.conn.send("ping", { id, t });
  }

  onPong(msg) {
    const sentAt = this.pings.get(msg.id);
    if (sentAt === undefined || typeof msg.clock !== "number") return;
    this.pings.delete(msg.id);
    const firstSample = !this.clock.ready;
    const summary = this.clock.add(sentAt, nowMs(), msg.clock);
    this.debug.offsets.push(summary);
    if (this.debug.offsets.length > 200) this.debug.offsets.shift();
    if (firstSample && this.engine) this.engine.sendAnchor();
  }

  // --- room state -----------------------------------------------------------

  me() {
    return this.room ? this.room.members.find((m) => m.singer_id === this.meId) ?? null : null;
  }

  onState(state, version) {
    const v = state.version ?? version;
    if (this.room && typeof v === "number" && typeof this.room.version === "number" && v < this.room.version) return;
    this.room = state;
    const me = this.me();
    if (me && this.engine) this.engine.follow(this.clock, me.delay);
    this.renderRoom();
  }

  onLevels(levels) {
    this.levels = levels || {};
    this.levelsAt = performance.now();
    views.updateLevels($("singers"), this.levels);
  }

  renderRoom() {
    const room = this.room;
    if (!room) return;
    const leader = room.members.find((m) => m.singer_id === room.leader);
    const song = room.song;
    const isLeader = room.leader === this.meId;
    const singer = this.joinInfo && this.joinInfo.role === "singer";
    const running = Boolean(song && song.running);
    const status = $("song-status");
    if (running) {
      status.replaceChildren(views.h("span", { class: "live" }, "● Singing"), ` — song ${song.number ?? ""}, led by ${leader ? leader.name : "nobody"}`);
    } else if (leader) {
      status.textContent = isLeader ? "You lead: press Start when everyone is in place." : `${leader.name} leads. Waiting for the next song.`;
    } else {
      status.textContent = "Nobody leads yet. Press Lead to lead a song.";
    }
    $("lead").disabled = !singer || isLeader;
    $("start").disabled = !isLeader || running;
    $("stop").disabled = !isLeader || !running;
    $("halt").disabled = !running;
    views.renderBuckets($("buckets"), room, this.meId, this.sampleRate, (bucket) => this.request("join_bucket", { bucket }));
    views.renderSingers($("singers"), room, this.meId, this.sampleRate);
    views.updateLevels($("singers"), this.levels);
    $("singer-count").textContent = `(${room.members.length}${room.capacity ? ` of ${room.capacity}` : ""})`;
  }

  request(type, fields = {}) {
    if (!this.conn) return Promise.resolve(null);
    return this.conn.request(type, fields).catch((err) => {
      this.showNotice(err.message || String(err), "error");
      return null;
    });
  }

  bindStage() {
    $("lead").addEventListener("click", () => this.request("lead"));
    $("start").addEventListener("click", () => this.request("start"));
    $("stop").addEventListener("click", () => this.request("stop"));
    $("halt").addEventListener("click", () => this.request("halt"));
    $("leave").addEventListener("click", () => this.leave().catch((err) => this.fail(err)));
    $("custom-delay").addEventListener("submit", (e) => {
      e.preventDefault();
      const delay = Number($("delay-s").value);
      if ($("delay-s").value === "" || !(delay > 0)) return;
      this.request("set_delay", { delay_s: delay });
    });
    $("chat-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = $("chat-text").value.trim();
      if (!text || !this.conn) return;
      this.conn.send("chat", { text: text.slice(0, this.constants.max_chat_chars ?? 500) });
      $("chat-text").value = "";
    });
    for (const radio of document.querySelectorAll("input[name=mic]")) {
      radio.addEventListener("change", () => this.setMicMode(radio.value));
    }
    const typing = (e) => e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement;
    document.addEventListener("keydown", (e) => {
      if (e.code !== "Space" || this.micMode !== "ptt" || typing(e) || $("stage").hidden) return;
      e.preventDefault();
      this.pttHeld = true;
      $("mic-card").classList.add("talking");
    });
    document.addEventListener("keyup", (e) => {
      if (e.code !== "Space") return;
      this.pttHeld = false;
      $("mic-card").classList.remove("talking");
    });
    $("debug-panel").addEventListener("toggle", () => {
      if ($("debug-panel").open && this.joinInfo) this.chart.start(this.joinInfo.room);
      else this.chart.stop();
    });
  }

  setMicMode(mode) {
    const wasOff = this.micMode === "off";
    this.micMode = mode;
    if (this.conn && wasOff !== (mode === "off")) this.conn.send("mute", { muted: mode === "off" });
    if (this.engine) this.configureEngine();
  }

  // --- audio ----------------------------------------------------------------

  onAudio(frame) {
    this.counters.receivedFrames++;
    try {
      this.decoder.push(frame);
    } catch {
      this.counters.codecErrors++;
    }
  }

  onSamples(pos, samples, delay) {
    const me = this.me();
    if (!me || delay !== me.delay || !this.engine) return;
    this.debug.received.add(pos, samples);
    this.engine.pushFrame(pos, samples);
  }

  micLive() {
    return this.micMode === "on" || (this.micMode === "ptt" && this.pttHeld);
  }

  /**
   * The mixer keeps input only inside the song, positions [start_pos, end_pos)
   * (the leader's positions at start and stop). A singer in a later bucket
   * reaches start_pos some seconds after the start and end_pos some seconds
   * after the stop, so audio is sent by position, not by "running".
   */
  shouldSend(pos, length) {
    if (!this.conn || !this.conn.isOpen || !this.joinInfo || this.joinInfo.role !== "singer" || !this.micLive()) return false;
    const song = this.room && this.room.song;
    if (!song || typeof song.start_pos !== "number" || pos + length <= song.start_pos) return false;
    if (typeof song.end_pos === "number") return pos < song.end_pos;
    return Boolean(song.running);
  }

  onMic(pos, samples) {
    if (!this.shouldSend(pos, samples.length)) {
      if (this.encoder) this.encoder.end();
      return;
    }
    this.debug.sent.add(pos, samples);
    this.encoder.push(pos, samples);
  }

  onStats(stats) {
    this.health.push(stats);
    if (this.health.length > HEALTH_WINDOW) this.health.shift();
    $("mic-level").style.width = `${this.micLive() ? views.levelPercent(stats.micDb) : 0}%`;
    const quanta = this.health.reduce((n, s) => n + s.quanta, 0);
    const under = this.health.reduce((n, s) => n + s.underflowQuanta, 0);
    const fraction = quanta ? under / quanta : 0;
    const meter = $("health-level").parentElement;
    let text;
    let cls = "";
    if (stats.starved) {
      text = this.joinInfo ? "Waiting for audio from the room…" : "";
      cls = "warn";
    } else if (fraction === 0) {
      text = `Playback healthy (${Math.round(stats.bufferedMs)} ms buffered).`;
    } else if (fraction < 0.02) {
      text = "A few dropouts in playback.";
      cls = "warn";
    } else {
      text = "Playback keeps running dry: your connection cannot keep up. Try a later bucket.";
      cls = "bad";
    }
    this.healthText = stats.starved ? "waiting for audio" : fraction === 0 ? "playback healthy" : `${(fraction * 100).toFixed(1)} % dropouts`;
    meter.className = `meter health ${cls}`;
    $("health-level").style.width = `${stats.starved ? 0 : Math.round(100 * Math.max(0, 1 - fraction * 10))}%`;
    $("health-text").textContent = text;
  }

  occupancyMarkers(occ) {
    const markers = [];
    const room = this.room;
    if (!room) return markers;
    const me = this.me();
    for (const delay of room.taps || []) {
      const mine = me && me.delay === delay;
      const label = `${mine ? "you, " : ""}${views.seconds(delay, this.sampleRate)}`;
      markers.push({ pos: occ.clock - delay, label, color: mine ? "#d64545" : "#5b6677" });
    }
    if (room.song && typeof room.song.start_pos === "number") markers.push({ pos: room.song.start_pos, label: "song start", color: "#2e9d5b" });
    $("occupancy-info").textContent = `${occ.occupied ?? "?"} of ${occ.nFrames} frames hold audio.`;
    return markers;
  }

  // --- status and notices -----------------------------------------------------

  renderStatus() {
    // Level meters fall back to zero when the server stops sending levels (between songs).
    if (this.levelsAt && performance.now() - this.levelsAt > LEVELS_STALE_MS) {
      this.levelsAt = null;
      this.onLevels({});
      this.levelsAt = null;
    }
    const parts = [];
    let dot = "bad";
    const c = this.calibration;
    if (this.conn && this.conn.isOpen && this.joinInfo) {
      dot = "ok";
      parts.push(`Room ${this.joinInfo.room}`);
      const me = this.me();
      if (me) {
        const bucket = this.room ? views.bucketOf(me, this.room.buckets) : null;
        const where = bucket === null ? "custom delay" : `bucket ${bucket + 1}`;
        parts.push(`${me.name}: ${where}, ${views.seconds(me.delay, this.sampleRate)} behind`);
      }
    } else if (this.reconnecting) {
      dot = "wait";
      parts.push("Reconnecting…");
    } else {
      parts.push("Not connected");
    }
    const clock = this.clock.ready ? this.clock.summary(nowMs()) : null;
    if (clock) {
      const sign = clock.offsetMs >= 0 ? "+" : "−";
      let text = `clock ${sign}${Math.abs(clock.offsetMs).toFixed(1)} ms (round trip ${clock.rttMs.toFixed(0)} ms`;
      if (clock.driftPpm) text += `, drift ${clock.driftPpm.toFixed(0)} ppm`;
      parts.push(`${text})`);
    } else if (this.joinInfo) {
      parts.push("syncing clock…");
      if (dot === "ok") dot = "wait";
    }
    if (c.latencyMs !== null) parts.push(`latency ${c.latencyMs.toFixed(1)} ms`);
    if (this.codec) parts.push(this.codec === "opus" ? "Opus" : "PCM16");
    if (this.joinInfo && this.healthText) parts.push(this.healthText);
    views.renderStatus($("status"), { dot, parts });
  }

  showNotice(text, kind = "info") {
    const el = $("notice");
    el.textContent = text;
    el.className = kind === "error" ? "notice error" : "notice";
    el.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => (el.hidden = true), 8000);
  }

  fail(err) {
    const message = err instanceof ProtocolError ? `${err.message} (${err.code})` : err.message || String(err);
    this.showNotice(message, "error");
    if (err instanceof ProtocolError && err.fatal && this.joinInfo && !$("stage").hidden) this.backToSetup();
    console.error(err);
  }
}

async function main() {
  const response = await fetch("/api/constants", { cache: "no-store" });
  if (!response.ok) throw new Error(`could not load the audio constants (HTTP ${response.status})`);
  const app = new App(await response.json(), new URLSearchParams(location.search));
  app.start();
}

main().catch((err) => {
  const status = $("status");
  status.textContent = `The page could not start: ${err.message}`;
  console.error(err);
});
