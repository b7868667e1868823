"""The training loop: `begin` (begin.py) builds everything first; `fit` then reads top to
bottom: take the next group of batches (or the end of an epoch), update, and ask `Cadence`
whether to log, validate, save or stop."""
from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Any, Iterator

import torch

from seq2seq.config import TrainingConfig
from seq2seq.data import epoch_batches, groups, iterate_batches
from seq2seq.data.batches import Prefetcher
from seq2seq.data.sampling import epoch_pool
from seq2seq.errors import Interrupted, TrainingError  # noqa: F401  (re-exported: the trainer's errors)
from seq2seq.training import distributed as dist
from seq2seq.training.begin import begin
from seq2seq.training.checkpoints import (end_of_run, interrupt, save_between_validations, stop_nonfinite,
                                          validate_and_save)
from seq2seq.training.log import ProgressBar, TrainLog
from seq2seq.training.machine import CoreShare
from seq2seq.training.state import Progress, Session
from seq2seq.training.update import update

log = logging.getLogger("seq2seq")

EPOCH_END = None  # what `batch_groups` yields between epochs


def train(cfg, run_dir, *, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train a model as `cfg` describes, writing everything into `run_dir`. Returns the best
    validation figures. With `resume`, continue exactly where `run_dir/last.pt` stopped."""
    return fit(begin(cfg, run_dir, resume=resume, quiet=quiet), quiet=quiet)


def fit(s: Session, *, quiet: bool = False) -> dict[str, Any]:
    """The training loop over a begun run, until a limit, early stopping or a signal."""
    t, p = s.cfg.training, s.progress
    bar = ProgressBar(enabled=not quiet and sys.stderr.isatty() and dist.is_main())
    cores = CoreShare(torch.get_num_threads()) if s.device.type == "cpu" else None
    logger = TrainLog(t, p, s.run, on_nonfinite=lambda step: stop_nonfinite(s, step), bar=bar, cores=cores)
    when, stop = Cadence(t, p), None
    with StopFlag() as signals:
        for group in batch_groups(s, bar):
            epoch_end = group is EPOCH_END
            if not epoch_end:
                result = update(s.train_model, s.optimizer, [b.to(s.device) for b in group], clip_norm=t.clip_norm,
                                label_smoothing=t.label_smoothing, loss_normalization=t.loss_normalization,
                                accum_steps=t.accum_steps, precision=s.precision, scaler=s.scaler,
                                hold=s.warmup.held(p.step))
                p.batch_in_epoch += len(group)
                p.oom_skipped += result.skipped_pairs
                # A skipped update (non-finite, or an fp16 overflow) counts as a step too: whether it
                # was skipped is known on the device only, and read at the next log line.
                logger.add(result)
                p.step += 1
                s.after_update(p.step)  # the moving average, the rate's decay, ...
                when.tick()
            if not epoch_end and when.log_due():
                logger.write(s.schedule.rate)
            stop = None if epoch_end else when.limit_reached()
            if stop is None and when.validate_due(epoch_end=epoch_end):
                stop = validate_and_save(s, logger)
                when.paused()  # validation is not training time
            elif stop is None and not epoch_end and when.save_due():
                save_between_validations(s, logger, when.saved_at)
                when.paused()  # nor is writing a checkpoint
            if epoch_end:  # a new epoch: a new window for tok/s, and the clock restarts
                logger.start_epoch()
                when.restart()
            if stop is None and dist.any_rank(signals.signal_name is not None):
                bar.close()
                interrupt(s, logger, signals.signal_name)
            if stop is not None:
                break
        else:
            stop = f"reached training.max_epochs={t.max_epochs}"
        bar.close()
        if p.last_valid_step != p.step:
            validate_and_save(s, logger)
        logger.settle()
    return finish(s, logger, stop)


def batch_groups(s: Session, bar: ProgressBar) -> Iterator[list | None]:
    """The groups of training.accum_steps batches that make one update each, epoch after epoch
    from where the run stands, with EPOCH_END after each epoch's last group."""
    t, p = s.cfg.training, s.progress
    while p.epoch <= t.max_epochs:
        data = s.train_data.for_epoch(p.epoch)  # with tokenizer.sampling, this epoch's segmentation
        batches = epoch_batches(data, batch_tokens=t.batch_tokens, batch_size=t.batch_size, seed=t.seed,
                                epoch=p.epoch, rank=dist.rank(), world_size=dist.world_size(),
                                pool=drawn_pairs(s))
        bar.start(p.epoch, len(batches), p.batch_in_epoch)
        # The next batches are built in a background thread while the current update runs.
        updates = groups(iterate_batches(data, batches, p.batch_in_epoch), t.accum_steps)
        with prefetch(updates, pin=s.device.type == "cuda") as stream:
            for group in stream:
                yield group
                bar.advance(len(group))
        bar.close()
        p.epoch += 1
        p.batch_in_epoch = 0
        yield EPOCH_END


def finish(s: Session, logger: TrainLog, stop: str) -> dict[str, Any]:
    """After the loop: what the checkpoint policy does at the end, the closing lines, the figures to return."""
    t, p = s.cfg.training, s.progress
    end_of_run(s)
    logger.close()
    if p.oom_skipped:
        log.warning("%d training pairs were skipped because even alone they did not fit in memory", p.oom_skipped)
    log.info("training finished (%s) after %d steps, %.1f minutes; best %s %.2f at step %s", stop,
             p.step, p.elapsed / 60, t.early_stop_metric, float("nan") if p.best_score is None else p.best_score,
             p.best_step)
    return {"step": p.step, "best_score": p.best_score, "best_step": p.best_step, "elapsed": p.elapsed,
            "stop_reason": stop}


class Cadence:
    """When to log, validate, save last.pt or stop, asked by the loop after every update. It
    also keeps the training clock: validations and saves are not training time."""

    def __init__(self, t: TrainingConfig, p: Progress):
        self.t, self.p = t, p
        self.clock = time.perf_counter()
        self.saved_at = p.elapsed  # training time when last.pt was last written (a resumed run starts from it)

    def tick(self) -> None:
        now = time.perf_counter()
        self.p.elapsed += now - self.clock
        self.clock = now

    def restart(self) -> None:
        """Between epochs: planning the next one's batches is not training time."""
        self.clock = time.perf_counter()

    def paused(self) -> None:
        """The loop validated or saved, which writes last.pt: the time since the last update is
        not training time."""
        self.saved_at = self.p.elapsed
        self.clock = time.perf_counter()

    def log_due(self) -> bool:
        return self.p.step % self.t.log_every == 0

    def validate_due(self, *, epoch_end: bool) -> bool:
        if epoch_end:
            # An epoch that ends on a valid_every step was just validated: once is enough
            # (a repeat would count as a validation without improvement).
            return self.t.valid_at_epoch_end and self.p.last_valid_step != self.p.step
        return self.p.step % self.t.valid_every == 0

    def limit_reached(self) -> str | None:
        t, p = self.t, self.p
        if t.max_steps is not None and p.step >= t.max_steps:
            return f"reached training.max_steps={t.max_steps}"
        # Ranks' clocks differ; they must agree on stopping, or one waits forever for the other.
        if t.max_minutes is not None and dist.any_rank(p.elapsed >= 60 * t.max_minutes):
            return f"reached training.max_minutes={t.max_minutes}"
        return None

    def save_due(self) -> bool:
        """last.pt between validations: every training.save_every_steps updates, or
        training.save_every_minutes of training time after it was last written."""
        t, p = self.t, self.p
        if t.save_every_steps is not None and p.step % t.save_every_steps == 0:
            return True  # the same on every rank, so all ranks skip the collective below together
        # Ranks' clocks differ; only rank 0 writes, but every rank resets its clock after a save.
        return t.save_every_minutes is not None and dist.any_rank(p.elapsed - self.saved_at >= 60 * t.save_every_minutes)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between updates, so a stop never tears a step."""

    def __init__(self):
        self.signal_name: str | None = None  # the signal's name
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def prefetch(items, *, pin: bool) -> Prefetcher:
    """`items` built ahead in a background thread (in page-locked memory for a GPU when `pin`)."""
    return Prefetcher(items, pin=pin)


def drawn_pairs(s: Session):
    """With several weighted corpora, the pairs this epoch draws from each (logged); None with one."""
    corpus_list = s.cfg.data.train
    pool = epoch_pool(s.train_data, [c.weight for c in corpus_list], seed=s.cfg.training.seed, epoch=s.progress.epoch)
    if pool is not None and s.progress.batch_in_epoch == 0:
        counts = [int(((pool >= a) & (pool < b)).sum()) for a, b in s.train_data.corpus_ranges()]
        log.info("epoch %d draws %s", s.progress.epoch, ", ".join(
            f"{n:,} pairs ({100 * n / len(pool):.1f} %) from {c.path}" for n, c in zip(counts, corpus_list)))
    return pool
