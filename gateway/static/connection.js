// One WebSocket to the gateway: sends `hello`, resolves on `welcome`, matches
// `req` ids to their `ack`/`error`, parses binary frames with protocol.js and
// hands every server message to a handler by type. No timers, no retries:
// session.js decides when to connect again.

import { PROTOCOL_VERSION, ProtocolError, unpackDownstream } from "./protocol.js";

/**
 * One WebSocket session. `handlers` receive server messages by type
 * (`welcome`, `pong`, `state`, `material`, `cues`, `chat`, `levels`, `error`), `audio` (a parsed
 * downstream frame), `badFrame` (a malformed one) and `close` ({code, reason,
 * clean}). `request()` sends a control message with a `req` id and resolves
 * on its `ack` (rejects with ProtocolError on its `error`).
 */
export class Connection {
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.nextReq = 1;
    this.pending = new Map();
    this.ws = null;
    this.welcome = null;
    this.bytesUp = 0;
    this.bytesDown = 0;
  }

  /** Open the socket, send `hello`, resolve with `welcome` (reject with ProtocolError). */
  open(hello) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let settled = false;
      ws.onopen = () => this.sendJson({ type: "hello", version: PROTOCOL_VERSION, ...hello });
      ws.onmessage = (event) => {
        if (typeof event.data !== "string") {
          this.bytesDown += event.data.byteLength;
          this.onBinary(event.data);
          return;
        }
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch {
          this.emit("badFrame", new Error("server sent text that is not JSON"));
          return;
        }
        if (!settled && msg.type === "welcome") {
          settled = true;
          this.welcome = msg;
          resolve(msg);
        } else if (!settled && msg.type === "error") {
          settled = true;
          reject(new ProtocolError(msg.code, msg.message, true));
          return;
        }
        this.onJson(msg);
      };
      ws.onclose = (event) => {
        for (const { reject: fail } of this.pending.values()) fail(new ProtocolError("closed", "connection closed"));
        this.pending.clear();
        if (!settled) {
          settled = true;
          reject(new ProtocolError("closed", `connection closed (${event.code}) before welcome`, false));
        }
        this.emit("close", { code: event.code, reason: event.reason, clean: event.wasClean });
      };
    });
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  emit(type, value) {
    const handler = this.handlers[type];
    if (handler) handler(value);
  }

  onJson(msg) {
    if ((msg.type === "ack" || msg.type === "error") && msg.req !== undefined && this.pending.has(msg.req)) {
      const { resolve, reject } = this.pending.get(msg.req);
      this.pending.delete(msg.req);
      if (msg.type === "ack") resolve(msg);
      else reject(new ProtocolError(msg.code, msg.message, Boolean(msg.fatal)));
      return;
    }
    this.emit(msg.type, msg);
  }

  onBinary(buffer) {
    let frame;
    try {
      frame = unpackDownstream(buffer);
    } catch (err) {
      this.emit("badFrame", err);
      return;
    }
    this.emit("audio", frame);
  }

  sendJson(msg) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Fire-and-forget control message. */
  send(type, fields = {}) {
    return this.sendJson({ type, ...fields });
  }

  /** Control message with a `req` id; resolves on `ack`. */
  request(type, fields = {}) {
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      if (!this.sendJson({ type, req, ...fields })) {
        reject(new ProtocolError("closed", "not connected"));
        return;
      }
      this.pending.set(req, { resolve, reject });
    });
  }

  sendAudio(buffer) {
    if (!this.isOpen) return false;
    // A socket that cannot keep up loses its own newest audio rather than
    // queueing without bound in the browser.
    if (this.ws.bufferedAmount > 256 * 1024) return false;
    this.bytesUp += buffer.byteLength;
    this.ws.send(buffer);
    return true;
  }

  close(code = 1000, reason = "bye") {
    if (this.ws) this.ws.close(code, reason);
  }
}
