// Runs search.js on the scripted model for every run of a case file written by
// tests/test_web_search.py and prints the hypotheses as JSON, for the test to compare with
// seq2seq/decoding/search.py's. Usage: node web/test/search_equal.mjs CASE.json
import { readFileSync } from "node:fs";
import { beamSearch, greedySearch, maxOutputLengths, translateIds, withoutPieces } from "../../seq2seq/deploy/web/search.js";
import { ScriptedModel } from "./scripted_model.mjs";

const plain = (hyps) => hyps.map((h) => ({
  tokens: h.tokens, score: h.score, log_prob: h.logProb,
  attention: h.attention === null ? null : h.attention.map((row) => Array.from(row)),
}));

const spec = JSON.parse(readFileSync(process.argv[2], "utf-8"));
const models = spec.models.map((m) => new ScriptedModel(m.log_probs, m.attention));
const runs = [];
for (const run of spec.runs) {
  // A run with `banned` pieces searches the model as the page does with manifest.json's `banned`.
  const model = run.banned ? withoutPieces(models[run.model], run.banned) : models[run.model];
  let results;
  if (run.kind === "translate") {
    results = await translateIds(model, run.src, {
      beamSize: run.beam_size, batchSize: run.batch_size, alpha: run.alpha, maxLenRatio: run.max_len_ratio,
      maxLenOffset: run.max_len_offset, nbest: run.nbest, returnAttention: run.return_attention,
    });
  } else {
    const lengths = run.src.map((s) => s.length);
    const options = { maxLengths: run.max_lengths, alpha: run.alpha, returnAttention: run.return_attention };
    results = run.kind === "greedy"
      ? await greedySearch(model, run.src, lengths, options)
      : await beamSearch(model, run.src, lengths, { ...options, beamSize: run.beam_size, nbest: run.nbest });
  }
  runs.push(results.map(plain));
}
const maxLengths = (spec.max_lengths ?? []).map((c) => maxOutputLengths(c.lengths, c.ratio, c.offset));
process.stdout.write(JSON.stringify({ runs, max_lengths: maxLengths }));
