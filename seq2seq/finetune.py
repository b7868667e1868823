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

This module is what a parent run gives a child: `inherit_from_parent` fills the child's config
from it (start.load_run_config calls it), `Parent` is the opened parent with the checks its
tokenizers and architecture need, and `Parent.initialise` loads its weights into the child
(row by row through transfer.py). start.py prepares the child's tokenizers and restores the
parent's training state where the config keeps it.
"""
from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .checkpoint import unwrap
from .config import Config, DataConfig, deep_merge, to_dict
from .data import TAG_PATTERN, tags_in
from .data.text import leading_tags
from .data.sampling import sample_pairs
from .errors import CheckpointError, ConfigError, DataError
from .rundir import BEST, Run, open_run
from .tokenizer import Tokenizer
from .transfer import RowMaps, shared_pieces, spelled_pieces, transfer_weights

log = logging.getLogger(__name__)

# Model settings that may differ from the parent: they change no weight's shape or meaning.
FREE_MODEL_KEYS = {f"{side}.{key}" for side in ("encoder", "decoder")
                   for key in ("dropout", "emb_dropout", "output_dropout", "word_dropout")} | {"init", "rnn_init"}
# Tokenizer settings that vocabulary keep leaves free: they cut the training text, not the tokenizer.
FREE_TOKENIZER_KEYS = {"sampling.alpha", "sampling.nbest_size", "sampling.dropout", "sampling.copies"}

# The sides whose tokenizer each finetune.vocabulary takes from the parent.
KEPT_SIDES = {"keep": ("source", "target"), "transfer": (), "keep_source": ("source",),
              "keep_target": ("target",)}
# The modes that give each side a vocabulary of its own (and so split a shared embedding matrix).
PER_SIDE = ("keep_source", "keep_target")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(given: dict, parent: dict, section: str, free: set[str]) -> list[str]:
    flat_parent = _flatten(parent)
    return [f"{section}.{k} (parent {flat_parent[k]!r}, here {v!r})" for k, v in _flatten(given).items()
            if k in flat_parent and k not in free and v != flat_parent[k]]


def inherit_from_parent(raw: dict) -> dict:
    """Fill the model and tokenizer sections from the parent run that raw['init_from'] names.
    Model values that differ from the parent's (and, for vocabulary keep, tokenizer values)
    are a ConfigError naming each key."""
    if not isinstance(raw.get("init_from"), str):
        return raw  # the validator reports the wrong type
    ft = raw.get("finetune") if isinstance(raw.get("finetune"), dict) else {}
    run_dir = Path(raw["init_from"])
    checkpoint = ft.get("checkpoint", BEST)
    parent = to_dict(open_parent(run_dir, checkpoint if isinstance(checkpoint, str) else BEST).config)
    out = dict(raw)
    vocabulary = ft.get("vocabulary")
    if vocabulary in PER_SIDE:
        out["tokenizer"] = _own_tokenizer_per_side(raw.get("tokenizer"), vocabulary)
        parent["model"] = _split_embeddings(raw.get("model"), parent["model"], vocabulary)
    for section in ("model", "tokenizer"):
        given = out.get(section)
        if given is None:
            out[section] = parent[section]
            continue
        if not isinstance(given, dict):
            continue  # the validator reports it
        if section == "model" or ft.get("vocabulary") == "keep":
            free = FREE_MODEL_KEYS if section == "model" else FREE_TOKENIZER_KEYS
            differ = _differences(given, parent[section], section, free)
            if differ:
                why = "the architecture" if section == "model" else "finetune.vocabulary: keep uses its tokenizer, so"
                raise ConfigError(f"{section}: {why} must match the parent run {run_dir}, but these keys differ: "
                                  f"{'; '.join(differ)}. Leave them out to inherit the parent's values")
        out[section] = deep_merge(parent[section], given)
    return out


def _own_tokenizer_per_side(given: Any, vocabulary: str) -> Any:
    """The tokenizer section for keep_source / keep_target: one side keeps the parent's model and
    the other gets a new one, so the run cannot have a joint tokenizer."""
    if given is None:
        return {"joint": False}
    if isinstance(given, dict):
        if given.get("joint", False) is not False:
            raise ConfigError(f"tokenizer.joint: finetune.vocabulary: {vocabulary} gives each side its own "
                              f"tokenizer; set joint: false or leave it out")
        return {**given, "joint": False}
    return given  # the validator reports the wrong type


def _split_embeddings(given: Any, parent_model: dict, vocabulary: str) -> dict:
    """The parent's model section as a keep_source / keep_target child inherits it: with a
    vocabulary per side, one shared embedding matrix becomes two (Parent.initialise gives each
    side its rows of the parent's matrix; both keys of it are in the parent's weights)."""
    if isinstance(given, dict) and given.get("share_embeddings"):
        raise ConfigError(f"model.share_embeddings: finetune.vocabulary: {vocabulary} gives each side its own "
                          f"vocabulary, so the sides cannot share one embedding matrix; leave the key out "
                          f"(a parent's shared matrix is split, each side starting from a copy)")
    return {**parent_model, "share_embeddings": False}


def check_architecture(cfg: Config, parent_cfg: Config, run_dir: Path) -> None:
    free = FREE_MODEL_KEYS
    if cfg.finetune.vocabulary in PER_SIDE:
        free = free | {"share_embeddings"}  # split by _split_embeddings
    differ = _differences(to_dict(cfg.model), to_dict(parent_cfg.model), "model", free)
    if differ:
        raise ConfigError(f"model: the architecture must match the parent run {run_dir}, but these keys differ: "
                          f"{'; '.join(differ)}. Leave the model section out to inherit the parent's")


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
