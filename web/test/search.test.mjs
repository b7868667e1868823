// search.js on hand-set probabilities (node --test web/test/search.test.mjs). Its agreement with
// seq2seq/decoding/search.py is tests/test_web_search.py's job; these check the rules on their own.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EOS, beamSearch, bestCandidates, greedySearch, lengthPenalty, maxOutputLengths } from "../../seq2seq/deploy/web/search.js";

const VOCAB = 8; // PAD UNK BOS EOS and the pieces 4..7

/** Next-piece probabilities looked up by the pieces produced so far (one sentence). */
class Script {
  constructor(script, fallback = { [EOS]: 0.9 }) {
    this.script = script;
    this.fallback = fallback;
  }

  start(src, lengths) {
    return { memory: new Prefixes(lengths.map(() => [])), state: new Prefixes(lengths.map(() => [])) };
  }

  step(prev, state, memory) {
    const prefixes = state.values.map((p, r) => (p.length === 0 && prev[r] === 2 ? [] : p.concat([prev[r]])));
    const logProbs = new Float32Array(prev.length * VOCAB).fill(Math.log(1e-6));
    prefixes.forEach((p, r) => {
      for (const [piece, prob] of Object.entries(this.script[p.join(" ")] ?? this.fallback)) {
        logProbs[r * VOCAB + Number(piece)] = Math.log(prob);
      }
    });
    return { logProbs, vocab: VOCAB, state: new Prefixes(prefixes), attention: null };
  }
}

class Prefixes {
  constructor(values) {
    this.values = values;
  }

  select(rows) {
    return new Prefixes(rows.map((r) => this.values[r]));
  }
}

// Greedy takes 4 (0.5) and ends with [4, 4] (0.5 * 0.36 * 0.9); [5] has 0.4 * 0.9, which beam finds.
const TRAP = { "": { 4: 0.5, 5: 0.4 }, "4": { 4: 0.36, 5: 0.34 }, "5": { [EOS]: 0.9 } };

test("greedy falls into the trap and beam search does not", async () => {
  const model = new Script(TRAP);
  const [[greedy]] = await greedySearch(model, [[9]], [1], { maxLengths: [10], alpha: 0 });
  assert.deepEqual(greedy.tokens, [4, 4]);
  const [[beam]] = await beamSearch(model, [[9]], [1], { beamSize: 2, maxLengths: [10], alpha: 0 });
  assert.deepEqual(beam.tokens, [5]);
  assert.ok(Math.abs(beam.logProb - Math.log(0.4 * 0.9)) < 1e-6);
  assert.equal(beam.score, beam.logProb); // alpha 0: no length penalty
});

test("EOS is forced at the maximum length, and the score divides by the length penalty with EOS", async () => {
  const model = new Script({}, { 4: 0.9, [EOS]: 0.05 });
  for (const search of [greedySearch, (m, s, l, o) => beamSearch(m, s, l, { ...o, beamSize: 3 })]) {
    const [[hyp]] = await search(model, [[9]], [1], { maxLengths: [3], alpha: 1 });
    assert.deepEqual(hyp.tokens, [4, 4]);
    assert.ok(Math.abs(hyp.score - hyp.logProb / lengthPenalty(3, 1)) < 1e-12);
  }
});

test("beam search with one beam equals greedy", async () => {
  const model = new Script({ "": { 4: 0.6, 6: 0.3 }, "4": { 7: 0.7 }, "4 7": { 5: 0.5, [EOS]: 0.45 } });
  const greedy = await greedySearch(model, [[9], [8, 8]], [1, 2], { maxLengths: [10, 10], alpha: 1 });
  const beam = await beamSearch(model, [[9], [8, 8]], [1, 2], { beamSize: 1, maxLengths: [10, 10], alpha: 1 });
  assert.deepEqual(beam.map((h) => h[0].tokens), greedy.map((h) => h[0].tokens));
});

test("equal candidates rank the lower (beam, piece) first", () => {
  const lp = Float32Array.from([0, -1, -1, -2, -1, -1, 0, -3]); // two beams of four pieces
  const { score, parent, token } = bestCandidates(Float32Array.from([0, 0]), 0, lp, 0, 2, 4, 4);
  assert.deepEqual(Array.from(score), [0, 0, -1, -1]);
  assert.deepEqual(Array.from(parent), [0, 1, 0, 0]);
  assert.deepEqual(Array.from(token), [0, 2, 1, 2]);
});

test("maximum lengths round as torch's float32 product does", () => {
  assert.deepEqual(maxOutputLengths([1, 10, 7], 1.5, 10), [11, 25, 20]);
  assert.deepEqual(maxOutputLengths([10], 0.7, 0), [7]);
});
