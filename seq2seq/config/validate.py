"""Checking a raw mapping (as read from YAML) against the schema: unknown keys with the closest
valid name, types, ranges, and the rules that involve more than one key. Every error names the
dotted path of its key.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, Union

from seq2seq.config.schema import Config, SubwordSampling, TokenizerConfig
from seq2seq.errors import ConfigError


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of: " + ", ".join(str(a) for a in typing.get_args(tp))
    if isinstance(tp, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                "list": "a list"}.get(tp.__name__, tp.__name__)
    return str(tp)


_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_value(path: str, tp: Any, value: Any, meta: dict) -> Any:
    """`value` checked against type `tp` and the range in the field's `meta`, in its one shape."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) == len(typing.get_args(tp)):
                raise ConfigError(f"{path}: null is not allowed")
            return None
        return _check_value(path, args[0], value, meta)
    if value is None:
        raise ConfigError(f"{path}: null is not allowed, expected {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of: {', '.join(str(a) for a in allowed)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is list:
        return _check_list(path, tp, value, meta)
    if tp is list:
        return _check_numbers(path, value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
    elif tp is float:
        value = _check_float(path, value)
    return _check_range(path, value, meta)


def _check_float(path: str, value: Any) -> float:
    if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
        value = float(value)  # PyYAML reads 3e-4 (no dot) as a string; users mean a number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        raise ConfigError(f"{path}: {value} is too large for a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    return value


def _check_list(path: str, tp: Any, value: Any, meta: dict) -> list:
    """A typed list: of sections (each built and checked) or of distinct values."""
    if isinstance(value, str) and meta.get("shorthand"):
        # `train: PREFIX` means `train: [{path: PREFIX}]`: after validation a list is always a list
        value = [{meta["shorthand"]: value}]
    if not isinstance(value, list):
        expected = "a string or a list" if meta.get("shorthand") else "a list"
        raise ConfigError(f"{path}: expected {expected}, got {value!r}")
    item_type = typing.get_args(tp)[0]
    if dataclasses.is_dataclass(item_type):
        if not value:
            raise ConfigError(f"{path}: an empty list")
        return [_build(item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
    items = [_check_value(f"{path}[{i}]", item_type, v, {}) for i, v in enumerate(value)]
    if len(set(items)) != len(items):
        raise ConfigError(f"{path}: repeated entries in {value!r}")
    return items


def _check_numbers(path: str, value: Any) -> list[float]:
    """An untyped list (training.betas): numbers, each made a float."""
    if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{path}: expected a list of numbers, got {value!r}")
    try:
        return [float(v) for v in value]
    except OverflowError:
        raise ConfigError(f"{path}: a number in {value} is too large") from None


def _check_range(path: str, value: Any, meta: dict) -> Any:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        relation = "greater than" if meta.get("min_exclusive") else "at least"
        raise ConfigError(f"{path}: must be {relation} {lo}, got {value!r}")
    if hi is not None and (value > hi or (meta.get("max_exclusive") and value == hi)):
        relation = "less than" if meta.get("max_exclusive") else "at most"
        raise ConfigError(f"{path}: must be {relation} {hi}, got {value!r}")
    return value


def _build(cls: type, raw: Any, path: str, base: Any = None) -> Any:
    """Build dataclass `cls` from a mapping, checking every key against its type. Keys left out
    take their values from `base` (an instance of `cls`: a fine-tuning parent's section) where
    given, else their defaults."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = path or "config"
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            key_path = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f", did you mean {close[0]}?" if close else f" (known keys: {', '.join(fields)})"
            raise ConfigError(f"{key_path}: unknown key{hint}")
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key_path = f"{path}.{name}" if path else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw[name], key_path, None if base is None else getattr(base, name))
        else:
            values[name] = _check_value(key_path, tp, raw[name], dict(f.metadata))
    return cls(**values) if base is None else dataclasses.replace(base, **values)


# A corpus tag cannot be mistaken for a target-language tag (<2de>) or a special piece.
CORPUS_TAG = re.compile(r"<[A-Za-z][A-Za-z0-9_.-]*>")
_SPECIAL_PIECES = {"<s>", "<unk>", "<pad>"}


def _check_sampling(t: TokenizerConfig) -> None:
    s, default = t.sampling, SubwordSampling()
    if s.alpha is not None and t.model_type != "unigram":
        raise ConfigError(f"tokenizer.sampling.alpha: samples unigram segmentations, but tokenizer.model_type is "
                          f"{t.model_type}; for bpe use tokenizer.sampling.dropout")
    if s.dropout is not None and t.model_type != "bpe":
        raise ConfigError(f"tokenizer.sampling.dropout: is BPE-dropout, but tokenizer.model_type is {t.model_type}; "
                          f"for unigram use tokenizer.sampling.alpha")
    if s.nbest_size != default.nbest_size and (s.alpha is None or s.nbest_size in (0, 1)):
        raise ConfigError("tokenizer.sampling.nbest_size: needs tokenizer.sampling.alpha, and 2 or more (or -1: all "
                          f"segmentations), got {s.nbest_size}")
    if s.copies != default.copies and s.alpha is None and s.dropout is None:
        raise ConfigError("tokenizer.sampling.copies: only used with tokenizer.sampling.alpha or dropout")


def _cross_check(cfg: Config) -> None:
    """Rules that involve more than one key."""
    m, t = cfg.model, cfg.training
    if m.share_embeddings:
        if not cfg.tokenizer.joint:
            raise ConfigError("model.share_embeddings: needs tokenizer.joint: true (one vocabulary for both sides)")
        if m.encoder.emb_size != m.decoder.emb_size:
            raise ConfigError("model.share_embeddings: needs model.encoder.emb_size == model.decoder.emb_size "
                              f"(got {m.encoder.emb_size} and {m.decoder.emb_size})")
    if m.tie_embeddings and m.decoder.emb_size != m.decoder.hidden_size:
        raise ConfigError("model.tie_embeddings: needs model.decoder.emb_size == model.decoder.hidden_size "
                          f"(got {m.decoder.emb_size} and {m.decoder.hidden_size})")
    enc_out = m.encoder.hidden_size * (2 if m.encoder.bidirectional else 1)
    if m.decoder.attention == "dot" and enc_out != m.decoder.hidden_size:
        raise ConfigError("model.decoder.attention: 'dot' needs the encoder output size "
                          f"({enc_out}) to equal model.decoder.hidden_size ({m.decoder.hidden_size}); "
                          "use 'general' or 'additive'")
    if t.average_checkpoints == 1:
        raise ConfigError("training.average_checkpoints: averaging needs at least 2 checkpoints (0 or null: off)")
    if t.average_checkpoints is not None and t.keep_best < t.average_checkpoints:
        raise ConfigError(f"training.average_checkpoints: averaging {t.average_checkpoints} checkpoints needs "
                          f"training.keep_best >= {t.average_checkpoints} (got {t.keep_best})")
    if t.ema_decay is None and t.ema_start:
        raise ConfigError("training.ema_start: only used with training.ema_decay")
    if t.batch_tokens is None and t.batch_size is None:
        raise ConfigError("training.batch_tokens: set batch_tokens, batch_size or both")
    if len(t.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.betas):
        raise ConfigError(f"training.betas: expected two numbers in [0, 1), got {t.betas!r}")
    for i, corpus in enumerate(cfg.data.train):
        if not corpus.path:
            raise ConfigError(f"data.train[{i}].path: every corpus needs the path prefix of its files")
        if corpus.tag is not None and (not CORPUS_TAG.fullmatch(corpus.tag) or corpus.tag in _SPECIAL_PIECES):
            raise ConfigError(f"data.train[{i}].tag: expected a piece such as <bt> (<, a letter, then letters, "
                              f"digits, _ . or -, then >; not <s>, <unk> or <pad>), got {corpus.tag!r}")
    _check_sampling(cfg.tokenizer)
    if cfg.data.src_lang == cfg.data.tgt_lang:
        raise ConfigError("data.tgt_lang: must differ from data.src_lang")
    if cfg.init_from is None and cfg.finetune.freeze:
        raise ConfigError("finetune.freeze: needs init_from (freezing untrained weights would keep them random)")
    if cfg.finetune.warmup_steps and (cfg.init_from is None or not cfg.finetune.reset_step):
        raise ConfigError("finetune.warmup_steps: needs init_from and finetune.reset_step: true (the phase is the "
                          "run's first updates)")
    if cfg.finetune.vocabulary in ("keep_source", "keep_target") and cfg.tokenizer.joint:
        raise ConfigError(f"tokenizer.joint: finetune.vocabulary: {cfg.finetune.vocabulary} gives each side its "
                          f"own tokenizer; set joint: false (or leave the tokenizer section out)")
    if cfg.finetune.transfer_parent_pairs is not None and not cfg.finetune.transfer_joint_with_parent:
        raise ConfigError("finetune.transfer_parent_pairs: only used with finetune.transfer_joint_with_parent: true")


def config_from_dict(raw: Any) -> Config:
    """Validate a nested mapping (as read from YAML) into a Config."""
    cfg = _build(Config, raw, "")
    _cross_check(cfg)
    return cfg
