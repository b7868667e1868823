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
  two sides then need tokenizers of their own (tokenizer.joint: false).

`inherit_from_parent` fills a config's model section from the parent (called by load_config);
`prepare` runs before the trainer loads tokenizers, and the returned Parent initialises the
model and, when asked, continues the parent's optimizer, schedule, step and best score.
"""
from __future__ import annotations

import logging
import random
import shutil
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import distributed as dist
from .checkpoint import load_checkpoint, unwrap
from .config import Config, ConfigError, config_from_dict, deep_merge, to_dict
from .data import TAG_PATTERN, DataError, read_parallel, tag_sources, tags_in
from .tokenizer import Tokenizer, kept_files, open_tokenizers, tokenizer_files, train_tokenizer

log = logging.getLogger(__name__)

# Model settings that may differ from the parent: they change no weight's shape or meaning.
FREE_MODEL_KEYS = {"encoder.dropout", "decoder.dropout", "init", "rnn_init"}

# Weights whose rows follow a vocabulary, and which side's vocabulary.
VOCAB_ROWS = {"encoder.embed.weight": "source", "decoder.embed.weight": "target",
              "decoder.output.weight": "target", "decoder.output.bias": "target"}

# The sides whose tokenizer each finetune.vocabulary takes from the parent.
KEPT_SIDES = {"keep": ("source", "target"), "transfer": (), "keep_source": ("source",),
              "keep_target": ("target",)}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parent_checkpoint(run_dir: Path, name: str) -> Path:
    """The parent's checkpoint file, or a ConfigError saying why `run_dir` is not a usable run."""
    if not run_dir.is_dir():
        raise ConfigError(f"init_from: {run_dir} is not a run directory (it does not exist or is a file)")
    path = run_dir / name
    if name == "best.pt" and not path.exists() and (run_dir / "last.pt").exists():
        path = run_dir / "last.pt"  # a parent stopped before its first validation
    if not path.is_file():
        found = ", ".join(sorted(p.name for p in run_dir.glob("*.pt"))) or "no checkpoints at all"
        raise ConfigError(f"init_from: {run_dir} is not a trained run: no {name}"
                          f"{' or last.pt' if name == 'best.pt' else ''} (found: {found})")
    return path


def _parent_config(path: Path, stored: Any) -> Config:
    try:
        return config_from_dict(stored)
    except ConfigError as e:
        raise ConfigError(f"init_from: {path}: the parent's stored config is not valid here: {e}") from None


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
    checkpoint = ft.get("checkpoint", "best.pt")
    path = parent_checkpoint(run_dir, checkpoint if isinstance(checkpoint, str) else "best.pt")
    parent = to_dict(_parent_config(path, load_checkpoint(path)["config"]))
    out = dict(raw)
    vocabulary = ft.get("vocabulary")
    if vocabulary in ("keep_source", "keep_target"):
        out["tokenizer"] = _own_tokenizer_per_side(raw.get("tokenizer"), parent, vocabulary, run_dir)
    for section in ("model", "tokenizer"):
        given = out.get(section)
        if given is None:
            out[section] = parent[section]
            continue
        if not isinstance(given, dict):
            continue  # the validator reports it
        if section == "model" or ft.get("vocabulary") == "keep":
            free = FREE_MODEL_KEYS if section == "model" else set()
            differ = _differences(given, parent[section], section, free)
            if differ:
                why = "the architecture" if section == "model" else "finetune.vocabulary: keep uses its tokenizer, so"
                raise ConfigError(f"{section}: {why} must match the parent run {run_dir}, but these keys differ: "
                                  f"{'; '.join(differ)}. Leave them out to inherit the parent's values")
        out[section] = deep_merge(parent[section], given)
    return out


def _own_tokenizer_per_side(given: Any, parent: dict, vocabulary: str, run_dir: Path) -> Any:
    """The tokenizer section for keep_source / keep_target: one side keeps the parent's model and
    the other gets a new one, so the run cannot have a joint tokenizer."""
    if parent["model"].get("share_embeddings"):
        raise ConfigError(f"finetune.vocabulary: {vocabulary} gives each side its own vocabulary, but the parent "
                          f"run {run_dir} shares one embedding matrix between them (model.share_embeddings); "
                          f"use transfer or keep")
    if given is None:
        return {"joint": False}
    if isinstance(given, dict):
        if given.get("joint", False) is not False:
            raise ConfigError(f"tokenizer.joint: finetune.vocabulary: {vocabulary} gives each side its own "
                              f"tokenizer; set joint: false or leave it out")
        return {**given, "joint": False}
    return given  # the validator reports the wrong type


def check_architecture(cfg: Config, parent_cfg: Config, run_dir: Path) -> None:
    differ = _differences(to_dict(cfg.model), to_dict(parent_cfg.model), "model", FREE_MODEL_KEYS)
    if differ:
        raise ConfigError(f"model: the architecture must match the parent run {run_dir}, but these keys differ: "
                          f"{'; '.join(differ)}. Leave the model section out to inherit the parent's")


def unknown_characters(tok: Tokenizer, lines: Sequence[str]) -> list[str]:
    """Distinct characters of `lines` (language tags aside) that `tok` can only encode as unknown."""
    chars: set[str] = set()
    for line in lines:
        m = TAG_PATTERN.match(line)
        chars.update(line[m.end():] if m else line)
    chars -= set(string.whitespace)
    return sorted(c for c in chars if tok.sp.unk_id() in tok.encode(c))


def shared_pieces(child: Tokenizer, parent: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids of the pieces both vocabularies hold: (child ids, parent ids), matched by piece string."""
    parent_ids = {parent.id_to_piece(i): i for i in range(len(parent))}
    pairs = [(i, parent_ids[p]) for i in range(len(child)) if (p := child.id_to_piece(i)) in parent_ids]
    child_idx, parent_idx = zip(*pairs) if pairs else ((), ())
    return torch.tensor(child_idx, dtype=torch.long), torch.tensor(parent_idx, dtype=torch.long)


def transfer_weights(model: torch.nn.Module, parent_weights: dict[str, torch.Tensor],
                     maps: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Copy every parent weight into `model`; vocabulary-shaped weights only at the mapped rows
    (maps[side] = (child ids, parent ids)), keeping the model's own values elsewhere."""
    model = unwrap(model)
    state = model.state_dict()
    new = {}
    for name, current in state.items():
        if name not in parent_weights:
            raise ConfigError(f"init_from: the parent's checkpoint has no weight {name}; is it an older format?")
        old = parent_weights[name]
        side = VOCAB_ROWS.get(name)
        if side is None:
            if old.shape != current.shape:
                raise ConfigError(f"init_from: the parent's {name} has shape {tuple(old.shape)}, this model "
                                  f"needs {tuple(current.shape)}; the architectures differ")
            new[name] = old
            continue
        child_idx, parent_idx = maps[side]
        rows = current.clone()
        rows[child_idx.to(rows.device)] = old[parent_idx].to(rows.device, rows.dtype)
        new[name] = rows
    model.load_state_dict(new)


def frozen_names(model: torch.nn.Module, parts: Sequence[str]) -> set[str]:
    """Names (as in named_parameters) of the parameters that `parts` freeze."""
    model = unwrap(model)
    prefixes = {"embeddings": ("encoder.embed.", "decoder.embed."), "encoder": ("encoder.",),
                "decoder": ("decoder.",)}
    chosen = tuple(p for part in parts for p in prefixes[part])
    # Shared or tied tensors count as frozen when any of their names is.
    frozen_ids = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n.startswith(chosen)}
    return {n for n, p in model.named_parameters() if id(p) in frozen_ids}


def freeze(model: torch.nn.Module, parts: Sequence[str]) -> None:
    """Stop gradients for the chosen parts (embeddings, encoder, decoder)."""
    if not parts:
        return
    names = frozen_names(model, parts)
    total = trainable = 0
    for name, p in unwrap(model).named_parameters():
        p.requires_grad_(name not in names)
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    log.info("frozen: %s; %s of %s parameters trainable", ", ".join(parts), f"{trainable:,}", f"{total:,}")


def parent_sample(parent_cfg: Config, n: int, seed: int) -> tuple[list[str], list[str]]:
    """Up to `n` random training pairs of the parent (tagged as the parent tagged them)."""
    d = parent_cfg.data
    try:
        src, tgt = read_parallel(f"{d.train}.{d.src_lang}", f"{d.train}.{d.tgt_lang}",
                                 skip_invalid_utf8=d.skip_invalid_utf8)
    except DataError as e:
        raise ConfigError(f"finetune.transfer_joint_with_parent: the parent's training data cannot be read "
                          f"({e}); paths are relative to the working directory, or set it to false") from None
    keep = sorted(random.Random(seed).sample(range(len(src)), min(n, len(src))))
    src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    return (tag_sources(src, d.tgt_lang) if d.src_prefix_tag else src), tgt


@dataclass
class Parent:
    """A trained run to start from: its config, weights and tokenizers."""
    run_dir: Path
    config: Config
    weights: dict
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    vocabulary: str = "keep"
    maps: dict | None = None

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str = "best.pt") -> "Parent":
        run_dir = Path(run_dir)
        path = parent_checkpoint(run_dir, checkpoint)
        ckpt = load_checkpoint(path)
        cfg = _parent_config(path, ckpt["config"])
        d = cfg.data
        files = tokenizer_files(run_dir, cfg.tokenizer.joint, d.src_lang, d.tgt_lang)
        for f in (*files, *(kept_files(run_dir) if cfg.tokenizer.drop_unseen else ())):
            if not f.is_file():
                raise ConfigError(f"init_from: {run_dir} is missing its tokenizer {f.name}")
        return cls(run_dir, cfg, ckpt["model"], *open_tokenizers(run_dir, cfg.tokenizer.joint, d.src_lang, d.tgt_lang))

    def initialise(self, model: torch.nn.Module, src_tok: Tokenizer, tgt_tok: Tokenizer) -> None:
        """Load the parent's weights into `model`, which was built for (src_tok, tgt_tok)."""
        self.maps = {"source": shared_pieces(src_tok, self.src_tok), "target": shared_pieces(tgt_tok, self.tgt_tok)}
        if self.vocabulary == "keep":
            try:
                unwrap(model).load_state_dict(self.weights)
            except RuntimeError as e:
                raise ConfigError(f"init_from: the weights of {self.run_dir} do not fit this model: "
                                  f"{str(e).strip().splitlines()[-1].strip()[:300]}") from None
            log.info("fine-tuning from %s: all weights loaded (vocabulary kept: %d source / %d target pieces)",
                     self.run_dir, len(src_tok), len(tgt_tok))
            return
        transfer_weights(model, self.weights, self.maps)
        for side, tok, parent_tok in (("source", src_tok, self.src_tok), ("target", tgt_tok, self.tgt_tok)):
            log.info("fine-tuning from %s: %s side: %d of %d pieces carried over from the parent's %d "
                     "(%d initialised fresh)", self.run_dir, side, len(self.maps[side][0]), len(tok),
                     len(parent_tok), len(tok) - len(self.maps[side][0]))

    def continue_training_state(self, cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                scheduler: Any, progress: Any) -> None:
        """Carry the parent's optimizer state, schedule, step or best score where the config keeps them."""
        ft, t, pt = cfg.finetune, cfg.training, self.config.training
        if ft.reset_optimizer and ft.reset_schedule and ft.reset_step and ft.reset_early_stopping:
            return
        last = self.run_dir / "last.pt"
        key = next(f"finetune.{k}" for k in ("reset_optimizer", "reset_schedule", "reset_step",
                                              "reset_early_stopping") if not getattr(ft, k))
        if not last.is_file():
            raise ConfigError(f"{key}: false needs the parent's training state, but {last} does not exist")
        state = load_checkpoint(last)
        if "progress" not in state or "optimizer" not in state:
            raise ConfigError(f"{key}: false needs the parent's training state, but {last} has none")
        if not ft.reset_optimizer:
            if t.optimizer != pt.optimizer:
                raise ConfigError(f"finetune.reset_optimizer: false needs the parent's optimizer "
                                  f"({pt.optimizer}), but training.optimizer is {t.optimizer}")
            self._load_optimizer_state(model, optimizer, state["optimizer"])
        if not ft.reset_schedule:
            lr = state["optimizer"]["param_groups"][0]["lr"]
            for group in optimizer.param_groups:
                group["lr"] = lr
            if scheduler is not None and pt.scheduler == t.scheduler and state.get("scheduler") \
                    and pt.early_stop_metric == t.early_stop_metric:
                # Only the counters: factor and patience come from this run's config.
                for k in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
                    if k in state["scheduler"]:
                        setattr(scheduler, k, state["scheduler"][k])
            log.info("continuing the parent's learning rate %.2e", lr)
        parent_progress = state["progress"]
        if not ft.reset_step:
            progress.step = parent_progress["step"]
            log.info("continuing the parent's step count from %d", progress.step)
        if not ft.reset_early_stopping:
            if t.early_stop_metric != pt.early_stop_metric:
                raise ConfigError(f"finetune.reset_early_stopping: false needs the parent's early_stop_metric "
                                  f"({pt.early_stop_metric}), but training.early_stop_metric is "
                                  f"{t.early_stop_metric}")
            progress.best_score = parent_progress["best_score"]
            progress.best_step = parent_progress["best_step"]
            progress.bad_validations = parent_progress["bad_validations"]
            log.info("the parent's best %s %s (its step %s) is the score to beat", t.early_stop_metric,
                     progress.best_score, progress.best_step)

    def _load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                              saved: dict) -> None:
        # Saved state is indexed by position among the parent's trainable parameters; the
        # architecture is the same, so names line up once the parent's own freezing is applied.
        model = unwrap(model)
        parent_frozen = frozen_names(model, self.config.finetune.freeze)
        parent_order = [n for n, _ in model.named_parameters() if n not in parent_frozen]
        carried = 0
        for name, p in model.named_parameters():
            if not p.requires_grad or name not in parent_order:
                continue
            old = saved["state"].get(parent_order.index(name))
            if not old:
                continue
            side = VOCAB_ROWS.get(name)
            new = {}
            for k, v in old.items():
                if side is not None and torch.is_tensor(v) and v.dim() > 0:
                    child_idx, parent_idx = self.maps[side]
                    rows = torch.zeros_like(p, memory_format=torch.preserve_format)
                    rows[child_idx.to(p.device)] = v[parent_idx].to(p.device, p.dtype)
                    new[k] = rows
                else:
                    new[k] = v.to(p.device) if torch.is_tensor(v) and v.dim() > 0 else v
            optimizer.state[p] = new
            carried += 1
        log.info("continuing the parent's optimizer state for %d parameter tensors", carried)


def _train_transfer_tokenizers(cfg: Config, run_dir: Path, parent: Parent, train_src: list[str],
                               train_tgt: list[str]) -> None:
    d, t, ft = cfg.data, cfg.tokenizer, cfg.finetune
    src_file, tgt_file = tokenizer_files(run_dir, t.joint, d.src_lang, d.tgt_lang)
    # keep_source / keep_target: that side's model is the parent's, byte for byte.
    for side, tok, file in (("source", parent.src_tok, src_file), ("target", parent.tgt_tok, tgt_file)):
        if side in KEPT_SIDES[ft.vocabulary] and not file.exists():
            shutil.copyfile(tok.path, file)
    src_text, tgt_text = list(train_src), list(train_tgt)
    if ft.transfer_joint_with_parent:
        # Each side learns from the parent's same side: that is the vocabulary its rows come from.
        wanted = ft.transfer_parent_pairs or len(train_src)
        p_src, p_tgt = parent_sample(parent.config, wanted, cfg.training.seed)
        src_text += p_src
        tgt_text += p_tgt
        log.info("tokenizer: training on the new data plus %d pairs of the parent's data", len(p_src))
    tags: list[str] = []
    if d.src_prefix_tag:
        # The parent's tags stay single pieces so that their rows (and its languages) carry over.
        parent_tags = [p for i in range(len(parent.src_tok))
                       if TAG_PATTERN.fullmatch(p := parent.src_tok.id_to_piece(i))]
        tags = sorted(set(tags_in(train_src)) | set(parent_tags))
    options = dict(vocab_size=t.vocab_size, model_type=t.model_type, character_coverage=t.character_coverage)
    if t.joint:
        if not src_file.exists():
            train_tokenizer(src_text + tgt_text, src_file, user_defined_symbols=tags, **options)
        return
    if not src_file.exists():
        train_tokenizer(src_text, src_file, user_defined_symbols=tags, **options)
    if not tgt_file.exists():
        train_tokenizer(tgt_text, tgt_file, **options)


def _check_kept_side(cfg: Config, side: str, tok: Tokenizer, lines: list[str]) -> None:
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


def _keep_tokenizers(cfg: Config, run_dir: Path, parent: Parent, train_src: list[str],
                     train_tgt: list[str]) -> None:
    d = cfg.data
    if cfg.tokenizer.joint != parent.config.tokenizer.joint:
        raise ConfigError(f"tokenizer.joint: finetune.vocabulary: keep uses the parent's tokenizer, which has "
                          f"joint: {str(parent.config.tokenizer.joint).lower()}")
    _check_kept_side(cfg, "source", parent.src_tok, train_src)
    _check_kept_side(cfg, "target", parent.tgt_tok, train_tgt)
    src_file, tgt_file = tokenizer_files(run_dir, cfg.tokenizer.joint, d.src_lang, d.tgt_lang)
    if dist.is_main():
        shutil.copyfile(parent.src_tok.path, src_file)
        if tgt_file != src_file:
            shutil.copyfile(parent.tgt_tok.path, tgt_file)
        for parent_list, child_list in zip(kept_files(parent.run_dir), kept_files(run_dir)):
            if parent_list.is_file():
                shutil.copyfile(parent_list, child_list)


def prepare(cfg: Config, run_dir: str | Path, train_src: list[str], train_tgt: list[str]) -> Parent:
    """Check the parent against `cfg` and write the new run's tokenizer files; the trainer then
    loads them, builds the model and calls Parent.initialise."""
    run_dir = Path(run_dir)
    parent = Parent.load(cfg.init_from, cfg.finetune.checkpoint)
    parent.vocabulary = cfg.finetune.vocabulary
    check_architecture(cfg, parent.config, parent.run_dir)
    if cfg.finetune.vocabulary == "keep":
        _keep_tokenizers(cfg, run_dir, parent, train_src, train_tgt)
    else:
        sides = {"source": (parent.src_tok, train_src), "target": (parent.tgt_tok, train_tgt)}
        for side in KEPT_SIDES[cfg.finetune.vocabulary]:
            _check_kept_side(cfg, side, *sides[side])
        if dist.is_main():
            _train_transfer_tokenizers(cfg, run_dir, parent, train_src, train_tgt)
    dist.barrier()
    if cfg.finetune.vocabulary != "keep" and "embeddings" in cfg.finetune.freeze:
        log.warning("finetune.freeze includes embeddings with a transferred vocabulary: rows of new pieces stay "
                    "at their random initialisation")
    return parent
