"""How a run begins: from scratch, resumed from its own last.pt, or from a parent run.

`begin` builds everything the training loop needs, in this order: the run directory and its
log, the data, the tokenizers (tokenizers.py), the model (with a parent's weights), the
optimizer and learning-rate schedule, and the training state (restored in one place, state.py,
for resume and fine-tuning alike). The loop in loop.py then only trains.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import torch

from seq2seq import config
from seq2seq.config import Config, dump_yaml
from seq2seq.data.encode import Segmenting
from seq2seq.data.format import Store
from seq2seq.data.prepare import open_or_prepare
from seq2seq.data.text import check_files_exist
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.errors import TrainingError
from seq2seq.model.model import build_model, count_parameters, resolve_device
from seq2seq.model.precision import grad_scaler, resolve as resolve_precision
from seq2seq.run.rundir import RunDir
from seq2seq.training import distributed as dist
from seq2seq.training.ema import WeightAverage
from seq2seq.training.finetune import Parent, check_architecture, parent_config
from seq2seq.training.log import setup_logging
from seq2seq.training.machine import choose_threads
from seq2seq.training.schedule import LearningRate
from seq2seq.training.state import Progress, Session, build_optimizer, continue_parent_state, resume_state
from seq2seq.training.tokenizer_record import check_tokenizers, record_tokenizers
from seq2seq.training.tokenizers import prepare_tokenizers
from seq2seq.training.transfer import VocabularyWarmup, freeze
from seq2seq.training.validation import ValidationSet, read_validation, validation_set

log = logging.getLogger("seq2seq")


def load_run_config(path: str | Path | None, overrides: list[str] | tuple = ()) -> Config:
    """The config a run trains with: YAML from `path` (or the defaults), --set `overrides`, and,
    with init_from, the model and tokenizer settings inherited from the parent run, read from
    the checkpoint fine-tuning starts from (so a damaged or missing one is named before any work)."""
    return config.load_run_config(path, overrides, read_parent=parent_config)


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


def resumed_config(cfg: Config, stored: Config) -> Config:
    """On resume everything comes from the run, except the stopping limits, which may change."""
    t = cfg.training
    return replace(stored, training=replace(stored.training, max_epochs=t.max_epochs, max_steps=t.max_steps,
                                            max_minutes=t.max_minutes, patience=t.patience))


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
    t = cfg.training
    device = dist.device_for_rank(resolve_device(t.device))
    if device.type == "cpu":
        threads, why = choose_threads(t.num_threads)
        torch.set_num_threads(threads)
        log.info("%d CPU thread(s) (%s)", threads, why)
    elif t.num_threads is not None:
        torch.set_num_threads(t.num_threads)

    valid_src, valid_tgt = read_validation(cfg.data)  # a missing file is found before hours of preparing
    parent = load_parent(cfg) if cfg.init_from is not None and not resume else None
    check_tokenizers(cfg, run, resume=resume)
    src_tok, tgt_tok = prepare_tokenizers(cfg, run, parent)
    if not resume:
        record_tokenizers(cfg, run)
    train_data = prepare_data(cfg, run, src_tok, tgt_tok, quiet=quiet)
    valid = validation_set(cfg.data, valid_src, valid_tgt, src_tok, tgt_tok)
    log.info("data: %d training pairs, %d validation pairs; vocabulary %d source / %d target pieces",
             len(train_data), len(valid.refs), len(src_tok), len(tgt_tok))
    return build_session(cfg, run, device, parent, saved, src_tok, tgt_tok, train_data, valid)


def build_session(cfg: Config, run: RunDir, device: torch.device, parent: Parent | None, saved: dict | None,
                  src_tok: Tokenizer, tgt_tok: Tokenizer, train_data: Store, valid: ValidationSet) -> Session:
    """The model (a parent's weights in it, or the run's own from `saved`), the optimizer, the
    learning-rate schedule and the training state."""
    t, ft = cfg.training, cfg.finetune
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
    optimizer = build_optimizer(model, t)
    schedule = LearningRate(optimizer, t)
    progress = Progress()
    chosen, why = resolve_precision(t.precision, device)
    scaler = grad_scaler(chosen, device)
    if parent is not None:
        continue_parent_state(cfg, parent, model, optimizer, schedule.plateau, progress)
    if saved is not None:
        # With a moving average, "model" holds the average and "raw_model" the trained weights.
        model.load_state_dict(saved.get("raw_model", saved["model"]))
        resume_state(saved, run, optimizer, schedule.plateau, progress, scaler)
    ema = moving_average(model, cfg, saved)
    warmup = VocabularyWarmup(model, steps=ft.warmup_steps, step=progress.step)
    log.info("model: %s parameters (%s trainable) on %s; precision %s (%s)", f"{count_parameters(model):,}",
             f"{count_parameters(model, trainable_only=True):,}", device, chosen, why)
    train_model = dist.wrap(model)
    if dist.world_size() > 1:
        # Ranks start from identical weights (same seed), but each needs its own dropout masks,
        # or N ranks regularise like one. The step term gives a resumed run fresh streams too.
        torch.manual_seed(t.seed + 1_000_003 * dist.rank() + progress.step)
    return Session(cfg, run, device, model, train_model, optimizer, schedule, progress, src_tok, tgt_tok,
                   train_data, valid, chosen, scaler, ema, warmup)


def moving_average(model: torch.nn.Module, cfg: Config, saved: dict | None) -> WeightAverage | None:
    """training.ema_decay's average of the weights (restored from `saved` on resume), or None."""
    t = cfg.training
    if t.ema_decay is None:
        return None
    ema = WeightAverage(model, decay=t.ema_decay, start=t.ema_start)
    if saved is not None and "raw_model" in saved:
        ema.model.load_state_dict(saved["model"])
    log.info("training.ema_decay: validation and checkpoints use the moving average of the weights (decay %g, "
             "averaging after update %d)", t.ema_decay, t.ema_start)
    return ema
