// The page: loads the served constants and wires the modules together.
// Protocol: docs/protocol.md. Each job lives in its own module:
//   protocol.js         the wire format (binary headers, errors, hello)
//   connection.js       one WebSocket
//   session.js          join / resume / reconnect / clock pings
//   seat.js             what is remembered between loads (seat, name)
//   roomstore.js        the room state and the facts derived from it
//   audiopath.js        mic → encoder → socket, socket → decoder → speaker
//   joinview.js         the join form and the microphone help
//   calibrationview.js  the calibration card
//   stageview.js        the room on screen
//   detailsview.js      the folded Details panel (figures, occupancy chart)
//   backing.js          the backing track and clicks at song positions, own levels
//   metronome.js        click positions and sound (also loaded by the worklet)
//   lyrics.js           lyrics, image and timed lines
//   materialview.js     track, metronome, lyrics and image controls, uploads
//   recordingsview.js   the room's recordings (player, downloads) and the leader's recording options
//   notice.js           the message line
//   securecontext.js    why a plain http:// page from another machine has no microphone
//
// Addresses: /r/<room> is a room's link. URL parameters (all optional):
//   room, name, role=singer|spectator  pre-fill the join form
//   listen=1        a listen-only link: join the room as a listener at once (no form, no
//                   microphone, no calibration; a listener is no member of the room)
//   latency_ms=N    use a known round-trip latency instead of measuring it
//   codec=pcm16     do not use Opus even when the browser has it
//   debug=1         open the Details panel (figures and occupancy chart)

import { AudioEngine } from "./audio.js";
import { AudioPath } from "./audiopath.js";
import { Backing } from "./backing.js";
import { CalibrationView, isMicBlocked } from "./calibrationview.js";
import { ClockEstimator } from "./clock.js";
import { missingFeatures, unsupportedText } from "./browser.js";
import { chooseCodec } from "./codec.js";
import { installDebugHook } from "./debug.js";
import { DetailsView } from "./detailsview.js";
import { JoinView } from "./joinview.js";
import { LyricsView, lyricLines, nextLine } from "./lyrics.js";
import { MaterialPanel } from "./materialview.js";
import { Notice } from "./notice.js";
import { ProtocolError, errorText, normaliseRoom } from "./protocol.js";
import { RecordingsPanel } from "./recordingsview.js";
import { RoomStore } from "./roomstore.js";
import { showSecureContextHelp } from "./securecontext.js";
import { loadPerson, loadSeat, roomFromLocation, savePerson } from "./seat.js";
import { Session } from "./session.js";
import { StageView } from "./stageview.js";
import { levelPercent } from "./views.js";

const $ = (id) => document.getElementById(id);
const LEVELS_STALE_MS = 1500;
const TICK_MS = 500;
const RESUME_WAIT_MS = 1000;

class App {
  constructor(constants, params) {
    this.constants = constants;
    this.sampleRate = constants.sample_rate;
    this.params = params;
    this.store = new RoomStore();
    this.clock = new ClockEstimator({ sampleRate: this.sampleRate });
    this.engine = null;
    this.codec = null;
    this.role = null;
    this.levels = {};
    this.levelsAt = null;
    this.micMode = "on";
    this.pttHeld = false;
    this.lastHealth = null;
    this.counters = { sentMessages: 0, droppedUp: 0, receivedFrames: 0, badFrames: 0, codecErrors: 0 };
    this.notice = new Notice($("notice"), $("notice-text"), $("notice-close"));
    this.pendingJoin = null;
    this.debug = installDebugHook(this);

    this.calibration = new CalibrationView({
      ensureEngine: (wantMic) => this.ensureEngine(wantMic),
      onChange: () => {
        if (this.engine) this.configureEngine();
        this.join.render();
      },
      onGiveUp: () => this.listenInstead(),
      onMicBlocked: (err) => this.join.showMicHelp(err),
      onError: (err) => console.warn(err),
    });
    this.join = new JoinView({
      constants,
      onJoin: (form) => this.joinRoom(form),
      onListenInstead: () => this.listenInstead(),
      onRetryMic: () => this.retryMic(),
    });
    this.join.latencyKnown = () => this.calibration.latencyMs !== null;
    this.session = new Session({
      url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`,
      clock: this.clock,
      // The server keeps a dropped member's seat this long: retry until then.
      graceMs: 1000 * (constants.reconnect_grace_s ?? 30),
      handlers: {
        welcome: (msg, info) => this.onWelcome(msg, info),
        state: (state) => this.store.apply(state),
        material: (msg) => this.store.applyMaterial(msg),
        cues: (msg) => this.store.applyCues(msg),
        chat: (msg) => this.stage.onChat(msg),
        levels: (levels) => this.onLevels(levels),
        recording: (msg) => this.recordings.onRecorded(msg),
        audio: (frame) => this.audio.onAudio(frame),
        badFrame: () => this.counters.badFrames++,
        error: (msg) => this.notice.show(errorText(msg.code, msg.message), "error"),
        pong: (summary, { first }) => {
          this.debug.offsets.push(summary);
          if (this.debug.offsets.length > 200) this.debug.offsets.shift();
          if (first && this.engine) this.engine.sendAnchor();
        },
        status: (status) => this.onSessionStatus(status),
        lost: (err) => this.onLost(err),
      },
    });
    this.audio = new AudioPath({ constants, engine: null, session: this.session, store: this.store, counters: this.counters, debug: this.debug });
    this.audio.micOn = () => this.micLive();
    this.stage = new StageView({
      store: this.store,
      sampleRate: this.sampleRate,
      actions: {
        request: (type, fields) => this.request(type, fields),
        leave: () => this.leave(),
        setMicMode: (mode) => this.setMicMode(mode),
        chat: (text) => this.session.send("chat", { text: text.slice(0, constants.max_chat_chars ?? 500) }),
        onDetailsToggle: (open) => this.onDetailsToggle(open),
      },
    });
    this.details = new DetailsView(this);
    this.material = new MaterialPanel({ app: this, Backing, LyricsView, nextLine, lyricLines, $ });
    this.recordings = new RecordingsPanel({ app: this, $ });
    this.store.onChange((store, previous) => {
      const me = store.me();
      if (me && this.engine) this.engine.follow(this.clock, me.delay);
      this.material.onState(store.state);
      this.recordings.onState(store.state, previous);
    });
  }

  // Read by the debug hook (debug.js).
  get room() {
    return this.store.state;
  }

  me() {
    return this.store.me();
  }

  /** This tab's seat in the room (singer id and resume token), for uploads and recordings. */
  seat() {
    const seat = loadSeat();
    return seat && seat.singer && seat.token ? { singer: seat.singer, token: seat.token } : null;
  }

  // --- set-up -------------------------------------------------------------

  start() {
    const p = this.params;
    const k = this.constants;
    if (k.max_chat_chars) $("chat-text").maxLength = k.max_chat_chars;
    if (k.max_delay_s) $("delay-s").max = String(k.max_delay_s);
    this.join.bind();
    this.calibration.bind();
    this.stage.bind();
    this.recordings.bind();
    this.bindKeys();
    $("next-line").addEventListener("click", () => this.material.nextLine());
    $("sound-on").addEventListener("click", () => {
      if (this.engine) this.engine.ctx.resume().then(() => this.tick());
    });

    const person = loadPerson() ?? {};
    const room = roomFromLocation();
    this.join.prefill({ room: room ?? "", name: p.get("name") ?? person.name, role: p.get("role") ?? person.role });
    if (p.has("latency_ms")) {
      const value = Number(p.get("latency_ms"));
      if (p.get("latency_ms") !== "" && Number.isFinite(value) && value >= 0) this.calibration.setManualLatency(value);
    }
    if (p.get("debug")) $("details").open = true;
    setInterval(() => this.tick(), TICK_MS);
    this.tick();

    // A reload (or the reopened tab) of a room this tab sat in rejoins the same seat.
    const seat = loadSeat();
    if (room && p.has("listen")) {
      // A listen link: straight in, as the audience.
      $("calibration").hidden = true;
      this.joinRoom({ room: normaliseRoom(room), name: p.get("name") || person.name || "Listener", role: "listener", password: "" });
    } else if (seat && room && normaliseRoom(room) === seat.room && (seat.role === "spectator" || this.calibration.latencyMs !== null)) {
      this.join.prefill({ room: seat.room, name: seat.name, role: seat.role });
      $("password").value = seat.password || "";
      this.joinRoom({ room: seat.room, name: seat.name, role: seat.role, password: seat.password || "" }, { rejoin: true });
    } else {
      this.join.focusFirstEmpty();
    }
    document.body.dataset.ready = "1";
  }

  bindKeys() {
    const typing = (e) => e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement;
    document.addEventListener("keydown", (e) => {
      if (e.code !== "Space" || this.micMode !== "ptt" || typing(e) || $("stage").hidden) return;
      e.preventDefault();
      this.pttHeld = true;
      $("mic-card").classList.add("talking");
    });
    document.addEventListener("keydown", (e) => {
      // The leader advances the lyrics with Page Down (what page-turner pedals send) or ↓.
      if ((e.code !== "PageDown" && e.code !== "ArrowDown") || typing(e) || $("stage").hidden) return;
      if (!this.store.isLeader || !this.store.running) return;
      e.preventDefault();
      this.material.nextLine();
    });
    document.addEventListener("keyup", (e) => {
      if (e.code !== "Space") return;
      this.pttHeld = false;
      $("mic-card").classList.remove("talking");
    });
  }

  // --- audio engine ---------------------------------------------------------

  async ensureEngine(wantMic) {
    if (!this.engine) {
      // Without the microphone first: a refused microphone must not cost the listener their sound.
      this.engine = await AudioEngine.create({ sampleRate: this.sampleRate, frameSamples: this.constants.opus_frame_samples, wantMic: false });
      this.engine.onMic = (pos, samples) => this.audio.onMic(pos, samples);
      this.engine.onStats = (stats) => this.onStats(stats);
      this.engine.onPlayed = (pos, samples) => this.debug.played.add(pos, samples);
      if (this.debug.recording) this.engine.configure({ record: true });
      this.audio.engine = this.engine;
    }
    if (wantMic && !this.engine.hasMic) await this.engine.startMic();
    // Without a click (a reload that rejoins), the browser may keep sound off
    // until the next one: do not wait for it forever.
    if (this.engine.ctx.state !== "running") {
      await Promise.race([this.engine.ctx.resume(), new Promise((r) => setTimeout(r, RESUME_WAIT_MS))]);
    }
    this.configureEngine();
    return this.engine;
  }

  configureEngine() {
    const c = this.calibration.calibration;
    this.engine.configure({
      latency: c.latencyMs === null ? null : Math.round((c.latencyMs * this.sampleRate) / 1000),
      gain: c.gain,
      capture: this.store.joined && this.role === "singer" && this.micMode !== "off",
    });
  }

  // --- joining ---------------------------------------------------------------

  /** Join (or get ready to join) as a listener: no microphone needed. */
  listenInstead() {
    this.join.hideMicHelp();
    this.join.role = "spectator";
    const pending = this.pendingJoin;
    this.pendingJoin = null;
    if (pending) {
      this.joinRoom({ ...pending, role: "spectator" });
      return;
    }
    this.notice.show("You will join as a listener: you hear everyone, nobody hears you. You can measure again at any time.");
    $("join").focus();
  }

  async retryMic() {
    try {
      await this.ensureEngine(true);
      this.join.hideMicHelp();
      this.calibration.lastFailure = null;
      this.calibration.render();
      this.notice.show("The microphone works now.");
    } catch (err) {
      if (isMicBlocked(err)) this.join.showMicHelp(err);
      else this.fail(err);
    }
  }

  async joinRoom(form, { rejoin = false } = {}) {
    this.pendingJoin = null;
    this.join.showError("");
    this.notice.hide();
    if (form.role === "singer" && this.calibration.latencyMs === null) {
      this.join.showError("Singers need their latency first (step 1): measure it, enter it if you know it, or choose to only listen.");
      $("cal-latency").focus();
      return;
    }
    this.join.setBusy(true, rejoin ? `Rejoining ${form.room}…` : "Joining…");
    this.stage.renderStatus("connecting");
    try {
      try {
        await this.ensureEngine(form.role === "singer");
      } catch (err) {
        if (!isMicBlocked(err)) throw err;
        this.pendingJoin = form;
        this.calibration.micBlocked();
        this.join.showMicHelp(err);
        this.stage.renderStatus("idle");
        return;
      }
      this.join.hideMicHelp();
      this.codec = await chooseCodec({
        sampleRate: this.sampleRate,
        frameSamples: this.constants.opus_frame_samples,
        needEncoder: form.role === "singer",
        forced: this.params.get("codec"),
      });
      if (this.codec === "pcm16" && !this.params.get("codec")) {
        this.notice.show("This browser has no Opus codec (WebCodecs), so your audio travels uncompressed: about 12 times the data. It works; a recent Chrome, Edge, Firefox or Safari needs less.");
      }
      this.role = form.role;
      this.audio.open(this.codec);
      await this.session.join({ ...form, codec: this.codec });
      savePerson({ name: form.name, role: form.role });
    } catch (err) {
      this.role = null;
      this.audio.close();
      this.store.reset();
      this.stage.renderStatus("idle");
      const text = err instanceof ProtocolError ? errorText(err.code, err.message) : `Could not join: ${err.message || err}`;
      this.join.showError(text, err instanceof ProtocolError && err.code === "bad_password" ? "password" : "");
      if (err instanceof ProtocolError && err.code === "bad_password") $("password").focus();
      if (!(err instanceof ProtocolError)) console.warn(err);
    } finally {
      this.join.setBusy(false);
    }
  }

  onWelcome(welcome, { resumed }) {
    const room = welcome.room;
    this.store.setMe(welcome.singer, this.role === "listener" ? "listener" : null);
    this.stage.show({ room, role: this.role });
    if (welcome.state) this.store.apply(welcome.state);
    if (this.micMode === "off") this.session.send("mute", { muted: true });
    this.configureEngine();
    this.join.showError("");
    // The address becomes the room's link, so a reload comes back here.
    const link = `/r/${encodeURIComponent(room)}${location.search}`;
    if (location.pathname + location.search !== link) history.replaceState(null, "", link);
    this.details.follow();
    const me = this.store.me();
    const where = me && this.store.state ? this.store.bucketOf(me) : null;
    this.stage.announce(`${resumed ? "Back in" : "You joined"} room ${room}${where === null ? "" : `, bucket ${where + 1}`}.`);
    if (resumed) this.notice.show("You are back in your place.");
    // Focus for screen readers without scrolling to the room card (on a phone it sits below the song).
    if (!resumed || document.activeElement === document.body) $("room-title").focus({ preventScroll: true });
  }

  onSessionStatus(status) {
    this.stage.renderStatus(status);
    if (status === "reconnecting") {
      this.audio.close();
      this.stage.announce("Connection lost. Reconnecting…");
    }
    if (status === "connected" && !this.audio.encoder) this.audio.open(this.codec);
  }

  onLost(err) {
    this.backToSetup();
    this.join.showError(`${err instanceof ProtocolError ? errorText(err.code, err.message) : err.message} Press Join to come back.`);
  }

  async leave() {
    await this.session.leave();
    this.backToSetup();
    this.notice.show("You left the room.");
  }

  backToSetup() {
    this.details.stop();
    this.material.reset();
    this.recordings.reset();
    this.audio.close();
    if (this.engine) this.engine.stopFollowing();
    this.role = null;
    this.store.reset();
    if (this.engine) this.configureEngine();
    this.stage.hide();
    this.stage.renderStatus("idle");
    this.join.render();
    $("join").focus();
  }

  /** A control message; shows a refusal in words. Resolves true when applied. */
  async request(type, fields = {}) {
    try {
      await this.session.request(type, fields);
      return true;
    } catch (err) {
      this.notice.show(err instanceof ProtocolError ? errorText(err.code, err.message) : String(err), "error");
      return false;
    }
  }

  setMicMode(mode) {
    const wasOff = this.micMode === "off";
    this.micMode = mode;
    if (wasOff !== (mode === "off")) this.session.send("mute", { muted: mode === "off" });
    if (this.engine) this.configureEngine();
  }

  micLive() {
    return this.micMode === "on" || (this.micMode === "ptt" && this.pttHeld);
  }

  // --- meters, details, notices -------------------------------------------------------

  onLevels(levels) {
    this.levels = levels;
    this.levelsAt = performance.now();
    this.stage.setLevels(levels);
  }

  onStats(stats) {
    this.stage.setMicLevel(this.micLive() && this.store.joined ? levelPercent(stats.micDb) : 0);
    this.lastHealth = this.audio.onStats(stats);
    this.stage.setHealth(this.lastHealth);
  }

  onDetailsToggle() {
    this.details.follow();
    this.tick();
  }

  tick() {
    // Level meters fall back to zero when the server stops sending levels (between songs).
    if (this.levelsAt && performance.now() - this.levelsAt > LEVELS_STALE_MS) {
      this.levelsAt = null;
      this.onLevels({});
      this.levelsAt = null;
    }
    this.stage.renderStatus(this.session.status === "idle" && $("join").disabled ? "connecting" : this.session.status);
    const muted = this.engine !== null && this.engine.ctx.state !== "running" && this.store.joined;
    $("sound-off").hidden = !muted;
    this.details.render();
  }

  fail(err) {
    this.notice.show(err instanceof ProtocolError ? errorText(err.code, err.message) : err.message || String(err), "error");
    console.warn(err);
  }
}

async function main() {
  showSecureContextHelp();
  // The root page says what this is; a room link goes straight to the form (before anything loads).
  $("intro").hidden = Boolean(roomFromLocation());
  $("intro-example").textContent = `${location.origin}/r/choir`;
  const response = await fetch("/api/constants", { cache: "no-store" });
  if (!response.ok) throw new Error(`could not load the audio constants (HTTP ${response.status})`);
  const app = new App(await response.json(), new URLSearchParams(location.search));
  app.start();
  const unsupported = unsupportedText(missingFeatures(window));
  if (unsupported) {
    app.notice.show(unsupported, "error");
    $("status").textContent = unsupported;
    if (missingFeatures(window).listen.length) $("join").disabled = true;
  }
}

main().catch((err) => {
  $("status").textContent = `The page could not start: ${err.message}`;
  console.error(err);
});
