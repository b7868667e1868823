// Greedy and beam search for the in-browser translator: a port of seq2seq/search.py that gives
// the same hypotheses and scores for the same step function.
//
// Written only against the decoding contract of a model (as search.py is):
//     {memory, state} = await model.start(srcRows, srcLengths)
//     {logProbs, vocab, state, attention} = await model.step(prev, state, memory)
//     memory.select(rows), state.select(rows)
// where logProbs is a Float32Array (rows * vocab) and attention a Float32Array (rows * srcLen),
// srcLen being the padded source length of the batch (or null when the model gives none).
//
// PyTorch runs the search in float32; so does this port, with Math.fround where torch adds or
// divides float32 tensors, so that sums and comparisons round as they do there. Where torch.topk
// ranks equal candidates in an unspecified order, this port ranks the lower index first
// (beam-major, then piece), as torch's argmax does.

export const BOS = 2;
export const EOS = 3;

const f32 = Math.fround;

/** GNMT length penalty ((5 + length) / 6) ** alpha; length counts EOS. */
export function lengthPenalty(length, alpha) {
  return Math.pow((5 + length) / 6, alpha);
}

/** Most output pieces (EOS included) allowed per sentence: ratio * source + offset, computed in
 * float32 and truncated as torch's `(lengths.float() * ratio).long() + offset` is. */
export function maxOutputLengths(srcLengths, ratio, offset) {
  const r = f32(ratio);
  return srcLengths.map((n) => Math.trunc(f32(f32(n) * r)) + offset);
}

/** The length penalty of a float32 length in float32, as beam search's stopping bound takes it. */
function lengthPenalty32(length, alpha) {
  return f32(Math.pow(f32(f32(5 + length) / 6), f32(alpha)));
}

/** Rows `columns` wide of a flat Float32Array, row `row`, first `width` columns, as a copy. */
function rowOf(flat, row, columns, width = columns) {
  return flat.slice(row * columns, row * columns + width);
}

/**
 * Pick the most likely piece at every step. Resolves to one hypothesis per sentence,
 * [{tokens, score, logProb, attention}], attention being an array of Float32Array rows
 * (one per output step, EOS included, srcLengths[i] wide) when `returnAttention`.
 */
export async function greedySearch(model, src, srcLengths, { maxLengths, alpha = 0, returnAttention = false,
                                                              bos = BOS, eos = EOS }) {
  const batch = srcLengths.length;
  let { memory, state } = await model.start(src, srcLengths);
  const steps = Math.max(...maxLengths);
  const tokens = Array.from({ length: batch }, () => []);
  const logProbs = new Float32Array(batch); // float32 sums, as torch keeps them
  const lengths = new Array(batch).fill(steps);
  const attention = returnAttention ? Array.from({ length: batch }, () => []) : null;
  let active = Array.from({ length: batch }, (_, i) => i); // original rows still decoding
  let prev = new Array(batch).fill(bos);
  for (let t = 0; t < steps; t++) {
    const out = await model.step(prev, state, memory);
    state = out.state;
    const vocab = out.vocab;
    const best = new Array(active.length);
    const keep = [];
    for (let r = 0; r < active.length; r++) {
      const s = active[r];
      const base = r * vocab;
      let arg = 0;
      let top = out.logProbs[base];
      for (let v = 1; v < vocab; v++) {
        if (out.logProbs[base + v] > top) { top = out.logProbs[base + v]; arg = v; } // first maximum wins
      }
      if (t >= maxLengths[s] - 1) arg = eos;
      logProbs[s] += out.logProbs[base + arg];
      tokens[s].push(arg);
      if (attention !== null && out.attention) attention[s].push(rowOf(out.attention, r, out.attention.length / active.length));
      best[r] = arg;
      if (arg === eos) lengths[s] = t + 1;
      else keep.push(r);
    }
    if (keep.length === active.length) {
      prev = best;
      continue;
    }
    if (keep.length === 0) break;
    active = keep.map((r) => active[r]);
    prev = keep.map((r) => best[r]);
    memory = memory.select(keep);
    state = state.select(keep);
  }
  return tokens.map((row, i) => {
    const length = lengths[i];
    const total = logProbs[i];
    const hyp = { tokens: row.slice(0, Math.max(length - 1, 0)), score: total / lengthPenalty(length, alpha),
                  logProb: total, attention: null };
    if (attention !== null) hyp.attention = attention[i].slice(0, length).map((a) => a.slice(0, srcLengths[i]));
    return [hyp];
  });
}

/**
 * The `count` best extensions f32(scores[b] + lp[b, v]) of one sentence over its beams b and
 * pieces v, best first, as {score: Float32Array, parent: Int32Array, token: Int32Array}. Equal
 * candidates rank lower (beam, piece) first. With `forced`, only EOS may follow (as torch adds
 * -inf to every other piece).
 */
export function bestCandidates(scores, scoreOffset, logProbs, rowOffset, k, vocab, count, { forced = false, eos = EOS } = {}) {
  const top = new Float32Array(count);
  const parent = new Int32Array(count);
  const token = new Int32Array(count);
  let filled = 0;
  const consider = (value, b, v) => {
    if (filled === count) {
      if (!(value > top[count - 1])) return; // ties keep the earlier candidate
    } else {
      filled++;
    }
    let j = filled - 1; // insert after every candidate at least as good
    while (j > 0 && top[j - 1] < value) {
      top[j] = top[j - 1]; parent[j] = parent[j - 1]; token[j] = token[j - 1];
      j--;
    }
    top[j] = value; parent[j] = b; token[j] = v;
  };
  for (let b = 0; b < k; b++) {
    const s = scores[scoreOffset + b];
    const base = (rowOffset + b) * vocab;
    for (let v = 0; v < vocab; v++) {
      const lp = forced && v !== eos ? -Infinity : logProbs[base + v];
      const value = f32(s + lp);
      if (filled === count && !(value > top[count - 1])) continue;
      consider(value, b, v);
    }
  }
  return { score: top, parent, token };
}

/**
 * Beam search with a GNMT length penalty, as search.py's beam_search: resolves to the `nbest` best
 * hypotheses per sentence, best first, ranked by logProb / lengthPenalty. Live beams are ranked by
 * raw log-probability; a sentence stops as soon as its best candidate ends, when no live beam can
 * beat its finished ones any more, or at its maximum length (EOS is forced).
 */
export async function beamSearch(model, src, srcLengths, { beamSize, maxLengths, alpha = 1, nbest = 1,
                                                            returnAttention = false, bos = BOS, eos = EOS }) {
  if (nbest > beamSize) throw new Error(`nbest (${nbest}) cannot exceed beamSize (${beamSize})`);
  const batch = srcLengths.length;
  const k = beamSize;
  let { memory, state } = await model.start(src, srcLengths);
  const expand = [];
  for (let s = 0; s < batch; s++) for (let j = 0; j < k; j++) expand.push(s);
  memory = memory.select(expand);
  state = state.select(expand);
  let active = Array.from({ length: batch }, (_, i) => i); // original sentence of each active row group
  let scores = new Float32Array(batch * k).fill(-Infinity);
  for (let s = 0; s < batch; s++) scores[s * k] = 0; // all beams start identical: only the first expands
  let prev = new Array(batch * k).fill(bos);
  let history = Array.from({ length: batch * k }, () => []);
  let attnHistory = returnAttention ? Array.from({ length: batch * k }, () => []) : null;
  const finished = Array.from({ length: batch }, () => []);
  const steps = Math.max(...maxLengths);
  for (let t = 0; t < steps; t++) {
    const n = active.length;
    const out = await model.step(prev, state, memory);
    state = out.state;
    const vocab = out.vocab;
    let attnNow = null;
    if (attnHistory !== null && out.attention) {
      const width = out.attention.length / (n * k);
      attnNow = attnHistory.map((past, row) => past.concat([rowOf(out.attention, row, width)]));
    }
    const count = Math.min(2 * k, k * vocab);
    const newScores = new Float32Array(n * k);
    const newParent = new Int32Array(n * k);
    const newToken = new Int32Array(n * k);
    const keep = [];
    for (let i = 0; i < n; i++) {
      const s = active[i];
      const forced = t >= maxLengths[s] - 1;
      const cand = bestCandidates(scores, i * k, out.logProbs, i * k, k, vocab, count, { forced, eos });
      const isEos = Array.from(cand.token, (v) => v === eos);

      // EOS among the k best candidates ends a hypothesis.
      for (let j = 0; j < k; j++) {
        if (!isEos[j] || !Number.isFinite(cand.score[j])) continue;
        const row = i * k + cand.parent[j];
        const seq = history[row].slice();
        const total = cand.score[j];
        const hyp = { tokens: seq, score: total / lengthPenalty(seq.length + 1, alpha), logProb: total, attention: null };
        if (attnNow !== null) hyp.attention = attnNow[row].map((a) => a.slice(0, srcLengths[s]));
        finished[s].push(hyp);
      }

      // The k best candidates that did not end continue (EOS ones rank last), in score order.
      const pick = [];
      for (let j = 0; j < count && pick.length < k; j++) if (!isEos[j]) pick.push(j);
      for (let j = 0; j < count && pick.length < k; j++) if (isEos[j]) pick.push(j);
      for (let j = 0; j < k; j++) {
        const c = pick[j];
        newScores[i * k + j] = isEos[c] ? -Infinity : cand.score[c];
        newParent[i * k + j] = i * k + cand.parent[c];
        newToken[i * k + j] = cand.token[c];
      }

      // Done when the best candidate was EOS (the best path is complete), or when k hypotheses
      // have finished and no live one can still beat the best of them: a live score can only
      // fall, and the length penalty divides it by at most lengthPenalty(max). torch compares
      // these in float32.
      const counts = finished[s].length;
      const bestDone = f32(finished[s].reduce((m, h) => Math.max(m, h.score), -Infinity));
      const bound = f32(newScores[i * k] / lengthPenalty32(maxLengths[s], alpha));
      const done = forced || (isEos[0] && counts >= nbest) || (counts >= k && bestDone >= bound);
      if (!done) keep.push(i);
    }
    if (keep.length === 0) break;
    const rows = [];
    for (const i of keep) for (let j = 0; j < k; j++) rows.push(newParent[i * k + j]);
    const kept = [];
    for (const i of keep) for (let j = 0; j < k; j++) kept.push(i * k + j);
    history = kept.map((r, x) => history[rows[x]].concat([newToken[r]]));
    if (attnHistory !== null) attnHistory = attnNow === null ? rows.map(() => []) : rows.map((r) => attnNow[r]);
    state = state.select(rows);
    if (keep.length < n) memory = memory.select(kept);
    scores = Float32Array.from(kept, (r) => newScores[r]);
    active = keep.map((i) => active[i]);
    prev = kept.map((r) => newToken[r]);
  }
  // Array.prototype.sort is stable, as Python's sorted is: equal scores keep their finishing order.
  return finished.map((hyps) => hyps.slice().sort((a, b) => b.score - a.score).slice(0, nbest));
}

/**
 * `model` whose steps never choose `pieces` (target ids: the corpus tags of manifest.json's
 * `banned`): their log-probabilities become -Infinity at every step, as translator.py's
 * WithoutPieces fills them, so every search treats them exactly as search.py does.
 */
export function withoutPieces(model, pieces) {
  if (pieces.length === 0) return model;
  return {
    start: (srcRows, srcLengths) => model.start(srcRows, srcLengths),
    async step(prev, state, memory) {
      const out = await model.step(prev, state, memory);
      const logProbs = out.logProbs.slice(); // a copy: the model's array may be a table it reads again
      for (let r = 0; r < prev.length; r++) for (const id of pieces) logProbs[r * out.vocab + id] = -Infinity;
      return { ...out, logProbs };
    },
  };
}

/**
 * Search every source (arrays of piece ids); results come back in input order, one list of
 * hypotheses per source. Empty sources give an empty hypothesis without running the model.
 * Sources are sorted by length and searched `batchSize` at a time, as search.py's translate_ids.
 * `onBatch(done, total)` is called after each batch.
 */
export async function translateIds(model, srcIds, { beamSize, batchSize, alpha, maxLenRatio, maxLenOffset,
                                                     nbest = 1, returnAttention = false, bos = BOS, eos = EOS,
                                                     onBatch = null }) {
  const results = srcIds.map(() => [{ tokens: [], score: 0, logProb: 0, attention: null }]);
  const order = srcIds.map((_, i) => i).filter((i) => srcIds[i].length > 0);
  order.sort((a, b) => srcIds[a].length - srcIds[b].length); // stable: equal lengths keep input order
  for (let start = 0; start < order.length; start += batchSize) {
    const chunk = order.slice(start, start + batchSize);
    const src = chunk.map((i) => srcIds[i]);
    const lengths = src.map((s) => s.length);
    const maxLengths = maxOutputLengths(lengths, maxLenRatio, maxLenOffset);
    const hyps = beamSize === 1 && nbest === 1
      ? await greedySearch(model, src, lengths, { maxLengths, alpha, returnAttention, bos, eos })
      : await beamSearch(model, src, lengths, { beamSize, maxLengths, alpha, nbest, returnAttention, bos, eos });
    chunk.forEach((i, x) => { results[i] = hyps[x]; });
    if (onBatch) onBatch(Math.min(start + batchSize, order.length), order.length);
  }
  return results;
}
