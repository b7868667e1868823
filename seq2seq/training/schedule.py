"""The learning rate: the one object that changes it during training. It owns the plateau
schedule (training.scheduler: plateau, stepped after each validation) and the step decay
(training.decay_start / decay_every / decay_factor, after each update). The rate itself lives in
the optimizer's state, so a resumed run goes on from it; the decay multiplies whatever the
plateau schedule made of the rate, so the two compose."""
from __future__ import annotations

import logging

import torch

from seq2seq.config import TrainingConfig
from seq2seq.training import distributed as dist

log = logging.getLogger("seq2seq")


class LearningRate:
    def __init__(self, optimizer: torch.optim.Optimizer, t: TrainingConfig):
        self.optimizer, self.t = optimizer, t
        self.plateau = None  # ReduceLROnPlateau's counters are saved in checkpoints as "scheduler"
        if t.scheduler == "plateau":
            mode = "min" if t.early_stop_metric == "loss" else "max"
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode, factor=t.plateau_factor, patience=t.plateau_patience, min_lr=t.min_lr)

    @property
    def rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def after_update(self, step: int) -> None:
        """training.decay_start: after update `step`, multiply the rate by decay_factor where a decay is due."""
        t = self.t
        if t.decay_start is None or step < t.decay_start or (step - t.decay_start) % t.decay_every:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * t.decay_factor, min(group["lr"], t.min_lr))
        log.info("training.decay_start: learning rate %.2e after update %d", self.rate, step)

    def after_validation(self, score: float | None) -> None:
        """Step the plateau schedule with rank 0's validation `score` (None on other ranks): it is
        broadcast so that every rank's rate follows the same validation."""
        if self.plateau is not None:
            self.plateau.step(dist.broadcast_float(score if dist.is_main() else 0.0))
