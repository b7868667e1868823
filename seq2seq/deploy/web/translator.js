// The in-browser translator: loads an export folder (manifest.json, encoder.onnx,
// decoder_step.onnx, the SentencePiece models) from the page's own origin and translates with
// onnxruntime-web's WebAssembly backend. Nothing is requested from anywhere else.
//
// window.seq2seq = {ready: Promise, translate(lines, {beamSize}) -> Promise<string[]>,
//                   translateDetailed(lines, {beamSize, attention}), manifest (once ready),
//                   checksums (once ready): {verifiedWith: "Web Crypto" | "js-sha256" | null, why}}

import * as ort from "./ort.wasm.min.mjs";
import { SentencePieceProcessor } from "./sentencepiece.js";
import { OnnxModel } from "./onnx_model.js";
import { translateIds, withoutPieces } from "./search.js";
import { checkFile, checkFileList, sha256Hasher } from "./checksum.js";
import { heatmap } from "./heatmap.js";
import { Tokenizer, detokenize, encodeSources, inputLines, modelPieces } from "./text.js";

const FORMAT = "seq2seq-export";
const FORMAT_VERSION = 1;
const HERE = new URL("./", import.meta.url).href;

// The WebAssembly files are served from this folder; one thread needs no cross-origin isolation.
ort.env.wasm.wasmPaths = HERE;
ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;

const $ = (id) => document.getElementById(id);

async function fetchBytes(name, manifest, hasher) {
  const response = await fetch(new URL(name, HERE));
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  await checkFile(name, bytes, manifest.files, hasher);
  return bytes;
}

async function loadProcessor(bytes, name) {
  const sp = new SentencePieceProcessor();
  // @sctg/sentencepiece-js 1.3.3 loads from a file path (node) or base64; _loadModel takes the bytes.
  await sp._loadModel(bytes);
  const status = sp.processor.status();
  const text = status.ToString();
  status.delete();
  if (text !== "OK") throw new Error(`${name}: not a SentencePiece model (${text})`);
  return sp;
}

function checkManifest(manifest) {
  if (manifest.format !== FORMAT) throw new Error(`manifest.json: format is ${JSON.stringify(manifest.format)}, expected "${FORMAT}"`);
  if (manifest.format_version !== FORMAT_VERSION) {
    throw new Error(`manifest.json: format_version ${manifest.format_version}; this page reads version ${FORMAT_VERSION}`);
  }
  for (const key of ["special", "max_src_len", "tokenizers", "decoding", "banned"]) {
    if (manifest[key] === undefined) throw new Error(`manifest.json: ${key} is missing`);
  }
  checkFileList(manifest.files);
}

async function load() {
  const response = await fetch(new URL("manifest.json", HERE));
  if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status}`);
  const manifest = await response.json();
  checkManifest(manifest);
  const hasher = await sha256Hasher();
  const names = manifest.tokenizers;
  const [srcBytes, tgtBytes, encoderBytes, decoderBytes] = await Promise.all([
    fetchBytes(names.source, manifest, hasher),
    names.target === names.source ? null : fetchBytes(names.target, manifest, hasher),
    fetchBytes("encoder.onnx", manifest, hasher),
    fetchBytes("decoder_step.onnx", manifest, hasher),
  ]);
  const srcSp = await loadProcessor(srcBytes, names.source);
  const tgtSp = tgtBytes === null ? srcSp : await loadProcessor(tgtBytes, names.target);
  const srcTok = new Tokenizer(srcSp, modelPieces(srcBytes),
                               { spelled: manifest.src_pieces ?? null, kept: manifest.src_kept ?? null });
  const tgtTok = new Tokenizer(tgtSp, modelPieces(tgtBytes ?? srcBytes), { kept: manifest.tgt_kept ?? null });
  // The corpus tags are banned in the model itself, so greedy and beam search alike never write them.
  const model = withoutPieces(await OnnxModel.load(ort, encoderBytes, decoderBytes, { pad: manifest.special.pad }),
                              manifest.banned);
  return { manifest, srcTok, tgtTok, model, checksums: { verifiedWith: hasher.name, why: hasher.why ?? null } };
}

const loaded = load();
let queue = Promise.resolve(); // one search at a time: a session runs one call at once

/**
 * Translate `lines` (one sentence each; an empty line gives an empty translation). Resolves to one
 * {text, score, logProb, srcPieces, tgtPieces, attention, cut} per line, attention being the
 * weights of every output step (EOS last) over the source pieces when `attention`.
 */
async function translateDetailed(lines, { beamSize, attention = false } = {}) {
  const { manifest, srcTok, tgtTok, model } = await loaded;
  const d = manifest.decoding;
  const beam = beamSize ?? d.beam_size;
  if (!Number.isInteger(beam) || beam < 1) throw new Error(`beamSize: expected a positive integer, got ${beamSize}`);
  const run = async () => {
    const { ids, cut } = encodeSources(lines, srcTok, { maxLen: manifest.max_src_len, srcTag: manifest.src_tag ?? null });
    for (const [n, length] of cut) {
      console.warn(`input line ${n + 1} has ${length} pieces; truncated to the model's limit of ${manifest.max_src_len}`);
    }
    const results = await translateIds(model, ids, {
      beamSize: beam, batchSize: d.batch_size, alpha: d.alpha, maxLenRatio: d.max_len_ratio,
      maxLenOffset: d.max_len_offset, returnAttention: attention,
      bos: manifest.special.bos, eos: manifest.special.eos,
    });
    const wasCut = new Set(cut.map(([n]) => n));
    return results.map((hyps, n) => {
      const best = hyps[0];
      return {
        text: detokenize(tgtTok, best.tokens), score: best.score, logProb: best.logProb,
        srcPieces: srcTok.pieces(ids[n]), tgtPieces: tgtTok.pieces(best.tokens),
        attention: best.attention, cut: wasCut.has(n),
      };
    });
  };
  const result = queue.then(run, run);
  queue = result.catch(() => {});
  return result;
}

async function translate(lines, options = {}) {
  return (await translateDetailed(lines, { beamSize: options.beamSize })).map((t) => t.text);
}

const ready = loaded.then(({ manifest, checksums }) => {
  window.seq2seq.manifest = manifest;
  window.seq2seq.checksums = checksums;
  return true;
});
ready.catch(() => {}); // the page shows the error; callers awaiting `ready` still see it
window.seq2seq = { ready, translate, translateDetailed, manifest: null, checksums: null };

// ---- the page ----

function showLine(t, n) {
  const item = document.createElement("div");
  item.className = "line";
  item.dataset.line = String(n);
  item.dataset.translation = t.text;
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = t.text;
  item.appendChild(text);
  if (t.cut) item.classList.add("cut");
  if (t.attention && t.srcPieces.length > 0) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `attention · score ${t.score.toFixed(3)}${t.cut ? " · source cut to the model's limit" : ""}`;
    details.append(summary, heatmap(t.srcPieces, t.tgtPieces.concat(["</s>"]), t.attention)); // EOS last
    item.appendChild(details);
  }
  return item;
}

function setState(state) {
  document.body.dataset.state = state;
}

async function onTranslate() {
  const lines = inputLines($("source").value);
  $("error").textContent = "";
  $("translate").disabled = true;
  setState("translating");
  const started = performance.now();
  try {
    const results = await translateDetailed(lines, { beamSize: Number($("beam").value), attention: true });
    $("output").replaceChildren(...results.map(showLine));
    $("timing").textContent = `${lines.length} line(s) in ${((performance.now() - started) / 1000).toFixed(2)} s`;
    setState("ready");
  } catch (e) {
    $("error").textContent = String(e?.message ?? e);
    setState("error");
  } finally {
    $("translate").disabled = false;
  }
}

function showChecksums({ verifiedWith, why }) {
  const line = $("checksums");
  line.dataset.verifiedWith = verifiedWith ?? "";
  if (verifiedWith === null) {
    line.className = "warning";
    line.textContent = `The files' SHA-256 checksums could not be checked: ${why}.`;
  } else {
    line.textContent = `Every file was checked against manifest.json's SHA-256 checksums (${verifiedWith}` +
      `${verifiedWith === "js-sha256" ? ": this page is not in a secure context, so Web Crypto is missing" : ""}).`;
  }
}

function describe(manifest) {
  const d = manifest.decoding;
  const langs = manifest.src_lang && manifest.tgt_lang ? `${manifest.src_lang} → ${manifest.tgt_lang} · ` : "";
  return `${langs}length penalty ${d.alpha} · at most ${d.max_len_ratio} × source + ${d.max_len_offset} pieces · ` +
    `onnxruntime-web ${ort.env.versions?.web ?? "?"} (WebAssembly, 1 thread)`;
}

if (typeof document !== "undefined" && $("translate")) {
  setState("loading");
  $("translate").disabled = true;
  $("translate").addEventListener("click", onTranslate);
  $("source").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) onTranslate(); });
  loaded.then(({ manifest, checksums }) => {
    showChecksums(checksums);
    const beam = $("beam");
    const sizes = new Set([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, manifest.decoding.beam_size]);
    beam.replaceChildren(...[...sizes].sort((a, b) => a - b).map((k) => new Option(String(k), String(k))));
    beam.value = String(manifest.decoding.beam_size);
    $("model").textContent = describe(manifest);
    $("translate").disabled = false;
    setState("ready");
  }, (e) => {
    $("model").textContent = "the model could not be loaded";
    $("error").textContent = String(e?.message ?? e);
    setState("error");
  });
}
