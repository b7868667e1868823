"""An exported model (export.py) run by onnxruntime behind search's step contract
(search.StepModel), so greedy, beam, n-best, length penalty and scores run through the same
search code as a PyTorch model. Tensors cross as torch CPU tensors (numpy views, no copies).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import torch

from seq2seq.config import Config, config_from_dict
from seq2seq.errors import CheckpointError, ConfigError
from seq2seq.data.tokenizer import Tokenizer

DEVICE = torch.device("cpu")
FORMAT = "seq2seq-export"
FORMAT_VERSION = 1
ENCODER, STEP, MANIFEST = "encoder.onnx", "decoder_step.onnx", "manifest.json"


@dataclass
class OnnxMemory:
    memory: torch.Tensor  # (batch, src_len, M) encoder states
    keys: torch.Tensor    # (batch, src_len, K) states as projected by the attention
    mask: torch.Tensor    # (batch, src_len) bool, True at real tokens

    def select(self, index: torch.Tensor) -> "OnnxMemory":
        return OnnxMemory(self.memory.index_select(0, index), self.keys.index_select(0, index),
                          self.mask.index_select(0, index))


@dataclass
class OnnxState:
    h: torch.Tensor     # (layers, batch, hidden)
    c: torch.Tensor     # (layers, batch, hidden); zeros for a GRU
    feed: torch.Tensor  # (batch, hidden); zeros without input feeding

    def select(self, index: torch.Tensor) -> "OnnxState":
        return OnnxState(self.h.index_select(1, index), self.c.index_select(1, index),
                         self.feed.index_select(0, index))


def session(path, threads: int | None = None):
    """An onnxruntime CPU session for one graph; a missing onnxruntime is a one-line error."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CheckpointError("decoding an exported model needs onnxruntime: pip install 'seq2seq-rnn[onnx]' "
                              "(or pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads() or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are not the user's concern
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for damaged graphs
        raise CheckpointError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0][:200]}") from None


class OnnxModel:
    """The two graphs of an export folder as a step model for search.py."""

    def __init__(self, encoder_path, step_path, threads: int | None = None):
        self.encoder = session(encoder_path, threads)
        # One thread for the step: its products are small, and onnxruntime's threads cost more
        # to wake at every step than they save (greedy over test_2016_flickr with the default
        # recipe's model: 494 sent/s on one thread, 258 on two; docs/measurements/2026-12-04).
        self.decoder_step = session(step_path, 1)
        self.device = DEVICE

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[OnnxMemory, OnnxState]:
        """src (batch, src_len), src_lengths (batch,) -> memory and the first state."""
        memory, keys, mask, h, c, feed = self.encoder.run(None, {"src": src.cpu().numpy(),
                                                                 "src_lengths": src_lengths.cpu().numpy()})
        t = torch.from_numpy
        return OnnxMemory(t(memory), t(keys), t(mask)), OnnxState(t(h), t(c), t(feed))

    def step(self, prev: torch.Tensor, state: OnnxState,
             memory: OnnxMemory) -> tuple[torch.Tensor, OnnxState, torch.Tensor]:
        """prev (batch,) -> log-probs (batch, vocab), next state, attention (batch, src_len)."""
        n = lambda x: x.contiguous().numpy()  # noqa: E731  (a selected tensor may be a strided view)
        log_probs, h, c, feed, attention = self.decoder_step.run(None, {
            "prev": n(prev), "h": n(state.h), "c": n(state.c), "feed": n(state.feed),
            "memory": n(memory.memory), "keys": n(memory.keys), "mask": n(memory.mask)})
        t = torch.from_numpy
        return t(log_probs), OnnxState(t(h), t(c), t(feed)), t(attention)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: str | Path) -> dict:
    """The manifest of an export folder whose files are all present and unchanged; otherwise a
    CheckpointError naming the first file that is missing, modified, truncated, unlisted or
    listed outside the folder (or saying that the manifest lists no files)."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable export manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a seq2seq export manifest (no '{FORMAT}' format tag)")
    if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: export format version {manifest.get('format_version')} is newer than this "
                              f"seq2seq understands ({FORMAT_VERSION}); upgrade seq2seq")
    files = listed_files(manifest, path)
    # Every file that open_export loads must be one whose checksum is checked here.
    tokenizers = manifest.get("tokenizers")
    needed = [ENCODER, STEP] + (list(tokenizers.values()) if isinstance(tokenizers, dict) else [])
    unlisted = [name for name in needed if name not in files]
    if unlisted:
        raise CheckpointError(f"{path}: does not list {unlisted[0]} among its files, so its checksum cannot be "
                              f"checked; export the model again")
    for name, digest in files.items():
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing from the export folder (the manifest lists it)")
        if sha256(f) != digest:
            raise CheckpointError(f"{f}: modified or truncated (its checksum differs from the manifest's); "
                                  f"export the model again")
    return manifest


def listed_files(manifest: dict, path: Path) -> dict[str, str]:
    """The manifest's files (relative path -> SHA-256); a CheckpointError when it has no such
    list (nothing could be verified) or lists a path outside its folder (an absolute path or a
    `..` step: a manifest must not make us read, or vouch for, a file that is not the export's)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path}: lists no files with their SHA-256 ('files'), so nothing in the folder "
                              f"can be verified; export the model again")
    for name, digest in files.items():
        # Windows' rules read both / and \ as separators and see drives, so they catch every spelling.
        parts = PureWindowsPath(name)
        if not name or parts.drive or parts.root or ".." in parts.parts:
            raise CheckpointError(f"{path}: lists {name!r}, a path outside the export folder; refusing the export")
        if not isinstance(digest, str):
            raise CheckpointError(f"{path}: the SHA-256 of {name!r} is not a string")
    return files


def is_export(path: str | Path) -> bool:
    """Whether `path` is an export folder (seq2seq export) rather than a run directory."""
    return (Path(path) / MANIFEST).is_file()


@dataclass
class Export:
    """An opened export folder: what Translator needs, as open_run gives it for a run."""
    folder: Path
    manifest: dict
    config: Config
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    model: OnnxModel


def open_export(folder: str | Path, threads: int | None = None) -> Export:
    """Check every file of an export folder against its manifest, then load the tokenizers and
    the graphs. Every problem is a CheckpointError naming the file."""
    folder = Path(folder)
    manifest = verify(folder)
    try:
        config = config_from_dict(manifest["config"])
        src_tok = Tokenizer(folder / manifest["tokenizers"]["source"], manifest["src_kept"])
        tgt_tok = Tokenizer(folder / manifest["tokenizers"]["target"], manifest["tgt_kept"])
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{folder / MANIFEST}: incomplete or invalid manifest ({e})") from None
    return Export(folder, manifest, config, src_tok, tgt_tok, OnnxModel(folder / ENCODER, folder / STEP, threads))
