// A scripted model behind search.js's decoding contract, the twin of tests/test_web_search.py's
// ScriptedModel: each row's state is an integer that every step moves deterministically, and the
// step's log-probabilities and attention are rows of fixed tables indexed by that state.

export class ScriptedModel {
  /** `logProbs`: (states, vocab) numbers; `attention`: (states, width) numbers. */
  constructor(logProbs, attention) {
    this.states = logProbs.length;
    this.vocab = logProbs[0].length;
    this.table = Float32Array.from(logProbs.flat());
    this.width = attention[0].length;
    this.attention = Float32Array.from(attention.flat());
    this.steps = 0;
  }

  start(srcRows, srcLengths) {
    const srcLen = Math.max(...srcLengths);
    const state = srcRows.map((row, i) => (row.reduce((a, id, j) => a + id * (j + 1), 0) + 7 * srcLengths[i]) % this.states);
    return { memory: new Rows(Array(srcRows.length).fill(srcLen)), state: new Rows(state) };
  }

  step(prev, state, memory) {
    this.steps++;
    const rows = prev.length;
    const srcLen = memory.values[0];
    const next = state.values.map((h, r) => (h * 31 + prev[r] * 17 + 5) % this.states);
    const logProbs = new Float32Array(rows * this.vocab);
    const attention = new Float32Array(rows * srcLen);
    next.forEach((h, r) => {
      logProbs.set(this.table.subarray(h * this.vocab, (h + 1) * this.vocab), r * this.vocab);
      attention.set(this.attention.subarray(h * this.width, h * this.width + srcLen), r * srcLen);
    });
    return { logProbs, vocab: this.vocab, state: new Rows(next), attention };
  }
}

class Rows {
  constructor(values) {
    this.values = values;
  }

  select(rows) {
    return new Rows(rows.map((r) => this.values[r]));
  }
}
