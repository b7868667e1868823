"""What a training run tells its user: the console and train.log (`setup_logging`), the
progress bar, and the training lines of train.log, train.jsonl and TensorBoard (`TrainLog`)."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from seq2seq.config import TrainingConfig
from seq2seq.run.rundir import RunDir
from seq2seq.training import distributed as dist
from seq2seq.training.machine import CoreShare
from seq2seq.training.update import UpdateResult

log = logging.getLogger("seq2seq")

MAX_NONFINITE_IN_A_ROW = 5


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


class ProgressBar:
    """One tqdm bar per epoch, on a terminal only."""

    def __init__(self, *, enabled: bool):
        self.enabled, self.bar = enabled, None

    def start(self, epoch: int, total: int, done: int) -> None:
        self.bar = tqdm(total=total, initial=done, disable=not self.enabled, leave=False, desc=f"epoch {epoch}",
                        unit="batch", dynamic_ncols=True)

    def advance(self, batches: int) -> None:
        self.bar.update(batches)

    def show(self, **figures) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**figures)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TrainLog:
    """The training lines of train.log and train.jsonl (rank 0), TensorBoard, and the progress bar.

    Updates leave their loss and whether they were skipped on the device; `settle` reads all of
    it in one copy, and is called only at log lines, validations and saves, so that the host
    never waits for the device between them."""

    def __init__(self, t: TrainingConfig, progress, run: RunDir | None, *,
                 on_nonfinite: Callable[[int], None] | None = None, bar: ProgressBar | None = None,
                 cores: CoreShare | None = None):
        self.t, self.progress, self.run, self.bar = t, progress, run, bar
        self.cores = cores                     # a CPU run's check that its threads get their cores
        self.on_nonfinite = on_nonfinite      # called with the step of the last of too many non-finite updates
        self.sums: torch.Tensor | None = None  # (2,) float64 on the device: loss and tokens of applied updates
        self.flags: list[torch.Tensor] = []    # per update since the last settle: 0 applied, 1 skipped, 2 overflow
        self.updates = 0                       # updates in this log window
        self.loss, self.loss_tokens, self.skipped = 0.0, 0, 0  # of the window's settled updates
        self.writer = None
        if t.tensorboard and dist.is_main():
            from seq2seq.training.tensorboard_log import open_writer
            self.writer = open_writer(run.tensorboard)
        self.start_epoch()

    def start_epoch(self) -> None:
        self.tokens, self.start = 0, time.perf_counter()

    def add(self, result: UpdateResult) -> None:
        """Count an update, without reading anything back from the device."""
        applied = ~result.skipped
        # The loss of a skipped update may be NaN: it is left out of the window's loss.
        sums = torch.stack([torch.where(applied, result.loss_sum.double(), 0.0), applied.double() * result.tokens])
        self.sums = sums if self.sums is None else self.sums + sums
        self.flags.append(result.skipped.double() + result.overflow.double())
        self.updates += 1
        self.tokens += result.tokens

    def settle(self) -> None:
        """Read what the updates since the last call left on the device (one copy), warn about
        skipped ones, and stop training after MAX_NONFINITE_IN_A_ROW non-finite ones in a row."""
        if not self.flags:
            return
        values = torch.cat([self.sums, torch.stack(self.flags)]).tolist()
        flags, self.sums, self.flags = values[2:], None, []
        self.loss, self.loss_tokens = self.loss + values[0], self.loss_tokens + int(values[1])
        p = self.progress
        first, stop_at = p.step - len(flags) + 1, None
        for step, flag in enumerate(flags, start=first):
            if flag == 0:
                p.nonfinite_in_a_row = 0
                continue
            self.skipped += 1
            if flag == 2:  # fp16: the loss scale was too high for these gradients and is now lower
                continue
            p.nonfinite_in_a_row += 1
            log.warning("step %d: loss or gradients not finite; update skipped", step)
            if p.nonfinite_in_a_row == MAX_NONFINITE_IN_A_ROW and stop_at is None:
                stop_at = step
        if stop_at is not None and self.on_nonfinite is not None:
            self.on_nonfinite(stop_at)

    def window_loss(self) -> float | None:
        """The mean loss per target token of the applied updates since the last log line (call settle first)."""
        if not self.updates:
            return None
        return self.loss / self.loss_tokens if self.loss_tokens else float("nan")

    def write(self, lr: float) -> None:
        """One training line: the window's loss, the rate `lr`, target tokens per second."""
        self.settle()
        p, t = self.progress, self.t
        now = time.perf_counter()
        rate = self.tokens * dist.world_size() / max(now - self.start, 1e-9)
        loss = self.window_loss()
        log.info("step %d epoch %d: loss %.3f, lr %.2e, %.0f target tok/s, %.1f min%s", p.step, p.epoch, loss, lr,
                 rate, p.elapsed / 60, f"; {self.skipped} updates skipped" if self.skipped else "")
        if self.cores is not None:
            self.cores.check(p.step)
        if self.bar is not None:
            self.bar.show(loss=f"{loss:.3f}", tok_s=f"{rate:.0f}",
                          next_valid=f"{t.valid_every - p.step % t.valid_every} steps")
        if dist.is_main():
            record = {"step": p.step, "epoch": p.epoch, "loss": loss, "lr": lr, "tokens_per_second": rate,
                      "skipped_updates": self.skipped, "elapsed": round(p.elapsed, 1), "time": round(time.time(), 3)}
            with open(self.run.train_records, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.scalars({"loss": loss, "lr": lr, "tokens_per_second": rate}, "train")
        self.updates, self.loss, self.loss_tokens, self.skipped = 0, 0.0, 0, 0
        self.tokens, self.start = 0, now

    def scalars(self, figures: dict, group: str) -> None:
        """TensorBoard, when training.tensorboard is on."""
        if self.writer is not None:
            from seq2seq.training.tensorboard_log import log_scalars
            log_scalars(self.writer, figures, self.progress.step, group)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
