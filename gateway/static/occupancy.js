// The occupancy debug chart: which 128-sample frames of the room's ring hold
// audio, from GET /api/rooms/{room}/occupancy (docs/redis.md, `bb:{R}:occ`).
// Bit j of the bitmap (MSB first) covers ring indices [128j, 128j + 128); ring
// index i is the position p in [clock − ring_samples, clock) with
// p mod ring_samples = i. The chart draws positions left (oldest) to right
// (the mixer's clock), so a singer's audio appears where it sits in time.

function base64Bytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** Validate and decode the JSON snapshot; throws RangeError on a malformed one. */
export function decodeOccupancy(json) {
  const { clock, ring_samples: ringSamples, frame_samples: frameSamples } = json;
  for (const [name, v] of [["clock", clock], ["ring_samples", ringSamples], ["frame_samples", frameSamples]]) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`occupancy ${name} must be a non-negative integer, got ${v}`);
  }
  if (frameSamples === 0 || ringSamples % frameSamples) {
    throw new RangeError(`ring_samples ${ringSamples} is not a multiple of frame_samples ${frameSamples}`);
  }
  const nFrames = ringSamples / frameSamples;
  const bitmap = base64Bytes(json.bitmap);
  if (bitmap.length !== Math.ceil(nFrames / 8)) {
    throw new RangeError(`bitmap has ${bitmap.length} bytes, ${nFrames} frames need ${Math.ceil(nFrames / 8)}`);
  }
  return { clock, ringSamples, frameSamples, nFrames, bitmap, occupied: json.occupied };
}

/** Is ring frame j marked? */
export function frameBit(occ, j) {
  return (occ.bitmap[j >> 3] >> (7 - (j & 7))) & 1;
}

/**
 * Occupancy in position order: element k is 1 when the frame holding position
 * `clock − ring_samples + k·frame_samples` is marked. Returns {start, bits}.
 */
export function framesByPosition(occ) {
  const start = occ.clock - occ.ringSamples;
  const bits = new Uint8Array(occ.nFrames);
  for (let k = 0; k < occ.nFrames; k++) {
    const p = start + k * occ.frameSamples;
    bits[k] = frameBit(occ, Math.floor((p % occ.ringSamples) / occ.frameSamples));
  }
  return { start, bits };
}

/**
 * Draw the last `windowSamples` of the ring (all of it by default), the
 * mixer's clock at the right edge. `markers`: [{pos, label, color}] room
 * positions to mark (where each tap is being mixed, where the song started).
 * Time ticks every 5 s; labels that would overlap go to a second row.
 */
export function drawOccupancy(canvas, occ, markers, sampleRate, windowSamples = occ.ringSamples) {
  const ratio = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || canvas.width;
  const cssHeight = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  const width = cssWidth;
  const labelRows = 2;
  const chartH = cssHeight - 13 * labelRows - 2;
  const { start: ringStart, bits: allBits } = framesByPosition(occ);
  const span = Math.min(windowSamples, occ.ringSamples);
  const first = allBits.length - Math.floor(span / occ.frameSamples);
  const bits = allBits.subarray(first);
  const start = ringStart + first * occ.frameSamples;
  const style = getComputedStyle(canvas);
  const ink = style.color || "#333";
  g.clearRect(0, 0, width, cssHeight);
  g.fillStyle = style.getPropertyValue("--occ-empty").trim() || "#e8ecf1";
  g.fillRect(0, 0, width, chartH);
  g.fillStyle = style.getPropertyValue("--occ-full").trim() || "#2f6fde";
  const perPx = bits.length / width;
  for (let x = 0; x < width; x++) {
    const a = Math.floor(x * perPx);
    const b = Math.max(a + 1, Math.floor((x + 1) * perPx));
    let on = 0;
    for (let k = a; k < b && k < bits.length; k++) on += bits[k];
    if (on) {
      g.globalAlpha = 0.3 + (0.7 * on) / (b - a);
      g.fillRect(x, 0, 1, chartH);
    }
  }
  g.globalAlpha = 1;
  const xOf = (pos) => ((pos - start) / span) * (width - 2);
  // Ticks every 5 s back from the clock.
  g.fillStyle = "rgba(0, 0, 0, 0.12)";
  for (let t = 5 * sampleRate; t < span; t += 5 * sampleRate) g.fillRect(Math.round(xOf(occ.clock - t)), 0, 1, chartH);
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "top";
  const rowEnds = new Array(labelRows).fill(-Infinity);
  const place = (text, x, color) => {
    const w = g.measureText(text).width;
    const left = Math.max(0, Math.min(x - w / 2, width - w));
    let row = rowEnds.findIndex((end) => end + 6 <= left);
    if (row < 0) row = rowEnds.indexOf(Math.min(...rowEnds));
    rowEnds[row] = left + w;
    g.fillStyle = color;
    g.fillText(text, left, chartH + 2 + 13 * row);
  };
  place(`−${Math.round(span / sampleRate)} s`, 0, ink);
  const visible = markers
    .filter((m) => typeof m.pos === "number" && m.pos >= start && m.pos <= occ.clock)
    .sort((a, b) => a.pos - b.pos);
  for (const m of visible) {
    const x = Math.round(xOf(m.pos));
    g.fillStyle = m.color || "#d33";
    g.fillRect(x, 0, 2, chartH);
    place(m.label, x, m.color || "#d33");
  }
}

/** Polls the endpoint while started and redraws. */
export class OccupancyChart {
  constructor(canvas, { sampleRate, periodMs = 1000, markers = () => [], windowSamples = () => undefined, onError = () => {} }) {
    this.canvas = canvas;
    this.sampleRate = sampleRate;
    this.windowSamples = windowSamples;
    this.periodMs = periodMs;
    this.markers = markers;
    this.onError = onError;
    this.timer = null;
    this.room = null;
    this.last = null;
  }

  start(room) {
    this.room = room;
    if (this.timer === null) {
      this.timer = setInterval(() => this.refresh(), this.periodMs);
      this.refresh();
    }
  }

  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  async refresh() {
    try {
      const response = await fetch(`/api/rooms/${encodeURIComponent(this.room)}/occupancy`, { cache: "no-store" });
      if (!response.ok) throw new Error(`occupancy: HTTP ${response.status}`);
      this.last = decodeOccupancy(await response.json());
      drawOccupancy(this.canvas, this.last, this.markers(this.last), this.sampleRate, this.windowSamples(this.last));
    } catch (err) {
      this.onError(err);
    }
  }
}
