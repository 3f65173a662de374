// The singer protocol, version 1 (docs/protocol.md), as data: the binary
// audio headers, the error type and the control messages the page sends.
// No sockets, no DOM: connection.js moves these over a WebSocket.

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

/** The `hello` message (without `type`/`version`, which the connection adds). */
export function helloFields({ room, name, role, codec, password, resume }) {
  const hello = { room, name, role, codec };
  if (password) hello.password = password;
  if (resume && resume.singer && resume.token) hello.resume = { singer: resume.singer, token: resume.token };
  return hello;
}

/** Room names are case-insensitive: the server keeps them in lower case. */
export function normaliseRoom(room) {
  return String(room ?? "").trim().toLowerCase();
}

/** A room name the server accepts (docs/protocol.md, *Field rules*). */
export function validRoom(room) {
  return /^[A-Za-z0-9_-]{1,40}$/.test(room);
}

const ERROR_TEXT = {
  bad_password: "That password is not this room's password. Ask whoever opened the room.",
  bad_room: "Room names use only letters, digits, - and _ (at most 40, no spaces).",
  bad_name: "Your name must be 1 to 40 ordinary characters.",
  room_full: "This room is full. Ask the organiser, or try again later.",
  listeners_full: "This concert has all the listeners it can take. Try again later.",
  listener: "Listeners only listen: join as a singer to take part.",
  bad_resume: "Your place in the room had expired.",
  unavailable: "The server is busy or restarting. Try again in a moment.",
  not_leader: "Only the leader can do that.",
  song_running: "Not while a song is running.",
  no_song: "No song is running.",
  spectator_cannot_lead: "Listeners cannot lead: join as a singer to lead.",
  bad_delay: "That delay is outside what this room allows.",
  bad_bucket: "That bucket does not exist.",
  rate_limited: "Too many actions at once; try again in a second.",
  version: "This page is out of date: reload it.",
  closed: "The connection to the server was lost.",
};

/** A sentence a person understands for a protocol error (the code is for logs and tests). */
export function errorText(code, message) {
  return ERROR_TEXT[code] ?? message ?? "Something went wrong.";
}
