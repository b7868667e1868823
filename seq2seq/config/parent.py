"""A fine-tuning child's config resolved over its parent's: the child's keys are validated with
the parent's typed model and tokenizer sections as their base (where the schema's defaults
stand for a run without a parent), and keys that would change what the parent's weights or
tokenizer mean are refused, each named.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

from seq2seq.config.schema import Config, ModelConfig, TokenizerConfig
from seq2seq.config.validate import _build, _cross_check, config_from_dict
from seq2seq.errors import ConfigError

# Model settings that may differ from the parent: they change no weight's shape or meaning.
FREE_MODEL_KEYS = {f"{side}.{key}" for side in ("encoder", "decoder")
                   for key in ("dropout", "emb_dropout", "output_dropout", "word_dropout")} | {"init", "rnn_init"}
# Tokenizer settings that vocabulary keep leaves free: they cut the training text, not the tokenizer.
FREE_TOKENIZER_KEYS = {"sampling.alpha", "sampling.nbest_size", "sampling.dropout", "sampling.copies"}
# The finetune.vocabulary modes that give each side a vocabulary of its own (and so split a
# shared embedding matrix and need a tokenizer per side).
PER_SIDE = ("keep_source", "keep_target")

# Reads the config a parent run trained with: (run directory, finetune.checkpoint) -> Config.
ParentReader = Callable[[Path, str], Config]


def _leaves(section: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value of a typed section, nested sections walked in order."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def _given(raw: Any, prefix: str = "") -> list[str]:
    """The dotted keys a raw section sets, in the order it sets them."""
    if not isinstance(raw, dict):
        return []
    keys = []
    for key, value in raw.items():
        keys += _given(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def differences(child: Any, parent: Any, section: str, free: set[str], keys: list[str] | None = None) -> list[str]:
    """`SECTION.KEY (parent P, here C)` for each of `keys` (default: every key) whose value in the
    typed section `child` differs from `parent`'s, `free` keys aside."""
    mine, theirs = dict(_leaves(child)), dict(_leaves(parent))
    return [f"{section}.{k} (parent {theirs[k]!r}, here {mine[k]!r})" for k in (mine if keys is None else keys)
            if k in theirs and k not in free and mine[k] != theirs[k]]


def check_architecture(model: ModelConfig, parent_model: ModelConfig, *, vocabulary: str,
                       parent_dir: str | Path) -> None:
    """A child's model section must describe the parent's weights: the dropouts and
    initialisations may differ, and a per-side vocabulary splits a shared embedding matrix."""
    free = FREE_MODEL_KEYS | ({"share_embeddings"} if vocabulary in PER_SIDE else set())
    differ = differences(model, parent_model, "model", free)
    if differ:
        raise ConfigError(f"model: the architecture must match the parent run {parent_dir}, but these keys differ: "
                          f"{'; '.join(differ)}. Leave the model section out to inherit the parent's")


def _inherited(parent: Config, vocabulary: str) -> tuple[ModelConfig, TokenizerConfig]:
    """The parent's model and tokenizer sections as a child with `vocabulary` starts from: with a
    vocabulary per side, one shared embedding matrix becomes two (fine-tuning gives each side its
    rows of the parent's matrix) and each side gets a tokenizer of its own."""
    if vocabulary in PER_SIDE:
        return (dataclasses.replace(parent.model, share_embeddings=False),
                dataclasses.replace(parent.tokenizer, joint=False))
    return parent.model, parent.tokenizer


def _check_per_side(raw: dict, cfg: Config) -> None:
    """A per-side vocabulary refuses what would join the sides again."""
    vocabulary = cfg.finetune.vocabulary
    if vocabulary not in PER_SIDE:
        return
    if "joint" in _given(raw.get("tokenizer")) and cfg.tokenizer.joint:
        raise ConfigError(f"tokenizer.joint: finetune.vocabulary: {vocabulary} gives each side its own "
                          f"tokenizer; set joint: false or leave it out")
    if "share_embeddings" in _given(raw.get("model")) and cfg.model.share_embeddings:
        raise ConfigError(f"model.share_embeddings: finetune.vocabulary: {vocabulary} gives each side its own "
                          f"vocabulary, so the sides cannot share one embedding matrix; leave the key out "
                          f"(a parent's shared matrix is split, each side starting from a copy)")


def _check_unchanged(raw: dict, cfg: Config, base: Config, parent_dir: Path) -> None:
    """The model keys the child sets (and, for vocabulary keep, its tokenizer keys) must keep the
    parent's values, the free keys aside."""
    for section in ("model", "tokenizer"):
        if section == "tokenizer" and cfg.finetune.vocabulary != "keep":
            continue
        free = FREE_MODEL_KEYS if section == "model" else FREE_TOKENIZER_KEYS
        differ = differences(getattr(cfg, section), getattr(base, section), section, free,
                             keys=_given(raw.get(section)))
        if differ:
            why = "the architecture" if section == "model" else "finetune.vocabulary: keep uses its tokenizer, so"
            raise ConfigError(f"{section}: {why} must match the parent run {parent_dir}, but these keys differ: "
                              f"{'; '.join(differ)}. Leave them out to inherit the parent's values")


def inherit(raw: dict, read_parent: ParentReader) -> Config:
    """Validate the child config `raw` (a mapping with init_from set) over the model and
    tokenizer sections of the parent run that `read_parent` reads."""
    head = _build(Config, {key: raw[key] for key in ("init_from", "finetune") if key in raw}, "")
    if head.init_from is None:
        return config_from_dict(raw)
    parent_dir = Path(head.init_from)
    model, tokenizer = _inherited(read_parent(parent_dir, head.finetune.checkpoint), head.finetune.vocabulary)
    base = dataclasses.replace(Config(), model=model, tokenizer=tokenizer)
    cfg = _build(Config, raw, "", base)
    _check_per_side(raw, cfg)
    _check_unchanged(raw, cfg, base, parent_dir)
    _cross_check(cfg)
    return cfg
