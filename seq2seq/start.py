"""How a run begins: from scratch, resumed from its own last.pt, or from a parent run.

`begin` builds everything the training loop needs, in this order: the run directory and its
log, the data, the tokenizers (trained, copied from a parent, or transferred: one place), the
model (with a parent's weights), the optimizer and schedule, and the training state (restored
in one place, `restore_state`, for resume and fine-tuning alike). The loop in trainer.py then
only trains.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import distributed as dist
from .checkpoint import has_training_state, restore_random_state
from .precision import grad_scaler, resolve as resolve_precision
from .config import Config, apply_overrides, config_from_dict, dump_yaml, read_yaml
from .data import corpus_tags, encode_parallel, encode_sources, stream_pairs, tag_piece, tag_sources, tags_in
from .data.encode import Segmenting
from .data.format import Store
from .data.prepare import open_or_prepare
from .data.text import check_files_exist
from .data.sampling import tokenizer_sample
from .ema import WeightAverage
from .errors import ConfigError, TrainingError
from .finetune import KEPT_SIDES, Parent, check_architecture, check_kept_side, inherit_from_parent, parent_sample
from .model import Seq2Seq, build_model, count_parameters, resolve_device
from .rundir import RunDir
from .tokenizer import Tokenizer, add_pieces, read_kept, side_lists, train_tokenizer, write_kept
from .tokenizer_record import check_tokenizers, record_tokenizers
from .transfer import freeze, map_optimizer_state
from .validation import ValidationSet

log = logging.getLogger("seq2seq")


def load_run_config(path: str | Path | None, overrides: list[str] | tuple = ()) -> Config:
    """The config a run trains with: YAML from `path` (or the defaults), --set `overrides`, and,
    with init_from, the model and tokenizer settings inherited from the parent run."""
    raw = apply_overrides(read_yaml(path) if path is not None else {}, list(overrides))
    if raw.get("init_from") is not None:
        raw = inherit_from_parent(raw)
    return config_from_dict(raw)


@dataclass
class Progress:
    """Where training stands; saved in last.pt, so a resumed run goes on exactly from here."""
    step: int = 0                 # optimizer updates done
    epoch: int = 1                # current epoch (1-based)
    batch_in_epoch: int = 0       # batches of this epoch already consumed
    elapsed: float = 0.0          # seconds of training so far, across restarts
    best_score: float | None = None
    best_step: int | None = None
    bad_validations: int = 0
    last_valid_step: int = -1
    nonfinite_in_a_row: int = 0
    oom_skipped: int = 0          # pairs skipped because even alone they did not fit in memory
    kept: list = field(default_factory=list)  # [[score, step, file], ...] best checkpoints on disk

    def improved(self, score: float, metric: str) -> bool:
        if self.best_score is None:
            return True
        return score < self.best_score if metric == "loss" else score > self.best_score


@dataclass
class Session:
    """Everything a training run needs, built before its loop starts."""
    cfg: Config
    run: RunDir
    device: torch.device
    model: Seq2Seq                   # the plain model (what is saved)
    train_model: torch.nn.Module     # what trains: the model, or DistributedDataParallel around it
    optimizer: torch.optim.Optimizer
    scheduler: Any                   # ReduceLROnPlateau, or None
    progress: Progress
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train_data: Store
    valid: ValidationSet
    precision: str = "fp32"          # of the forward passes (precision.py)
    scaler: Any = None               # fp16's GradScaler, saved in last.pt
    ema: WeightAverage | None = None  # the moving average of the weights (training.ema_decay)

    @property
    def weights(self) -> Seq2Seq:
        """The model that is validated and saved as the result: the moving average when there is one."""
        return self.model if self.ema is None else self.ema.model


# ---------------------------------------------------------------------------------------
# The run directory and its log


class _ConsoleHandler(logging.StreamHandler):
    """Writes log lines around an active progress bar, so neither overwrites the other."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup_logging(run_dir: Path | None, quiet: bool = False) -> None:
    root = logging.getLogger("seq2seq")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if not quiet:
        console = _ConsoleHandler(sys.stderr)
        console.setFormatter(fmt)
        root.addHandler(console)
    if run_dir is not None:
        handler = logging.FileHandler(RunDir(run_dir).train_log, encoding="utf-8")
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.propagate = False


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory and prove it is writable before any work starts."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_probe"
        with open(probe, "wb") as f:
            f.write(b"\0" * (1 << 20))  # a full disk shows up here, not hours later
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"{run_dir}: run directory is not writable ({e.strerror or e})") from None


# ---------------------------------------------------------------------------------------
# Tokenizers: trained, copied from a parent, or transferred


def prepare_tokenizers(cfg: Config, run: RunDir, parent: Parent | None = None,
                       sample: tuple[list[str], list[str]] | None = None) -> tuple[Tokenizer, Tokenizer]:
    """The run's tokenizers, written into the run directory the first time. A side that a
    parent's vocabulary keeps (finetune.vocabulary) gets the parent's SentencePiece model byte
    for byte; every other side is trained on the training data (at most tokenizer.sample_size
    pairs of it: `sample`, drawn here when not given; with transfer_joint_with_parent, plus a
    sample of the parent's). With tokenizer.drop_unseen each side then keeps the pieces its
    training text uses, unless it keeps the parent's whole vocabulary."""
    d, t, ft = cfg.data, cfg.tokenizer, cfg.finetune
    src_file, tgt_file = run.tokenizer_files(cfg)
    src_kept, tgt_kept = run.kept_files()
    kept_sides = KEPT_SIDES[ft.vocabulary] if parent is not None else ()
    keeps_parent = cfg.init_from is not None and ft.vocabulary == "keep"
    missing = not src_file.exists() or not tgt_file.exists() or (
        t.drop_unseen and not keeps_parent and not tgt_kept.exists())
    # Only the process that trains them reads the corpora for a sample (a parent's checks need it on all).
    if sample is None and (parent is not None or (missing and dist.is_main())):
        sample = tokenizer_sample(d, size=t.sample_size, seed=cfg.training.seed)
    train_src, train_tgt = sample if sample is not None else ([], [])
    if parent is not None:
        if ft.vocabulary == "keep" and t.joint != parent.config.tokenizer.joint:
            raise ConfigError(f"tokenizer.joint: finetune.vocabulary: keep uses the parent's tokenizer, which has "
                              f"joint: {str(parent.config.tokenizer.joint).lower()}")
        sides = {"source": (parent.src_tok, train_src), "target": (parent.tgt_tok, train_tgt)}
        for side in kept_sides:
            check_kept_side(cfg, side, *sides[side])
    if dist.is_main():
        src_text, tgt_text = train_src, train_tgt
        tags = tags_in(train_src) if d.src_prefix_tag else []
        if parent is not None:
            for side, file, parent_tok in (("source", src_file, parent.src_tok), ("target", tgt_file, parent.tgt_tok)):
                if side in kept_sides:
                    shutil.copyfile(parent_tok.path, file)
            if ft.vocabulary == "keep":
                for parent_list, child_list in zip(RunDir(parent.run_dir).kept_files(), (src_kept, tgt_kept)):
                    if parent_list.is_file():
                        shutil.copyfile(parent_list, child_list)
            elif ft.transfer_joint_with_parent:
                # Each side learns from the parent's same side: that is the vocabulary its rows come from.
                p_src, p_tgt = parent_sample(parent.config.data, ft.transfer_parent_pairs or len(train_src), cfg.training.seed)
                src_text, tgt_text = src_text + p_src, tgt_text + p_tgt
                log.info("tokenizer: training on the new data plus %d pairs of the parent's data", len(p_src))
            if "source" in kept_sides:
                add_corpus_tags(cfg, src_file, src_kept, tgt_kept)
            if d.src_prefix_tag:
                # The parent's tags stay single pieces so that their rows (and its languages) carry over.
                tags = sorted(set(tags) | set(parent.tags()))
        tags += [tag_piece(tag) for tag in corpus_tags(d)]
        options = dict(vocab_size=t.vocab_size, model_type=t.model_type, character_coverage=t.character_coverage)
        if t.joint and not src_file.exists():
            train_tokenizer(list(src_text) + list(tgt_text), src_file, user_defined_symbols=tags, **options)
        if not t.joint and not src_file.exists():
            train_tokenizer(src_text, src_file, user_defined_symbols=tags, **options)
        if not t.joint and not tgt_file.exists():
            train_tokenizer(tgt_text, tgt_file, **options)
        # Fine-tuning with vocabulary keep has copied the parent's lists (or its lack of them).
        if t.drop_unseen and not keeps_parent and not tgt_kept.exists():
            src_list, tgt_list = side_lists(Tokenizer(src_file), Tokenizer(tgt_file), train_src, train_tgt,
                                            shared=cfg.model.share_embeddings)
            write_kept(src_kept, src_list)
            write_kept(tgt_kept, tgt_list)
            log.info("tokenizer.drop_unseen: keeping %d source / %d target pieces seen in the training data",
                     len(src_list), len(tgt_list))
    dist.barrier()
    src_tok, tgt_tok = run.open_tokenizers(cfg)
    check_corpus_tags(cfg, src_tok)
    return src_tok, tgt_tok


def add_corpus_tags(cfg: Config, src_file: Path, src_kept: Path, tgt_kept: Path) -> None:
    """A source tokenizer kept from a parent learns the corpus tags it lacks as new pieces at the
    end of its vocabulary (and of its kept list, with tokenizer.drop_unseen): the parent's pieces
    keep their ids and rows, a tag's row starts fresh (finetune.py routes the weights)."""
    sp = Tokenizer(src_file).sp
    new = [piece for tag in corpus_tags(cfg.data) if sp.piece_to_id(piece := tag_piece(tag)) == sp.unk_id()]
    if not new:
        return
    size = sp.get_piece_size()
    add_pieces(src_file, new)
    # One embedding matrix for both sides keeps one list for both.
    for path in (src_kept, tgt_kept) if cfg.model.share_embeddings else (src_kept,):
        kept = read_kept(path)
        if kept is not None:
            write_kept(path, kept + list(range(size, size + len(new))))
    log.info("tokenizer: the parent's source tokenizer learns the corpus tags %s as new pieces", ", ".join(new))


def check_corpus_tags(cfg: Config, src_tok: Tokenizer) -> None:
    """Every corpus tag is one piece of the source tokenizer, or a ConfigError naming it."""
    for i, corpus in enumerate(cfg.data.train):
        if corpus.tag and src_tok.encode(corpus.tag) != [src_tok.piece_to_id(tag_piece(corpus.tag))]:
            raise ConfigError(f"data.train[{i}].tag: {corpus.tag} is not one piece of the source tokenizer "
                              f"{src_tok.path}, which was trained without it; train new tokenizers (train "
                              f"--overwrite, or remove the spm.*.model files from the run directory)")


# ---------------------------------------------------------------------------------------
# Optimizer, schedule and training state


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    t = cfg.training
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    # One fused kernel per parameter instead of about eight elementwise passes: Adam's
    # arithmetic was about 6 % of a CPU training step (scripts/profile_training.py).
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return cls(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config):
    t = cfg.training
    if t.scheduler == "plateau":
        mode = "min" if t.early_stop_metric == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=t.plateau_factor,
                                                          patience=t.plateau_patience, min_lr=t.min_lr)
    return None


def decay_rate(optimizer: torch.optim.Optimizer, cfg: Config, step: int) -> None:
    """training.decay_start: after update `step`, multiply the rate by decay_factor where a decay
    is due. The rate lives in the optimizer's state, so a resumed run goes on from it; and the
    decay multiplies whatever the scheduler made of the rate, so it composes with plateau."""
    t = cfg.training
    if t.decay_start is None or step < t.decay_start or (step - t.decay_start) % t.decay_every:
        return
    for group in optimizer.param_groups:
        group["lr"] = max(group["lr"] * t.decay_factor, min(group["lr"], t.min_lr))
    log.info("training.decay_start: learning rate %.2e after update %d", optimizer.param_groups[0]["lr"], step)


# The plateau schedule's counters; its factor, patience and bounds come from the config.
SCHEDULE_COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")
EARLY_STOPPING = ("best_score", "best_step", "bad_validations")


def restore_state(saved: dict, optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress, *,
                  optimizer_state: dict | None = None, lr: bool = False, schedule_keys=(),
                  progress_keys=()) -> None:
    """The one place where training state comes back from a checkpoint (a run's own last.pt
    on resume, a parent's when fine-tuning), through the public state_dicts: the optimizer's
    `optimizer_state`, the learning rate, the schedule's `schedule_keys` and `progress_keys`."""
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if lr:
        rate = saved["optimizer"]["param_groups"][0]["lr"]
        for group in optimizer.param_groups:
            group["lr"] = rate
    if scheduler is not None and saved.get("scheduler") and schedule_keys:
        state = scheduler.state_dict()
        state.update({k: v for k, v in saved["scheduler"].items() if k in schedule_keys})
        scheduler.load_state_dict(state)
    for key in progress_keys:
        setattr(progress, key, saved["progress"][key])


def resume_state(saved: dict, run: RunDir, optimizer, scheduler, progress: Progress, scaler=None) -> None:
    """All of a run's own training state, random streams (and fp16's loss scale) included."""
    restore_state(saved, optimizer, scheduler, progress, optimizer_state=saved["optimizer"],
                  schedule_keys=tuple(saved.get("scheduler") or ()),
                  progress_keys=[f.name for f in dataclasses.fields(Progress)])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    restore_random_state(saved)
    log.info("resumed from %s at step %d (epoch %d, batch %d)", run.last, progress.step, progress.epoch,
             progress.batch_in_epoch)


def continue_parent_state(cfg: Config, parent: Parent, model: torch.nn.Module, optimizer, scheduler,
                          progress: Progress) -> None:
    """The parent's optimizer state, schedule, step or best score, where finetune.reset_* keep them."""
    ft, t, pt = cfg.finetune, cfg.training, parent.config.training
    resets = ("reset_optimizer", "reset_schedule", "reset_step", "reset_early_stopping")
    kept = [k for k in resets if not getattr(ft, k)]
    if not kept:
        return
    last = RunDir(parent.run_dir).last
    if not last.is_file():
        raise ConfigError(f"finetune.{kept[0]}: false needs the parent's training state, but {last} does not exist")
    _, saved, _ = RunDir(parent.run_dir).training_state()
    if not has_training_state(saved):
        raise ConfigError(f"finetune.{kept[0]}: false needs the parent's training state, but {last} has none")
    if not ft.reset_optimizer and t.optimizer != pt.optimizer:
        raise ConfigError(f"finetune.reset_optimizer: false needs the parent's optimizer "
                          f"({pt.optimizer}), but training.optimizer is {t.optimizer}")
    if not ft.reset_optimizer and cfg.model.share_embeddings != parent.config.model.share_embeddings:
        raise ConfigError("finetune.reset_optimizer: false needs the parent's parameters one for one, but its "
                          "shared embedding matrix is split into one per side here; set reset_optimizer: true")
    if not ft.reset_early_stopping and t.early_stop_metric != pt.early_stop_metric:
        raise ConfigError(f"finetune.reset_early_stopping: false needs the parent's early_stop_metric "
                          f"({pt.early_stop_metric}), but training.early_stop_metric is {t.early_stop_metric}")
    optimizer_state = None
    if not ft.reset_optimizer:
        optimizer_state = optimizer.state_dict()
        optimizer_state["state"] = map_optimizer_state(model, saved["optimizer"], parent.config.finetune.freeze,
                                                       parent.maps)
        log.info("continuing the parent's optimizer state for %d parameter tensors", len(optimizer_state["state"]))
    same_schedule = pt.scheduler == t.scheduler and pt.early_stop_metric == t.early_stop_metric
    restore_state(saved, optimizer, scheduler, progress, optimizer_state=optimizer_state,
                  lr=not ft.reset_schedule,
                  schedule_keys=SCHEDULE_COUNTERS if not ft.reset_schedule and same_schedule else (),
                  progress_keys=(("step",) if not ft.reset_step else ()) +
                                (EARLY_STOPPING if not ft.reset_early_stopping else ()))
    if not ft.reset_schedule:
        log.info("continuing the parent's learning rate %.2e", optimizer.param_groups[0]["lr"])
    if not ft.reset_step:
        log.info("continuing the parent's step count from %d", progress.step)
    if not ft.reset_early_stopping:
        log.info("the parent's best %s %s (its step %s) is the score to beat", t.early_stop_metric,
                 progress.best_score, progress.best_step)


# ---------------------------------------------------------------------------------------
# The run


def resumed_config(cfg: Config, stored: Config) -> Config:
    """On resume everything comes from the run, except the stopping limits, which may change."""
    t = cfg.training
    return replace(stored, training=replace(stored.training, max_epochs=t.max_epochs, max_steps=t.max_steps,
                                            max_minutes=t.max_minutes, patience=t.patience))


def read_validation(cfg: Config) -> tuple[list[str], list[str]]:
    """The validation sources and references, read with the same checks as the training corpora
    (a validation set is small enough to hold)."""
    d = cfg.data
    pairs = list(stream_pairs(f"{d.valid}.{d.src_lang}", f"{d.valid}.{d.tgt_lang}",
                              skip_invalid_utf8=d.skip_invalid_utf8))
    return [s for s, _ in pairs], [t for _, t in pairs]


def validation_set(cfg: Config, valid_src: list[str], valid_tgt: list[str], src_tok: Tokenizer,
                   tgt_tok: Tokenizer) -> ValidationSet:
    """The validation pairs for the loss, and the sources encoded exactly as translate encodes them."""
    d = cfg.data
    tagged = tag_sources(valid_src, d.tgt_lang) if d.src_prefix_tag else valid_src
    pairs = encode_parallel(tagged, valid_tgt, src_tok, tgt_tok, name=f"{d.valid}")
    src_ids, cut = encode_sources(valid_src, src_tok, max_len=d.max_src_len,
                                  tgt_lang=d.tgt_lang if d.src_prefix_tag else None)
    if cut:
        log.info("%s.%s: %d sources have more than data.max_src_len=%d pieces; validation cuts them, as "
                 "translate does", d.valid, d.src_lang, len(cut), d.max_src_len)
    return ValidationSet(pairs, src_ids, valid_tgt)


def prepare_data(cfg: Config, run: RunDir, src_tok: Tokenizer, tgt_tok: Tokenizer, *,
                 quiet: bool = False) -> Store:
    """The training corpora's prepared store: reused when its inputs are unchanged, otherwise
    written by rank 0 while the other processes wait."""
    files = [*run.tokenizer_files(cfg), *run.kept_files()]
    segmenting = Segmenting.from_config(cfg.tokenizer.sampling, cfg.training.seed)
    store = open_or_prepare(cfg.data, run.prepared, src_tok, tgt_tok, files, prepare=dist.is_main(),
                            segmenting=segmenting, quiet=quiet)
    dist.barrier()
    return store


def open_run_dir(run: RunDir, cfg: Config, *, quiet: bool) -> None:
    """Create the run directory (rank 0), start its log and write the resolved config."""
    if dist.is_main():
        prepare_run_dir(run.path)
        for stale in run.path.glob(".*.pt.tmp*"):  # a checkpoint write cut short by kill -9
            stale.unlink()
        setup_logging(run.path, quiet=quiet)
        run.config_file.write_text(dump_yaml(cfg), encoding="utf-8")
    else:
        setup_logging(None, quiet=True)
    dist.barrier()


def load_parent(cfg: Config) -> Parent:
    """The run that init_from names, checked against this run's architecture."""
    ft = cfg.finetune
    parent = Parent.load(cfg.init_from, ft.checkpoint, ft.vocabulary, ft.new_pieces)
    check_architecture(cfg, parent.config, parent.run_dir)
    if ft.vocabulary != "keep" and "embeddings" in ft.freeze:
        log.warning("finetune.freeze includes embeddings with a transferred vocabulary: rows of new pieces "
                    "stay at their random initialisation")
    return parent


def prepare(cfg: Config, run_dir: str | Path, *, quiet: bool = False) -> Store:
    """`seq2seq prepare`: the run's tokenizers and prepared store, without training (a later
    `seq2seq train` on the same run directory reuses both)."""
    dist.init()
    run = RunDir(run_dir)
    check_files_exist(cfg.data)
    open_run_dir(run, cfg, quiet=quiet)
    parent = load_parent(cfg) if cfg.init_from is not None else None
    check_tokenizers(cfg, run, resume=False)
    src_tok, tgt_tok = prepare_tokenizers(cfg, run, parent)
    record_tokenizers(cfg, run)
    return prepare_data(cfg, run, src_tok, tgt_tok, quiet=quiet)


def begin(cfg: Config, run_dir: str | Path, *, resume: bool = False, quiet: bool = False) -> Session:
    """Everything a run needs to train, from scratch, resumed from RUN_DIR/last.pt (`resume`),
    or from the parent run that cfg.init_from names."""
    run = RunDir(run_dir)
    dist.init()
    saved = None
    if resume:
        if not run.last.exists():
            raise TrainingError(f"{run}: nothing to resume (no last.pt)")
        _, saved, stored = run.training_state()
        cfg = resumed_config(cfg, stored)
    check_files_exist(cfg.data)  # before the run directory is made
    open_run_dir(run, cfg, quiet=quiet)
    t, ft = cfg.training, cfg.finetune
    device = dist.device_for_rank(resolve_device(t.device))
    if t.num_threads is not None:
        torch.set_num_threads(t.num_threads)

    valid_src, valid_tgt = read_validation(cfg)  # a missing file is found before hours of preparing
    parent = load_parent(cfg) if cfg.init_from is not None and not resume else None
    check_tokenizers(cfg, run, resume=resume)
    src_tok, tgt_tok = prepare_tokenizers(cfg, run, parent)
    if not resume:
        record_tokenizers(cfg, run)
    train_data = prepare_data(cfg, run, src_tok, tgt_tok, quiet=quiet)
    valid = validation_set(cfg, valid_src, valid_tgt, src_tok, tgt_tok)
    log.info("data: %d training pairs, %d validation pairs; vocabulary %d source / %d target pieces",
             len(train_data), len(valid.refs), len(src_tok), len(tgt_tok))

    torch.manual_seed(t.seed)
    model = build_model(cfg.model, src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok)).to(device)
    if parent is not None:
        carried = parent.initialise(model, src_tok, tgt_tok)
        if dist.is_main():
            run.finetune_record.write_text(json.dumps(
                {"parent": str(parent.run_dir), "vocabulary": ft.vocabulary,
                 "pieces_carried_over": carried, "new_pieces": ft.new_pieces,
                 "pieces_spelled": parent.spelled}, indent=1) + "\n", encoding="utf-8")
    freeze(model, ft.freeze)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    progress = Progress()
    chosen, why = resolve_precision(t.precision, device)
    scaler = grad_scaler(chosen, device)
    if parent is not None:
        continue_parent_state(cfg, parent, model, optimizer, scheduler, progress)
    if saved is not None:
        # With a moving average, "model" holds the average and "raw_model" the trained weights.
        model.load_state_dict(saved.get("raw_model", saved["model"]))
        resume_state(saved, run, optimizer, scheduler, progress, scaler)
    ema = None
    if t.ema_decay is not None:
        ema = WeightAverage(model, decay=t.ema_decay, start=t.ema_start)
        if saved is not None and "raw_model" in saved:
            ema.model.load_state_dict(saved["model"])
        log.info("training.ema_decay: validation and checkpoints use the moving average of the weights (decay %g, "
                 "averaging after update %d)", t.ema_decay, t.ema_start)
    log.info("model: %s parameters (%s trainable) on %s; precision %s (%s)", f"{count_parameters(model):,}",
             f"{count_parameters(model, trainable_only=True):,}", device, chosen, why)
    train_model = dist.wrap(model)
    if dist.world_size() > 1:
        # Ranks start from identical weights (same seed), but each needs its own dropout masks,
        # or N ranks regularise like one. The step term gives a resumed run fresh streams too.
        torch.manual_seed(t.seed + 1_000_003 * dist.rank() + progress.step)
    return Session(cfg, run, device, model, train_model, optimizer, scheduler, progress, src_tok, tgt_tok,
                   train_data, valid, chosen, scaler, ema)
