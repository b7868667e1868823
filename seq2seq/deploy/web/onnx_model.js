// An exported model (encoder.onnx and decoder_step.onnx) behind the decoding contract that
// search.js searches: start, step, and select on memory and state.
//
// Tensors are kept as {type, data, dims} on the JavaScript side and wrapped as ort.Tensor for
// each run, so that selecting rows (finished sentences leave the batch, beams are reordered) is a
// plain copy of typed-array rows.

/** Rows `rows` of `tensor` along dimension `axis` (0 or 1), as a new {type, data, dims}. */
export function selectRows(tensor, rows, axis = 0) {
  const { type, data, dims } = tensor;
  const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
  const size = dims[axis];
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new data.constructor(outer * rows.length * inner);
  for (let o = 0; o < outer; o++) {
    rows.forEach((r, x) => {
      const from = (o * size + r) * inner;
      out.set(data.subarray(from, from + inner), (o * rows.length + x) * inner);
    });
  }
  const newDims = dims.slice();
  newDims[axis] = rows.length;
  return { type, data: out, dims: newDims };
}

function plain(tensor) {
  return { type: tensor.type, data: tensor.data, dims: Array.from(tensor.dims) };
}

/** The encoder's outputs that every step reads: memory, keys and mask, (rows, src_len, ...). */
class Memory {
  constructor(memory, keys, mask) {
    this.memory = memory;
    this.keys = keys;
    this.mask = mask;
  }

  select(rows) {
    return new Memory(selectRows(this.memory, rows), selectRows(this.keys, rows), selectRows(this.mask, rows));
  }
}

/** The decoder's recurrent state: h and c (layers, rows, hidden), feed (rows, hidden). */
class State {
  constructor(h, c, feed) {
    this.h = h;
    this.c = c;
    this.feed = feed;
  }

  select(rows) {
    return new State(selectRows(this.h, rows, 1), selectRows(this.c, rows, 1), selectRows(this.feed, rows));
  }
}

export class OnnxModel {
  /** `ort` is the onnxruntime-web module; `encoder` and `decoder` its InferenceSessions. */
  constructor(ort, encoder, decoder, { pad = 0 } = {}) {
    this.ort = ort;
    this.encoder = encoder;
    this.decoder = decoder;
    this.pad = pad;
  }

  static async load(ort, encoderUrl, decoderUrl, options = {}) {
    const sessionOptions = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const [encoder, decoder] = await Promise.all([
      ort.InferenceSession.create(encoderUrl, sessionOptions),
      ort.InferenceSession.create(decoderUrl, sessionOptions),
    ]);
    return new OnnxModel(ort, encoder, decoder, options);
  }

  tensor({ type, data, dims }) {
    return new this.ort.Tensor(type, data, dims);
  }

  /** Run `session` on the feeds it declares (a graph may leave out an input it does not read). */
  static run(session, feeds) {
    return session.run(Object.fromEntries(session.inputNames.map((name) => [name, feeds[name]])));
  }

  /** Encode `srcRows` (arrays of piece ids), padded with `pad` to the longest. */
  async start(srcRows, srcLengths) {
    const batch = srcRows.length;
    const srcLen = Math.max(...srcLengths);
    const src = new BigInt64Array(batch * srcLen).fill(BigInt(this.pad)); // (batch, src_len)
    srcRows.forEach((row, i) => row.forEach((id, j) => { src[i * srcLen + j] = BigInt(id); }));
    const out = await OnnxModel.run(this.encoder, {
      src: this.tensor({ type: "int64", data: src, dims: [batch, srcLen] }),
      src_lengths: this.tensor({ type: "int64", data: BigInt64Array.from(srcLengths, (n) => BigInt(n)), dims: [batch] }),
    });
    return {
      memory: new Memory(plain(out.memory), plain(out.keys), plain(out.mask)),
      state: new State(plain(out.h), plain(out.c), plain(out.feed)),
    };
  }

  /** One decoding step for every row: log-probabilities (rows * vocab), new state, attention. */
  async step(prev, state, memory) {
    const rows = prev.length;
    const out = await OnnxModel.run(this.decoder, {
      prev: this.tensor({ type: "int64", data: BigInt64Array.from(prev, (id) => BigInt(id)), dims: [rows] }),
      h: this.tensor(state.h),
      c: this.tensor(state.c),
      feed: this.tensor(state.feed),
      memory: this.tensor(memory.memory),
      keys: this.tensor(memory.keys),
      mask: this.tensor(memory.mask),
    });
    return {
      logProbs: out.log_probs.data, // (rows, vocab)
      vocab: out.log_probs.dims[1],
      state: new State(plain(out.h_out), plain(out.c_out), plain(out.feed_out)),
      attention: out.attention.data, // (rows, src_len)
    };
  }
}
