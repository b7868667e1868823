"""What a training run holds while it trains: where it stands (`Progress`, saved in last.pt),
everything built before the loop (`Session`), the optimizer, and the one place where training
state comes back from a checkpoint (a run's own last.pt on resume, a parent's when fine-tuning)."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from seq2seq.config import Config, TrainingConfig
from seq2seq.data.format import Store
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.errors import ConfigError
from seq2seq.model.model import Seq2Seq
from seq2seq.run.checkpoint import has_training_state, restore_random_state
from seq2seq.run.rundir import RunDir
from seq2seq.training.ema import WeightAverage
from seq2seq.training.finetune import Parent
from seq2seq.training.schedule import LearningRate
from seq2seq.training.transfer import VocabularyWarmup, map_optimizer_state
from seq2seq.training.validation import ValidationSet

log = logging.getLogger("seq2seq")


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

    @property
    def validated_epoch(self) -> int:
        """The epoch the current weights finished: at an epoch's end the counter already points
        at the next one."""
        return self.epoch - 1 if self.batch_in_epoch == 0 else self.epoch


@dataclass
class Session:
    """Everything a training run needs, built before its loop starts (begin.py)."""
    cfg: Config
    run: RunDir
    device: torch.device
    model: Seq2Seq                   # the plain model (what is saved)
    train_model: torch.nn.Module     # what trains: the model, or DistributedDataParallel around it
    optimizer: torch.optim.Optimizer
    schedule: LearningRate           # every change of the learning rate
    progress: Progress
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train_data: Store
    valid: ValidationSet
    precision: str = "fp32"          # of the forward passes (model/precision.py)
    scaler: Any = None               # fp16's GradScaler, saved in last.pt
    ema: WeightAverage | None = None  # the moving average of the weights (training.ema_decay)
    warmup: VocabularyWarmup | None = None  # finetune.warmup_steps

    def after_update(self, step: int) -> None:
        """What follows every update, whichever techniques the config turned on: the moving
        average of the weights, the learning rate's decay, the end of a fine-tuning warm-up."""
        if self.ema is not None:
            self.ema.update(step)
        self.schedule.after_update(step)
        self.warmup.after_update(step)

    @property
    def weights(self) -> Seq2Seq:
        """The model that is validated and saved as the result: the moving average when there is one."""
        return self.model if self.ema is None else self.ema.model

    @property
    def scheduler(self):
        """The plateau schedule's state holder (saved in checkpoints), or None."""
        return self.schedule.plateau


def build_optimizer(model: torch.nn.Module, t: TrainingConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    # One fused kernel per parameter instead of about eight elementwise passes: Adam's
    # arithmetic was about 6 % of a CPU training step (scripts/profile_training.py).
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return cls(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, fused=fused)


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


def check_parent_state(cfg: Config, parent: Parent) -> dict | None:
    """The parent's last.pt when a finetune.reset_* option keeps part of its state (None when all
    reset), after checking that this run can continue it."""
    ft, t, pt = cfg.finetune, cfg.training, parent.config.training
    resets = ("reset_optimizer", "reset_schedule", "reset_step", "reset_early_stopping")
    kept = [k for k in resets if not getattr(ft, k)]
    if not kept:
        return None
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
    return saved


def continue_parent_state(cfg: Config, parent: Parent, model: torch.nn.Module, optimizer, scheduler,
                          progress: Progress) -> None:
    """The parent's optimizer state, schedule, step or best score, where finetune.reset_* keep them."""
    saved = check_parent_state(cfg, parent)
    if saved is None:
        return
    ft, t, pt = cfg.finetune, cfg.training, parent.config.training
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
