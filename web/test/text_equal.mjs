// Encodes and decodes with text.js and @sctg/sentencepiece-js, as the page does, for
// tests/test_web_search.py to compare with seq2seq's encode_sources and detokenize.
// Usage: node web/test/text_equal.mjs CASE.json
import { readFileSync } from "node:fs";
import { SentencePieceProcessor } from "@sctg/sentencepiece-js";
import { Tokenizer, detokenize, encodeSources, modelPieces } from "../../seq2seq/deploy/web/text.js";

const spec = JSON.parse(readFileSync(process.argv[2], "utf-8"));
const bytes = new Uint8Array(readFileSync(spec.model));
const sp = new SentencePieceProcessor();
await sp._loadModel(bytes); // as translator.js loads it: from the model's bytes
const pieces = modelPieces(bytes);
const src = new Tokenizer(sp, pieces, { spelled: spec.src_pieces });
const tgt = new Tokenizer(sp, pieces, { kept: spec.tgt_kept });
const encoded = spec.tags.map((tag) => encodeSources(spec.lines, src, { maxLen: spec.max_len, srcTag: tag }));
process.stdout.write(JSON.stringify({
  encoded,
  texts: spec.outputs.map((ids) => detokenize(tgt, ids)),
  tgt_pieces: spec.outputs.map((ids) => tgt.pieces(ids)),
  src_pieces: encoded[0].ids.map((ids) => src.pieces(ids)),
}));
