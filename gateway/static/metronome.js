// The metronome, made by each page from the song's positions: no audio on
// the wire, nothing to drift. The arithmetic is common/tracks.py's, checked
// against it in tests/test_browser_units.py. Positions are absolute samples.
//
// The song's origin is where its music (and track sample 0) begins:
// start_pos, plus one bar when the metronome counts in. Beat k clicks at
// origin + round(k · 60 · rate / bpm) (k from −beats in a count-in), each
// beat rounded from the origin so that none drifts; beat k is accented when
// k mod beats is 0. Also loaded by the AudioWorklet (no DOM here).

export const SAMPLE_RATE = 48000;
export const CLICK_SAMPLES = 480; // 10 ms
export const CLICK_HZ = 1000;
export const CLICK_ACCENT_HZ = 1500;

/** Where beat `beat` clicks when the music starts at `origin`. */
export function beatPosition(origin, bpm, beat) {
  return origin + Math.round((beat * 60 * SAMPLE_RATE) / bpm);
}

/** The count-in bar's length in samples (0 when off). */
export function countInSamples(metronome) {
  if (!metronome || !metronome.on || !metronome.count_in) return 0;
  return Math.round((metronome.beats * 60 * SAMPLE_RATE) / metronome.bpm);
}

export function songOrigin(startPos, metronome) {
  return startPos + countInSamples(metronome);
}

/** The clicks `{pos, beat, accent}` starting in [lo, hi) of a song started at `startPos`. */
export function clicksBetween(lo, hi, startPos, metronome, endPos = null) {
  if (!metronome || !metronome.on || hi <= lo) return [];
  const origin = songOrigin(startPos, metronome);
  const first = metronome.count_in ? -metronome.beats : 0;
  const stop = endPos === null ? hi : Math.min(hi, endPos);
  const period = (60 * SAMPLE_RATE) / metronome.bpm;
  let k = Math.max(first, Math.floor((Math.max(lo, startPos) - origin) / period) - 1);
  const clicks = [];
  for (;;) {
    const pos = beatPosition(origin, metronome.bpm, k);
    if (pos >= stop) return clicks;
    if (pos >= lo && pos >= startPos) clicks.push({ pos, beat: k, accent: ((k % metronome.beats) + metronome.beats) % metronome.beats === 0 });
    k++;
  }
}

/** The click's sound: a 10 ms sine burst with a fast attack and an exponential decay. */
export function clickWave(accent) {
  const hz = accent ? CLICK_ACCENT_HZ : CLICK_HZ;
  const amp = accent ? 0.6 : 0.4;
  const wave = new Float32Array(CLICK_SAMPLES);
  for (let i = 0; i < CLICK_SAMPLES; i++) {
    const attack = Math.min(1, i / 24);
    wave[i] = amp * attack * Math.exp(-i / 120) * Math.sin((2 * Math.PI * hz * i) / SAMPLE_RATE);
  }
  return wave;
}

/**
 * The click sample at `pos`, or 0: for the worklet, one position at a time.
 * `song` is `{start, end, origin, metronome}` (end null while running).
 */
export function clickSampleAt(pos, song, waves) {
  const m = song.metronome;
  if (!m || !m.on || pos < song.start || (song.end !== null && pos >= song.end)) return 0;
  const first = m.count_in ? -m.beats : 0;
  const k0 = Math.floor(((pos - song.origin) * m.bpm) / (60 * SAMPLE_RATE));
  let sum = 0;
  for (let k = k0 + 1; k >= k0 - 1; k--) {
    if (k < first) break;
    const at = beatPosition(song.origin, m.bpm, k);
    const d = pos - at;
    if (d >= 0 && d < CLICK_SAMPLES && at >= song.start) sum += waves[((k % m.beats) + m.beats) % m.beats === 0 ? 1 : 0][d];
  }
  return sum;
}

/**
 * The song whose window [start, end) holds `pos`: `song`, or one of `earlier`, the
 * songs before it still audible (a later bucket still plays their last seconds
 * after the leader starts the next ones; an array, newest first, or one song or
 * null); null when none does. Songs are `{start, end, ...}`.
 */
export function songAt(pos, song, earlier) {
  if (song.start !== null && pos >= song.start) return song.end === null || pos < song.end ? song : null;
  const list = Array.isArray(earlier) ? earlier : earlier ? [earlier] : [];
  for (const before of list) if (before && pos >= before.start && pos < before.end) return before;
  return null;
}

/**
 * The song before `next` once it replaces `current`: `current` (ended by `next`'s
 * start at the latest) when `next` started elsewhere, else `previous` unchanged.
 */
export function previousSong(current, next, previous) {
  if (next.start === null) return null;
  if (current.start === null || current.start === next.start) return previous;
  const end = current.end === null ? next.start : Math.min(current.end, next.start);
  return { ...current, end: Math.max(current.start, end) };
}

/**
 * The songs before `next`, newest first, once it replaces `current`, for a server
 * that does not list them: `current` (as {@link previousSong}) ahead of `earlier`,
 * at most `keep` of them.
 */
export function earlierSongs(current, next, earlier, keep = 8) {
  if (next.start === null) return [];
  const before = previousSong(current, next, earlier.length ? earlier[0] : null);
  if (before === null) return [];
  if (earlier.length && before === earlier[0]) return earlier;
  return [before, ...earlier.filter((e) => e.start < before.start)].slice(0, keep);
}
