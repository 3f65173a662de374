// Audio codecs on the page: WebCodecs Opus (48 kHz mono, 20 ms packets) when
// the browser has it, raw pcm16 otherwise (docs/protocol.md, "Audio").
//
// Positions and the codec delay: an Opus encoder's output lags its input by
// its lookahead (`opus_lookahead_samples` from /api/constants: 312 at 48 kHz,
// in Chromium's WebCodecs encoder and in libopus alike). The gateway decodes upstream packets and places the decoded
// samples at `start`, and stamps downstream packets with the position of the
// first sample it fed its encoder; so this page compensates both ways:
// upstream `start` = first input position − lookahead, and decoded downstream
// samples are placed at `start` − lookahead.

import { CODEC_IDS, packUpstream } from "./protocol.js";

export const OPUS_BITRATE = 64_000;

function opusConfig(sampleRate) {
  return { codec: "opus", sampleRate, numberOfChannels: 1 };
}

/**
 * "opus" when WebCodecs can encode (singers) and decode Opus at the rate,
 * else "pcm16". `forced` ("opus"/"pcm16") overrides when it is possible.
 */
export async function chooseCodec({ sampleRate, frameSamples, needEncoder, forced = null }) {
  if (forced === "pcm16") return "pcm16";
  try {
    if (typeof AudioDecoder === "undefined") return "pcm16";
    if (needEncoder && typeof AudioEncoder === "undefined") return "pcm16";
    const dec = await AudioDecoder.isConfigSupported(opusConfig(sampleRate));
    if (!dec.supported) return "pcm16";
    if (needEncoder) {
      const enc = await AudioEncoder.isConfigSupported({
        ...opusConfig(sampleRate),
        bitrate: OPUS_BITRATE,
        opus: { frameDuration: (frameSamples * 1e6) / sampleRate },
      });
      if (!enc.supported) return "pcm16";
    }
    return "opus";
  } catch {
    return "pcm16";
  }
}

function floatToPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.round(samples[i] * 32768);
    out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v || 0;
  }
  return out;
}

function randomStreamId() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/**
 * Turns contiguous microphone blocks (one `frameSamples` block at a time,
 * each with its position) into upstream messages of `framesPerMessage`
 * blocks. A block whose position does not continue the last one starts a new
 * stream (new stream id, fresh encoder), as the protocol asks.
 */
export class UpstreamEncoder {
  constructor({ codec, sampleRate, frameSamples, lookahead, framesPerMessage = 10, send, onError = () => {} }) {
    this.codec = codec;
    if (!Number.isInteger(lookahead)) throw new Error("lookahead (opus_lookahead_samples from /api/constants) is required");
    this.lookahead = lookahead;
    this.sampleRate = sampleRate;
    this.frameSamples = frameSamples;
    this.framesPerMessage = framesPerMessage;
    this.send = send;
    this.onError = onError;
    this.stream = null;
    this.messages = 0;
    this.dropped = 0;
  }

  push(pos, samples) {
    if (this.stream !== null && this.stream.busy()) {
      // The encoder cannot keep up. Dropping one block inside a stream would
      // shift every later packet's position, so end the stream instead; the
      // next block starts a new one at its own position.
      this.end();
      this.dropped++;
      return;
    }
    if (this.stream === null || pos !== this.stream.nextPos) this.newStream(pos);
    this.stream.nextPos = pos + samples.length;
    this.stream.push(samples);
  }

  /** End the current stream (mic off); the next block starts a new one. */
  end() {
    if (this.stream) this.stream.finish();
    this.stream = null;
  }

  newStream(pos) {
    this.end();
    const id = randomStreamId();
    const common = { id, seq: 0, nextPos: pos };
    const emit = (start, payload) => {
      const codec = CODEC_IDS[this.codec];
      this.send(packUpstream({ codec, stream: id, seq: common.seq++, start, payload }));
      this.messages++;
    };
    this.stream = this.codec === "opus" ? this.opusStream(pos, common, emit) : this.pcmStream(pos, common, emit);
  }

  pcmStream(pos, common, emit) {
    const per = this.framesPerMessage * this.frameSamples;
    let pending = [];
    let pendingStart = pos;
    let count = 0;
    const flush = () => {
      if (!count) return;
      const all = new Float32Array(count);
      let at = 0;
      for (const block of pending) {
        all.set(block, at);
        at += block.length;
      }
      emit(pendingStart, floatToPcm16(all));
      pendingStart += count;
      pending = [];
      count = 0;
    };
    return {
      ...common,
      push: (samples) => {
        pending.push(samples);
        count += samples.length;
        if (count >= per) flush();
      },
      finish: flush,
      busy: () => false,
    };
  }

  opusStream(pos, common, emit) {
    const frame = this.frameSamples;
    // Position of encoded packet k: the decoder's output lags the input by the lookahead.
    const firstPos = pos - this.lookahead;
    let packets = [];
    let sent = 0;
    let inputs = 0;
    const flush = () => {
      if (!packets.length) return;
      emit(firstPos + sent * frame, packets);
      sent += packets.length;
      packets = [];
    };
    const encoder = new AudioEncoder({
      output: (chunk) => {
        const bytes = new Uint8Array(chunk.byteLength);
        chunk.copyTo(bytes);
        packets.push(bytes);
        if (packets.length >= this.framesPerMessage) flush();
      },
      error: (err) => this.onError(err),
    });
    encoder.configure({
      ...opusConfig(this.sampleRate),
      bitrate: OPUS_BITRATE,
      opus: { frameDuration: (frame * 1e6) / this.sampleRate },
    });
    return {
      ...common,
      push: (samples) => {
        if (encoder.state !== "configured") return;
        const timestamp = Math.round((inputs * frame * 1e6) / this.sampleRate);
        inputs++;
        const data = new AudioData({
          format: "f32",
          sampleRate: this.sampleRate,
          numberOfFrames: samples.length,
          numberOfChannels: 1,
          timestamp,
          data: samples,
        });
        encoder.encode(data);
        data.close();
      },
      busy: () => encoder.state !== "configured" || encoder.encodeQueueSize > 25,
      finish: () => {
        if (encoder.state !== "configured") return;
        encoder
          .flush()
          .then(flush, () => {})
          .finally(() => encoder.state !== "closed" && encoder.close());
      },
    };
  }
}

/**
 * Decodes downstream frames to float samples with their positions. One
 * decoder per tap; a new one when the tap (delay) changes or `start` jumps.
 */
export class DownstreamDecoder {
  constructor({ sampleRate, frameSamples, lookahead, onSamples, onError = () => {} }) {
    this.sampleRate = sampleRate;
    if (!Number.isInteger(lookahead)) throw new Error("lookahead (opus_lookahead_samples from /api/constants) is required");
    this.lookahead = lookahead;
    this.frameSamples = frameSamples;
    this.onSamples = onSamples;
    this.onError = onError;
    this.session = null;
    this.resets = 0;
    this.dropped = 0;
  }

  push(frame) {
    if (frame.codec === CODEC_IDS.pcm16) {
      const samples = new Float32Array(frame.payload.length);
      for (let i = 0; i < samples.length; i++) samples[i] = frame.payload[i] / 32768;
      this.onSamples(frame.start, samples, frame.delay);
      return;
    }
    const s = this.session;
    if (s === null || s.delay !== frame.delay || s.next !== frame.start || s.decoder.state !== "configured") {
      this.newSession(frame.delay, frame.start);
    }
    const session = this.session;
    if (session.decoder.decodeQueueSize > 100) {
      this.dropped += frame.count;
      this.close();
      return;
    }
    const perPacketUs = (this.frameSamples * 1e6) / this.sampleRate;
    frame.payload.forEach((packet, i) => {
      const k = (frame.start - session.base) / this.frameSamples + i;
      session.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: Math.round(k * perPacketUs), data: packet }));
    });
    session.next = frame.start + frame.count * this.frameSamples;
  }

  newSession(delay, start) {
    this.close();
    this.resets++;
    const base = start;
    const decoder = new AudioDecoder({
      output: (data) => {
        const samples = new Float32Array(data.numberOfFrames);
        data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
        const offset = Math.round((data.timestamp * this.sampleRate) / 1e6);
        data.close();
        this.onSamples(base + offset - this.lookahead, samples, delay);
      },
      error: (err) => this.onError(err),
    });
    decoder.configure(opusConfig(this.sampleRate));
    this.session = { delay, base, next: start, decoder };
  }

  close() {
    if (this.session && this.session.decoder.state !== "closed") this.session.decoder.close();
    this.session = null;
  }
}
