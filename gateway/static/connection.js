// The singer protocol, version 1 (docs/protocol.md): one WebSocket, JSON
// control messages, binary audio frames with a fixed little-endian header.

export const PROTOCOL_VERSION = 1;
export const KIND_UP = 0x01;
export const KIND_DOWN = 0x02;
export const CODEC_IDS = { opus: 1, pcm16: 2 };
export const CODEC_NAMES = { 1: "opus", 2: "pcm16" };
export const UP_HEADER_BYTES = 20;
export const DOWN_HEADER_BYTES = 16;

/** Concatenate Opus packets as `count × (u16 length, bytes)`. */
function packetsBytes(packets) {
  return packets.reduce((n, p) => n + 2 + p.byteLength, 0);
}

function writePayload(view, bytes, offset, codec, payload) {
  if (codec === CODEC_IDS.opus) {
    for (const packet of payload) {
      if (packet.byteLength > 0xffff) throw new RangeError(`Opus packet of ${packet.byteLength} bytes`);
      view.setUint16(offset, packet.byteLength, true);
      bytes.set(packet, offset + 2);
      offset += 2 + packet.byteLength;
    }
  } else {
    for (let i = 0; i < payload.length; i++) view.setInt16(offset + 2 * i, payload[i], true);
  }
}

function payloadInfo(codec, payload) {
  if (codec === CODEC_IDS.opus) return { count: payload.length, bytes: packetsBytes(payload) };
  if (codec === CODEC_IDS.pcm16) return { count: payload.length, bytes: 2 * payload.length };
  throw new RangeError(`unknown codec id ${codec}`);
}

/**
 * Upstream audio frame. `payload`: Opus → array of Uint8Array packets (each
 * 960 samples); pcm16 → Int16Array. `start` is an absolute position.
 */
export function packUpstream({ codec, stream, seq, start, payload }) {
  const { count, bytes } = payloadInfo(codec, payload);
  if (count > 0xffff) throw new RangeError(`count ${count} does not fit in u16`);
  const buffer = new ArrayBuffer(UP_HEADER_BYTES + bytes);
  const view = new DataView(buffer);
  view.setUint8(0, KIND_UP);
  view.setUint8(1, codec);
  view.setUint16(2, count, true);
  view.setUint32(4, stream >>> 0, true);
  view.setUint32(8, seq >>> 0, true);
  view.setBigInt64(12, BigInt(start), true);
  writePayload(view, new Uint8Array(buffer), UP_HEADER_BYTES, codec, payload);
  return buffer;
}

/** Downstream frame (the gateway's side; here for tests and tools). */
export function packDownstream({ codec, delay, start, payload }) {
  const { count, bytes } = payloadInfo(codec, payload);
  const buffer = new ArrayBuffer(DOWN_HEADER_BYTES + bytes);
  const view = new DataView(buffer);
  view.setUint8(0, KIND_DOWN);
  view.setUint8(1, codec);
  view.setUint16(2, count, true);
  view.setUint32(4, delay >>> 0, true);
  view.setBigInt64(8, BigInt(start), true);
  writePayload(view, new Uint8Array(buffer), DOWN_HEADER_BYTES, codec, payload);
  return buffer;
}

function readPayload(buffer, offset, codec, count) {
  const view = new DataView(buffer);
  if (codec === CODEC_IDS.pcm16) {
    if (buffer.byteLength - offset !== 2 * count) {
      throw new RangeError(`pcm16 frame: ${count} samples declared, ${buffer.byteLength - offset} bytes present`);
    }
    const samples = new Int16Array(count);
    for (let i = 0; i < count; i++) samples[i] = view.getInt16(offset + 2 * i, true);
    return samples;
  }
  if (codec !== CODEC_IDS.opus) throw new RangeError(`unknown codec id ${codec}`);
  const packets = [];
  for (let k = 0; k < count; k++) {
    if (offset + 2 > buffer.byteLength) throw new RangeError(`Opus frame truncated at packet ${k} of ${count}`);
    const len = view.getUint16(offset, true);
    if (len === 0 || offset + 2 + len > buffer.byteLength) {
      throw new RangeError(`Opus packet ${k} of ${count}: bad length ${len}`);
    }
    packets.push(new Uint8Array(buffer, offset + 2, len));
    offset += 2 + len;
  }
  if (offset !== buffer.byteLength) throw new RangeError(`${buffer.byteLength - offset} trailing bytes after ${count} packets`);
  return packets;
}

/** Parse a downstream frame; throws RangeError with the reason when malformed. */
export function unpackDownstream(buffer) {
  if (buffer.byteLength < DOWN_HEADER_BYTES) throw new RangeError(`frame of ${buffer.byteLength} bytes is shorter than its header`);
  const view = new DataView(buffer);
  const kind = view.getUint8(0);
  if (kind !== KIND_DOWN) throw new RangeError(`frame kind ${kind}, expected ${KIND_DOWN}`);
  const codec = view.getUint8(1);
  const count = view.getUint16(2, true);
  const delay = view.getUint32(4, true);
  const start = Number(view.getBigInt64(8, true));
  return { codec, count, delay, start, payload: readPayload(buffer, DOWN_HEADER_BYTES, codec, count) };
}

/** Parse an upstream frame (the gateway's side; here for tests and tools). */
export function unpackUpstream(buffer) {
  if (buffer.byteLength < UP_HEADER_BYTES) throw new RangeError(`frame of ${buffer.byteLength} bytes is shorter than its header`);
  const view = new DataView(buffer);
  const kind = view.getUint8(0);
  if (kind !== KIND_UP) throw new RangeError(`frame kind ${kind}, expected ${KIND_UP}`);
  const codec = view.getUint8(1);
  const count = view.getUint16(2, true);
  return {
    codec,
    count,
    stream: view.getUint32(4, true),
    seq: view.getUint32(8, true),
    start: Number(view.getBigInt64(12, true)),
    payload: readPayload(buffer, UP_HEADER_BYTES, codec, count),
  };
}

/** A refused request: `code` is the protocol's error code. */
export class ProtocolError extends Error {
  constructor(code, message, fatal = false) {
    super(message);
    this.code = code;
    this.fatal = fatal;
  }
}

/**
 * One WebSocket session. `handlers` receive server messages by type
 * (`welcome`, `pong`, `state`, `chat`, `levels`, `error`), `audio` (a parsed
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
