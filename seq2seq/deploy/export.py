"""`seq2seq export`: a trained run as two ONNX graphs, its tokenizers and a manifest.

The folder holds:
    encoder.onnx        src (batch, src_len) int64, src_lengths (batch,) int64 ->
                        memory (batch, src_len, M), keys (batch, src_len, K), mask (batch, src_len) bool,
                        h, c (layers, batch, H), feed (batch, H)
    decoder_step.onnx   prev (batch,) int64, h, c, feed, memory, keys, mask ->
                        log_probs (batch, V), h_out, c_out, feed_out, attention (batch, src_len)
    spm.*.model         the SentencePiece model(s)
    manifest.json       format version, languages, special ids, tag, kept-piece maps, the pieces
                        never written (corpus tags), decoding defaults and length limits, the
                        resolved config, the self-check's figures, a checksum of every file
and, where the page's libraries are installed ($SEQ2SEQ_WEB_MODULES, or a checkout's
web/node_modules), a static in-browser translator.

A layer-normalized decoder's step graph normalizes with ONNX's LayerNormalization; a
layer-normalized encoder cannot be exported (see encoder.py). Every decoder has the same graph signature: a GRU's `c` and a decoder's `feed` without input
feeding pass through unchanged (zeros), so a runtime never branches on the architecture.
We use torch's TorchScript-based exporter (dynamo=False): it turns the encoder's packed
sequences into ONNX's LSTM/GRU operators with per-sentence lengths, which the torch.export-based
exporter cannot trace (measured with torch 2.13).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from seq2seq.config import to_dict
from seq2seq.model.decoder import DecoderState, Memory
from seq2seq.errors import ExportError
from seq2seq.data import corpus_tags, tag_piece
from seq2seq.decoding.onnx_model import ENCODER, FORMAT, FORMAT_VERSION, MANIFEST, STEP, OnnxModel, sha256
from seq2seq.decoding.translator import tag_pieces
from seq2seq.deploy.export_check import (ENCODER_NAMES, INT8_SENTENCES, INT8_STEPS, STEP_NAMES, check_sources,
                                         compare, float32_check, int8_check, sample_batch)
from seq2seq.run.rundir import BEST, open_run
from seq2seq.data.tokenizer import BOS, EOS, PAD, UNK

log = logging.getLogger(__name__)

OPSET = 17
ENCODER_OUTPUTS = ENCODER_NAMES
STEP_INPUTS = ["prev", "h", "c", "feed", "memory", "keys", "mask"]
STEP_OUTPUTS = STEP_NAMES


class EncoderGraph(nn.Module):
    """The decoding model's `start` with plain tensors out (what encoder.onnx computes)."""

    def __init__(self, decoding: nn.Module):
        super().__init__()
        self.decoding = decoding

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor):
        memory, state = self.decoding.start(src, src_lengths)
        h = torch.stack(state.h)  # (layers, batch, hidden)
        c = torch.stack(state.c) if state.c is not None else torch.zeros_like(h)
        feed = state.feed if state.feed is not None else torch.zeros_like(h[0])
        return memory.states, memory.keys, memory.mask, h, c, feed


class StepGraph(nn.Module):
    """One decoding step with plain tensors in and out (what decoder_step.onnx computes)."""

    def __init__(self, decoding: nn.Module, *, lstm: bool, input_feeding: bool):
        super().__init__()
        self.decoding, self.lstm, self.input_feeding = decoding, lstm, input_feeding

    def forward(self, prev, h, c, feed, memory, keys, mask):
        state = DecoderState(tuple(h.unbind(0)), tuple(c.unbind(0)) if self.lstm else None,
                             feed if self.input_feeding else None)
        log_probs, new, attention = self.decoding.step(prev, state, Memory(memory, keys, mask))
        h_out = torch.stack(new.h)
        c_out = torch.stack(new.c) if self.lstm else c + 0  # "+ 0": an output may not be an input
        feed_out = new.feed if self.input_feeding else feed + 0
        return log_probs, h_out, c_out, feed_out, attention


def _onnx_export(module: nn.Module, args: tuple, path: Path, *, inputs: list[str], outputs: list[str],
                 dynamic: dict) -> None:
    with warnings.catch_warnings(), _quiet_stderr():
        # The TorchScript exporter announces its deprecation, warns about traced RNNs with a
        # batch of one and (from C++) about shape inference of packed sequences; none applies
        # to graphs that are checked against PyTorch right after.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ warnings bypass Python's sys.stderr); errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def manifest_for(run, checkpoint: Path, files: dict[str, str], *, quantized: bool) -> dict:
    """What a runtime needs besides the graphs: languages, special ids, tag, kept-piece maps, the
    pieces never written, decoding defaults and length limits, the resolved config, and the files'
    checksums."""
    cfg, src_tok = run.config, run.src_tok
    d, dc = cfg.data, cfg.decoding
    src_pieces = None
    if src_tok.kept is not None:
        src_pieces = src_tok._spelled  # SentencePiece id -> our ids (spelled out where not kept)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "src_lang": d.src_lang, "tgt_lang": d.tgt_lang,
        "special": {"pad": PAD, "unk": UNK, "bos": BOS, "eos": EOS},
        # Prefixed as text ("<2de> " + line) unless the line starts with a tag already (data.text.tag_sources).
        "src_tag": f"<2{d.tgt_lang}>" if d.src_prefix_tag else None,
        "max_src_len": d.max_src_len,
        "tokenizers": {"source": run.src_tok.path.name, "target": run.tgt_tok.path.name},
        "src_kept": src_tok.kept, "tgt_kept": run.tgt_tok.kept, "src_pieces": src_pieces,
        # Target ids a translation never contains (the corpus tags of data.train[].tag), exactly
        # those that Translator bans: a runtime gives them a log-probability of -inf at every step.
        "banned": tag_pieces(run.tgt_tok, [tag_piece(tag) for tag in corpus_tags(d)]),
        "vocab": {"source": len(src_tok), "target": len(run.tgt_tok)},
        "model": {"cell": cfg.model.decoder.cell, "layers": cfg.model.decoder.num_layers,
                  "hidden_size": cfg.model.decoder.hidden_size, "input_feeding": cfg.model.decoder.input_feeding,
                  "attention": cfg.model.decoder.attention},
        "decoding": {"beam_size": dc.beam_size, "alpha": dc.length_penalty, "max_len_ratio": dc.max_len_ratio,
                     "max_len_offset": dc.max_len_offset, "batch_size": dc.batch_size},
        "quantized": "int8" if quantized else None,
        "exported_from": {"run": str(run.dir.path), "checkpoint": checkpoint.name, "step": run.checkpoint.get("step")},
        "config": to_dict(cfg),
        "files": files,
    }


def export_run(run_dir: str | Path, out: str | Path, *, checkpoint: str = BEST, quantize: str | None = None,
               page: bool = True) -> dict:
    """Export RUN_DIR/checkpoint into `out` and check the graphs against PyTorch (export_check.py:
    every output within 1e-3 in float32; int8 on its own bound); returns the manifest. Any failure
    is an ExportError (or CheckpointError for the run) naming the part."""
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize: expected int8, got {quantize!r}")
    run = open_run(run_dir, checkpoint)
    if run.config.model.encoder.layer_norm:
        raise ExportError(f"{run.path}: a layer-normalized encoder (model.encoder.layer_norm) cannot be exported: "
                          f"its recurrence is written out step by step, and the encoder graph is ONNX's LSTM/GRU "
                          f"operator, which has no normalization (a layer-normalized decoder exports)")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"{out}: exists and is not an export folder; choose an empty or new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{out}: cannot create the export folder ({e.strerror or e}); choose another --out") from None
    decoding = run.model.eval().for_decoding()
    src_ids = check_sources(len(run.src_tok))
    _write_graphs(run, decoding, src_ids, out)
    check = float32_check(compare(decoding, OnnxModel(out / ENCODER, out / STEP), src_ids), out)
    log.info("exported graphs agree with PyTorch within %.2g (allowed %g)", check["max_abs_difference"],
             check["tolerance"])
    if quantize == "int8":
        check = _quantize_and_check(run, decoding, out)
    for tok in {run.src_tok.path, run.tgt_tok.path}:
        shutil.copyfile(tok, out / tok.name)
    if page:
        copy_page(out)
    return _write_manifest(run, out, check=check, quantized=quantize == "int8")


def _quantize_and_check(run, decoding: nn.Module, out: Path) -> dict:
    """Both graphs to int8, checked against float32 PyTorch on their own bound (export_check.py);
    returns the int8 graphs' check, which the manifest records in place of the float32 one."""
    quantize_graphs(out)
    src_ids = check_sources(len(run.src_tok), INT8_SENTENCES, max_len=min(15, run.config.data.max_src_len))
    check = int8_check(compare(decoding, OnnxModel(out / ENCODER, out / STEP), src_ids, steps=INT8_STEPS), out)
    log.info("int8 graphs choose float32 PyTorch's greedy piece at %.1f%% of %d steps (required %.0f%%); "
             "largest difference %.3g", 100 * check["greedy_agreement"], check["decisions"],
             100 * check["min_greedy_agreement"], check["max_abs_difference"])
    return check


def _write_graphs(run, decoding: nn.Module, src_ids: list[list[int]], out: Path) -> None:
    """encoder.onnx and decoder_step.onnx, traced on `src_ids`; ExportError naming the
    architecture when the exporter fails."""
    dec = run.config.model.decoder
    lstm = dec.cell == "lstm"
    src, lengths = sample_batch(src_ids)
    with torch.no_grad():
        memory, state = decoding.start(src, lengths)
        start_outputs = EncoderGraph(decoding)(src, lengths)
    # eval() on the wrappers: the exporter restores each module's mode afterwards, and a new
    # module is in training mode, which would switch the shared encoder's dropout on.
    encoder_graph = EncoderGraph(decoding).eval()
    step = StepGraph(decoding, lstm=lstm, input_feeding=dec.input_feeding).eval()
    prev = torch.full((src.size(0),), BOS, dtype=torch.long)
    batch, src_len = {0: "batch"}, {0: "batch", 1: "src_len"}
    layers = {1: "batch"}
    try:
        _onnx_export(encoder_graph, (src, lengths), out / ENCODER, inputs=["src", "src_lengths"],
                     outputs=ENCODER_OUTPUTS,
                     dynamic={"src": src_len, "src_lengths": batch, "memory": src_len, "keys": src_len,
                              "mask": src_len, "h": layers, "c": layers, "feed": batch})
        _, _, _, h, c, feed = start_outputs
        _onnx_export(step, (prev, h, c, feed, memory.states, memory.keys, memory.mask), out / STEP,
                     inputs=STEP_INPUTS, outputs=STEP_OUTPUTS,
                     dynamic={"prev": batch, "h": layers, "c": layers, "feed": batch, "memory": src_len,
                              "keys": src_len, "mask": src_len, "log_probs": batch, "h_out": layers,
                              "c_out": layers, "feed_out": batch, "attention": src_len})
    except Exception as e:  # the exporter fails in many layers; name the architecture that did
        raise ExportError(f"{run.path}: cannot export a {dec.cell} decoder with {dec.attention} attention "
                          f"(input_feeding: {dec.input_feeding}, {dec.num_layers} layers) to ONNX: "
                          f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}") from None


def _write_manifest(run, out: Path, *, check: dict, quantized: bool) -> dict:
    """manifest.json over every other file in `out` (written last, and atomically: a folder
    with a manifest is a finished export); returns the manifest."""
    names = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = manifest_for(run, run.path, {name: sha256(out / name) for name in names}, quantized=quantized)
    manifest["check"] = check  # the self-check of the graphs in the folder (int8 ones when quantized)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / MANIFEST)
    return manifest


def summary(manifest: dict, out: str | Path, *, quantize: str | None) -> str:
    """The line `seq2seq export` prints: what was exported where, and how closely it agrees."""
    check = manifest["check"]
    page = " and the in-browser page (serve the folder statically)" if "index.html" in manifest["files"] else ""
    if check["graphs"] == "int8":
        agrees = (f"int8 graphs choose float32 PyTorch's greedy piece at {check['greedy_agreement']:.1%} of "
                  f"{check['decisions']} steps (required {check['min_greedy_agreement']:.0%})")
    else:
        agrees = (f"float32 graphs agree with PyTorch within {check['max_abs_difference']:.1g} "
                  f"(allowed {check['tolerance']:g})")
    return (f"exported {manifest['exported_from']['run']}/{manifest['exported_from']['checkpoint']} to {out}"
            f"{' (int8)' if quantize else ''}: ONNX graphs{page}; {agrees}")


def quantize_graphs(out: Path) -> None:
    """Both graphs to int8 weights with onnxruntime's own dynamic quantization (matrix products,
    the recurrent layers and the embedding lookups), in place."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice for image models on the root logger
    try:
        for name in (ENCODER, STEP):
            path = out / name
            tmp = out / f".{name}.int8"
            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm", "LSTM", "Gather"])
            tmp.replace(path)
    finally:
        root.setLevel(level)


# A folder holding the page's npm libraries (node_modules), for a package installed by pip,
# which has no repository and so no web/node_modules.
WEB_MODULES = "SEQ2SEQ_WEB_MODULES"


def copy_page(out: Path) -> bool:
    """The in-browser translator: our page (package data, seq2seq/deploy/web/) and the libraries it
    loads (web/assets.json says which files), from the node_modules folder that $SEQ2SEQ_WEB_MODULES
    names, else from a checkout's web/node_modules (installed by the README's set-up). Without
    the libraries the export still works for Python; the page is left out with a warning saying
    what to install and where."""
    here = Path(__file__).parent / "web"
    assets = json.loads((here / "assets.json").read_text(encoding="utf-8"))
    modules = page_modules(assets)
    libraries = {name: modules / source for name, source in assets["libraries"]["files"].items()}
    missing = [source for name, source in assets["libraries"]["files"].items() if not libraries[name].is_file()]
    if missing:
        log.warning("%s", missing_libraries_message(assets, modules, missing[0]))
        return False
    for name in assets["page"]:
        shutil.copyfile(here / name, out / name)
    for name, source in libraries.items():
        shutil.copyfile(source, out / name)
    return True


def page_modules(assets: dict) -> Path:
    """Where the page's libraries are looked for: $SEQ2SEQ_WEB_MODULES when set, else the
    repository's web/node_modules (which exists in a checkout only)."""
    given = os.environ.get(WEB_MODULES)
    if given:
        return Path(given)
    return Path(__file__).resolve().parents[2] / assets["libraries"]["node_modules"]


def missing_libraries_message(assets: dict, modules: Path, missing: str) -> str:
    """One line: which file is missing where, the npm command that installs the pinned versions,
    and how to point the export at them."""
    packages = " ".join(f"{name}@{version}" for name, version in assets["libraries"]["versions"].items())
    if os.environ.get(WEB_MODULES):
        where = f"{WEB_MODULES}={modules}"
    else:
        where = f"{modules}, where they are looked for while {WEB_MODULES} is not set"
        if (modules.parent / "package.json").is_file():  # a checkout, whose lockfile pins the same versions
            where += " (`npm ci --prefix web` in this checkout installs them there)"
    return (f"the in-browser page is left out: its JavaScript libraries are not installed: {missing} is missing in "
            f"{where}; install them with `npm install {packages} --prefix DIR` and export again with "
            f"`{WEB_MODULES}=DIR/node_modules seq2seq export ...`")
