"""Fine-tuning: start a run from a trained parent run and carry over what fits.

- vocabulary `keep`: the parent's tokenizer files are copied into the new run and every
  weight loads unchanged.
- vocabulary `transfer`: new SentencePiece models are trained on the new data; embedding and
  output-layer rows of pieces present in both vocabularies (matched by piece string, side by
  side: the encoder against the parent's source vocabulary, the decoder against its target
  vocabulary) are copied from the parent, the other rows keep their fresh initialisation, and
  every other weight (RNNs, attention, bridge) is the parent's.
- vocabulary `keep_source` / `keep_target`: the side the new pair shares with the parent (en
  for en->de to en->fr) keeps the parent's SentencePiece model, so its text is cut into pieces
  exactly as the parent's was and every row carries over; the other side is transferred. The
  two sides then need tokenizers of their own (tokenizer.joint: false). A parent with one
  embedding matrix for both sides (model.share_embeddings) has it split: each side of the
  child starts from its own copy, read through that side's vocabulary.

This module is what a parent run gives a child: `Parent` is the opened parent with the checks
its tokenizers and architecture need, and `Parent.initialise` loads its weights into the child
(row by row through transfer.py). The child's config is resolved over the parent's by the config
package (seq2seq.config.inherit); `parent_config` and `check_architecture` hand it the
parent as its checkpoint stores it. begin.py prepares the child's tokenizers and restores the
parent's training state where the config keeps it.
"""
from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from seq2seq.run.checkpoint import unwrap
from seq2seq.config import Config, DataConfig
from seq2seq.config import check_architecture as check_model_matches
from seq2seq.data import TAG_PATTERN, tags_in
from seq2seq.data.text import leading_tags
from seq2seq.data.sampling import sample_pairs
from seq2seq.errors import CheckpointError, ConfigError, DataError
from seq2seq.run.rundir import BEST, Run, open_run
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.training.transfer import RowMaps, shared_pieces, spelled_pieces, transfer_weights

log = logging.getLogger(__name__)

# The sides whose tokenizer each finetune.vocabulary takes from the parent.
KEPT_SIDES = {"keep": ("source", "target"), "transfer": (), "keep_source": ("source",),
              "keep_target": ("target",)}


def parent_config(run_dir: Path, checkpoint: str = BEST) -> Config:
    """The config stored in the parent's checkpoint; what is wrong with the run is an init_from error."""
    return open_parent(run_dir, checkpoint).config


def check_architecture(cfg: Config, parent_cfg: Config, run_dir: Path) -> None:
    """The child's model section must describe the parent's weights (a config built without
    inheriting, through the Python API, is stopped here)."""
    check_model_matches(cfg.model, parent_cfg.model, vocabulary=cfg.finetune.vocabulary, parent_dir=run_dir)


def unknown_characters(tok: Tokenizer, lines: Sequence[str]) -> list[str]:
    """Distinct characters of `lines` (corpus and language tags aside) that `tok` can only encode as unknown."""
    chars: set[str] = set()
    for line in lines:
        chars.update(leading_tags(line)[1])
    chars -= set(string.whitespace)
    return sorted(c for c in chars if tok.sp.unk_id() in tok.encode(c))


def parent_sample(parent_data: DataConfig, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Up to `n` random training pairs of the parent, from all of its corpora, streamed (the
    parent's corpora may be far larger than memory) and tagged as the parent tagged them."""
    try:
        src, tgt, _ = sample_pairs(parent_data, n, seed)
    except DataError as e:
        raise ConfigError(f"finetune.transfer_joint_with_parent: the parent's training data cannot be read "
                          f"({e}); paths are relative to the working directory, or set it to false") from None
    return src, tgt


def open_parent(run_dir: str | Path, checkpoint: str = BEST) -> Run:
    """The parent run that init_from names; what is wrong with it is a ConfigError on init_from."""
    try:
        return open_run(run_dir, checkpoint)
    except CheckpointError as e:
        raise ConfigError(f"init_from: {e}") from None


@dataclass
class Parent:
    """A trained run to start from: its config, weights and tokenizers."""
    run_dir: Path
    config: Config
    weights: dict
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    vocabulary: str = "keep"
    new_pieces: str = "fresh"
    maps: RowMaps | None = None
    spelled: dict[str, int] | None = None  # side -> pieces started from their spelling

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str = BEST, vocabulary: str = "keep",
             new_pieces: str = "fresh") -> "Parent":
        run = open_parent(run_dir, checkpoint)
        return cls(run.dir.path, run.config, run.checkpoint["model"], run.src_tok, run.tgt_tok, vocabulary,
                   new_pieces)

    def initialise(self, model: torch.nn.Module, src_tok: Tokenizer, tgt_tok: Tokenizer) -> dict[str, list[int]]:
        """Load the parent's weights into `model`, which was built for (src_tok, tgt_tok).
        Returns, per side, [pieces carried over, child pieces, parent pieces]; self.spelled
        counts, per side, the new pieces started from their spelling."""
        toks = {"source": (src_tok, self.src_tok), "target": (tgt_tok, self.tgt_tok)}
        self.maps = {side: shared_pieces(child, parent) for side, (child, parent) in toks.items()}
        sizes = {side: (len(child), len(parent)) for side, (child, parent) in toks.items()}
        carried = {side: [len(self.maps[side][0]), *sizes[side]] for side in sizes}
        spellings = {side: spelled_pieces(*toks[side], self.maps[side][0]) if self.new_pieces == "spelled" else {}
                     for side in toks}
        self.spelled = {side: len(s) for side, s in spellings.items()}
        # A kept vocabulary grows by the corpus tags the parent lacks (start.add_corpus_tags):
        # then its rows are mapped as a transferred vocabulary's are.
        if self.vocabulary == "keep" and all(child == parent for child, parent in sizes.values()):
            try:
                unwrap(model).load_state_dict(self.weights)
            except RuntimeError as e:
                raise ConfigError(f"init_from: the weights of {self.run_dir} do not fit this model: "
                                  f"{str(e).strip().splitlines()[-1].strip()[:300]}") from None
            log.info("fine-tuning from %s: all weights loaded (vocabulary kept: %d source / %d target pieces)",
                     self.run_dir, len(src_tok), len(tgt_tok))
            return carried
        transfer_weights(model, self.weights, self.maps, spellings)
        for side, (n, child, parent) in carried.items():
            log.info("fine-tuning from %s: %s side: %d of %d pieces carried over from the parent's %d, "
                     "%d started from their spelling in the parent's pieces, %d initialised fresh",
                     self.run_dir, side, n, child, parent, self.spelled[side], child - n - self.spelled[side])
        return carried

    def tags(self) -> list[str]:
        """The language tags that are single pieces of the parent's source vocabulary."""
        return [p for i in range(len(self.src_tok)) if TAG_PATTERN.fullmatch(p := self.src_tok.id_to_piece(i))]


def check_kept_side(cfg: Config, side: str, tok: Tokenizer, lines: list[str]) -> None:
    """The new data of a side that keeps the parent's tokenizer must be (nearly) covered by it."""
    ft = cfg.finetune
    unknown = unknown_characters(tok, lines)
    if len(unknown) > ft.max_unknown_chars:
        raise ConfigError(
            f"finetune.vocabulary: {ft.vocabulary}: {len(unknown)} distinct characters of the new {side} data are "
            f"unknown to the parent's tokenizer ({''.join(unknown[:20])}{'...' if len(unknown) > 20 else ''}); "
            f"use finetune.vocabulary: transfer (or raise finetune.max_unknown_chars to accept them)")
    if unknown:
        log.warning("%d distinct characters of the new %s data are unknown to the parent's tokenizer: %s",
                    len(unknown), side, "".join(unknown))
    if side == "source" and cfg.data.src_prefix_tag:
        missing = [tag for tag in tags_in(lines) if tag not in tok.pieces(tok.encode(tag))]
        if missing:
            raise ConfigError(f"data.src_prefix_tag: the parent's tokenizer has no piece for {', '.join(missing)}; "
                              f"use finetune.vocabulary: transfer to add a language")
