"""Training: `begin` (start.py) builds everything first, then one short loop: update, log,
validate, checkpoint, stop."""
from __future__ import annotations

import copy
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import distributed as dist
from .average import average_checkpoints
from .checkpoint import save_checkpoint, training_payload, weights_payload
from .config import Config, to_dict
from .data import epoch_batches, groups, iterate_batches
from .data.batches import Prefetcher
from .data.sampling import epoch_pool
from .errors import Interrupted, TrainingError  # noqa: F401  (re-exported: the trainer's errors)
from .start import Session, begin, decay_rate
from .transfer import warmup_held
from .update import UpdateResult, update
from .validation import validate

log = logging.getLogger("seq2seq")

MAX_NONFINITE_IN_A_ROW = 5


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between updates, so a stop never tears a step."""

    def __init__(self):
        self.signal_name: str | None = None
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


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train a model as `cfg` describes, writing everything into `run_dir`. Returns the best
    validation figures. With `resume`, continue exactly where `run_dir/last.pt` stopped."""
    return fit(begin(cfg, run_dir, resume=resume, quiet=quiet), quiet=quiet)


def fit(s: Session, *, quiet: bool = False) -> dict[str, Any]:
    """The training loop over a begun run, until a limit, early stopping or a signal."""
    t, p = s.cfg.training, s.progress
    logger = TrainLog(s)
    show_bar = not quiet and sys.stderr.isatty() and dist.is_main()
    stop_reason = None
    clock = time.perf_counter()
    saved_at = p.elapsed  # training time when last.pt was last written (a resumed run starts from it)
    warmup = s.cfg.finetune.warmup_steps
    held = warmup_held(s.model) if p.step < warmup else []
    if held:
        log.info("finetune.warmup_steps: updates %d-%d train only the embeddings and output layer (%s parameters "
                 "held still)", p.step + 1, warmup, f"{sum(x.numel() for x in held):,}")
    with StopFlag() as stop_flag:
        while p.epoch <= t.max_epochs and stop_reason is None:
            data = s.train_data.for_epoch(p.epoch)  # with tokenizer.sampling, this epoch's segmentation
            batches = epoch_batches(data, batch_tokens=t.batch_tokens, batch_size=t.batch_size, seed=t.seed,
                                    epoch=p.epoch, rank=dist.rank(), world_size=dist.world_size(),
                                    pool=drawn_pairs(s))
            bar = tqdm(total=len(batches), initial=p.batch_in_epoch, disable=not show_bar, leave=False,
                       desc=f"epoch {p.epoch}", unit="batch", dynamic_ncols=True)
            logger.start_epoch()
            # The next batches are built in a background thread while the current update runs.
            updates = groups(iterate_batches(data, batches, p.batch_in_epoch), t.accum_steps)
            with prefetch(updates, pin=s.device.type == "cuda") as stream:
                for group in stream:
                    result = update(s.train_model, s.optimizer, [b.to(s.device) for b in group],
                                    clip_norm=t.clip_norm, label_smoothing=t.label_smoothing,
                                    loss_normalization=t.loss_normalization, accum_steps=t.accum_steps,
                                    precision=s.precision, scaler=s.scaler, hold=held if p.step < warmup else ())
                    p.batch_in_epoch += len(group)
                    p.oom_skipped += result.skipped_pairs
                    bar.update(len(group))
                    # A skipped update (non-finite, or an fp16 overflow) counts as a step too: whether it
                    # was skipped is known on the device only, and read at the next log line.
                    logger.add(result)
                    p.step += 1
                    if s.ema is not None:
                        s.ema.update(p.step)
                    decay_rate(s.optimizer, s.cfg, p.step)
                    if p.step == warmup:
                        log.info("finetune.warmup_steps: warm-up over after %d updates; all trainable weights "
                                 "train now", warmup)
                    now = time.perf_counter()
                    p.elapsed += now - clock
                    clock = now
                    if p.step % t.log_every == 0:
                        logger.write(bar)
                    stop_reason = limits_reached(s)
                    if stop_reason is None and p.step % t.valid_every == 0:
                        if validate_and_save(s, logger):
                            stop_reason = "early stopping"
                        saved_at, clock = p.elapsed, time.perf_counter()  # validation is not training time
                    elif stop_reason is None and save_due(s, saved_at):
                        logger.settle()
                        save_between_validations(s, saved_at)
                        saved_at, clock = p.elapsed, time.perf_counter()  # nor is writing a checkpoint
                    if stop_reason is None and dist.any_rank(stop_flag.signal_name is not None):
                        bar.close()
                        logger.settle()
                        interrupt(s, stop_flag.signal_name)
                    if stop_reason is not None:
                        break
            bar.close()
            if stop_reason is None:
                p.epoch += 1
                p.batch_in_epoch = 0
                # An epoch that ends on a valid_every step was just validated: once is enough
                # (a repeat would count as a validation without improvement).
                if t.valid_at_epoch_end and p.last_valid_step != p.step:
                    if validate_and_save(s, logger):
                        stop_reason = "early stopping"
                    saved_at = p.elapsed
                clock = time.perf_counter()
        if stop_reason is None:
            stop_reason = f"reached training.max_epochs={t.max_epochs}"
        if p.last_valid_step != p.step:
            validate_and_save(s, logger)
        logger.settle()
    if t.average_checkpoints and dist.is_main():
        average_best(s)
    logger.close()
    if p.oom_skipped:
        log.warning("%d training pairs were skipped because even alone they did not fit in memory", p.oom_skipped)
    log.info("training finished (%s) after %d steps, %.1f minutes; best %s %.2f at step %s", stop_reason,
             p.step, p.elapsed / 60, t.early_stop_metric, float("nan") if p.best_score is None else p.best_score,
             p.best_step)
    return {"step": p.step, "best_score": p.best_score, "best_step": p.best_step, "elapsed": p.elapsed,
            "stop_reason": stop_reason}


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


# ---------------------------------------------------------------------------------------
# What the loop calls


class TrainLog:
    """The training lines of train.log and train.jsonl (rank 0), TensorBoard, and the progress bar.

    Updates leave their loss and whether they were skipped on the device; `settle` reads all of
    it in one copy, and is called only at log lines, validations and saves, so that the host
    never waits for the device between them."""

    def __init__(self, s: Session):
        self.s = s
        self.sums: torch.Tensor | None = None  # (2,) float64 on the device: loss and tokens of applied updates
        self.flags: list[torch.Tensor] = []    # per update since the last settle: 0 applied, 1 skipped, 2 overflow
        self.updates = 0                       # updates in this log window
        self.loss, self.loss_tokens, self.skipped = 0.0, 0, 0  # of the window's settled updates
        self.writer = None
        if s.cfg.training.tensorboard and dist.is_main():
            from .tensorboard_log import open_writer
            self.writer = open_writer(s.run.tensorboard)

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
        p = self.s.progress
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
        if stop_at is not None:
            stop_nonfinite(self.s, stop_at)

    def window_loss(self) -> float | None:
        """The mean loss per target token of the applied updates since the last log line (call settle first)."""
        if not self.updates:
            return None
        return self.loss / self.loss_tokens if self.loss_tokens else float("nan")

    def write(self, bar) -> None:
        self.settle()
        s, p, t = self.s, self.s.progress, self.s.cfg.training
        now = time.perf_counter()
        rate = self.tokens * dist.world_size() / max(now - self.start, 1e-9)
        lr, loss = s.optimizer.param_groups[0]["lr"], self.window_loss()
        log.info("step %d epoch %d: loss %.3f, lr %.2e, %.0f target tok/s, %.1f min%s", p.step, p.epoch, loss, lr,
                 rate, p.elapsed / 60, f"; {self.skipped} updates skipped" if self.skipped else "")
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:.0f}",
                        next_valid=f"{t.valid_every - p.step % t.valid_every} steps")
        if dist.is_main():
            record = {"step": p.step, "epoch": p.epoch, "loss": loss, "lr": lr, "tokens_per_second": rate,
                      "skipped_updates": self.skipped, "elapsed": round(p.elapsed, 1), "time": round(time.time(), 3)}
            with open(s.run.train_records, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            from .tensorboard_log import log_scalars
            log_scalars(self.writer, {"loss": loss, "lr": lr, "tokens_per_second": rate}, p.step, "train")
        self.updates, self.loss, self.loss_tokens, self.skipped = 0, 0.0, 0, 0
        self.tokens, self.start = 0, now

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def save(s: Session, path: Path, *, full: bool) -> None:
    """A checkpoint from rank 0: the weights, and with `full` everything --resume needs."""
    if not dist.is_main():
        return
    p, config = s.progress, to_dict(s.cfg)
    if full:
        payload = training_payload(s.weights, config, progress=vars(p), optimizer=s.optimizer, scheduler=s.scheduler,
                                   scaler=s.scaler, raw_model=None if s.ema is None else s.model)
    else:
        payload = weights_payload(s.weights, config, step=p.step, epoch=p.epoch, best_score=p.best_score)
    save_checkpoint(path, payload)


def weights_finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def stop_nonfinite(s: Session, step: int) -> None:
    """MAX_NONFINITE_IN_A_ROW updates in a row, the last at `step`, had non-finite loss or
    gradients: save what is good and stop."""
    p = s.progress
    # Skipped updates leave the weights as they were, so last.pt is saved when they are finite.
    if weights_finite(s.model):
        save(s, s.run.last, full=True)
        good = f"{s.run.last} (step {p.step})"
    elif p.best_step is not None:
        good = f"{s.run.best} (step {p.best_step})"
    else:
        good = "none (no checkpoint saved yet)"
    raise TrainingError(f"step {step}: {MAX_NONFINITE_IN_A_ROW} updates in a row had non-finite loss or "
                        f"gradients; stopping. Last good checkpoint: {good}")


def limits_reached(s: Session) -> str | None:
    t, p = s.cfg.training, s.progress
    if t.max_steps is not None and p.step >= t.max_steps:
        return f"reached training.max_steps={t.max_steps}"
    # Ranks' clocks differ; they must agree on stopping, or one waits forever for the other.
    if t.max_minutes is not None and dist.any_rank(p.elapsed >= 60 * t.max_minutes):
        return f"reached training.max_minutes={t.max_minutes}"
    return None


def save_due(s: Session, saved_at: float) -> bool:
    """Whether last.pt is due between validations: every training.save_every_steps updates, or
    training.save_every_minutes of training time after it was last written (`saved_at`)."""
    t, p = s.cfg.training, s.progress
    if t.save_every_steps is not None and p.step % t.save_every_steps == 0:
        return True  # the same on every rank, so all ranks skip the collective below together
    # Ranks' clocks differ; only rank 0 writes, but every rank resets its clock after a save.
    return t.save_every_minutes is not None and dist.any_rank(p.elapsed - saved_at >= 60 * t.save_every_minutes)


def save_between_validations(s: Session, saved_at: float) -> None:
    """last.pt as a validation or a signal would write it, so a kill -9 or an out-of-memory
    kill loses little; it reads state (RNG included) without changing it, so resuming is exact."""
    save(s, s.run.last, full=True)
    log.info("step %d: saved %s (%.1f minutes of training since the previous save)", s.progress.step, s.run.last,
             (s.progress.elapsed - saved_at) / 60)


def interrupt(s: Session, signal_name: str) -> None:
    save(s, s.run.last, full=True)
    message = (f"stopped by {signal_name} at step {s.progress.step}; saved {s.run.last}; resume with: "
               f"seq2seq train --run-dir {s.run} --resume")
    log.info("%s", message)
    raise Interrupted(message)


def validate_and_save(s: Session, logger: TrainLog) -> bool:
    """Validate (rank 0), record the figures, save best.pt when they improved and last.pt
    always, and step the plateau schedule on every rank. True means stop (early stopping)."""
    t, p = s.cfg.training, s.progress
    logger.settle()
    p.last_valid_step = p.step
    stop = False
    if dist.is_main():
        result = validate(s.weights, s.valid, s.cfg.decoding, s.tgt_tok, s.device)
        score = result[t.early_stop_metric if t.early_stop_metric != "loss" else "valid_loss"]
        # At an epoch's end the counter already points at the next epoch; the record names the
        # epoch the validated weights finished.
        epoch = p.epoch - 1 if p.batch_in_epoch == 0 else p.epoch
        record = {"step": p.step, "epoch": epoch, "elapsed": round(p.elapsed, 1),
                  "lr": s.optimizer.param_groups[0]["lr"], "train_loss": logger.window_loss(),
                  **{k: v for k, v in result.items() if k != "hypotheses"}}
        finite = weights_finite(s.weights)
        if not finite:
            log.warning("step %d: weights are not finite; this model is never saved as best", p.step)
        if finite and p.improved(score, t.early_stop_metric):
            p.best_score, p.best_step, p.bad_validations = score, p.step, 0
            save(s, s.run.best, full=False)
            s.run.valid_hypotheses.write_text("\n".join(result["hypotheses"]) + "\n", encoding="utf-8")
            keep_best_checkpoint(s, score)
            record["best"] = True
        else:
            p.bad_validations += 1
        with open(s.run.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if logger.writer is not None:
            from .tensorboard_log import log_scalars
            log_scalars(logger.writer, record, p.step, "valid")
        log.info("validation at step %d: loss %.3f, ppl %.2f, BLEU %.2f, chrF %.2f%s", p.step, result["valid_loss"],
                 result["valid_ppl"], result["bleu"], result["chrf"],
                 " (new best)" if record.get("best") else f" (best {p.best_score:.2f} at step {p.best_step}, "
                 f"{p.bad_validations} without improvement)")
        stop = t.patience is not None and p.bad_validations >= t.patience
        if stop:
            log.info("early stopping: %d validations without improvement", p.bad_validations)
    if s.scheduler is not None:
        # The score is broadcast so every rank's learning rate follows rank 0's validation.
        s.scheduler.step(dist.broadcast_float(score if dist.is_main() else 0.0))
    save(s, s.run.last, full=True)
    return dist.any_rank(stop)


def keep_best_checkpoint(s: Session, score: float) -> None:
    """Link best.pt as best.stepN.pt and keep only the training.keep_best best of those."""
    t, p = s.cfg.training, s.progress
    if t.keep_best == 0:
        return
    kept = s.run.kept_checkpoint(p.step)
    kept.unlink(missing_ok=True)
    os.link(s.run.best, kept)  # same bytes, no second write
    p.kept.append([score, p.step, kept.name])
    p.kept.sort(key=lambda k: k[0], reverse=t.early_stop_metric != "loss")
    for _, step, _ in p.kept[t.keep_best:]:
        s.run.kept_checkpoint(step).unlink(missing_ok=True)
    del p.kept[t.keep_best:]


def average_best(s: Session) -> None:
    """training.average_checkpoints: average the K best kept checkpoints into averaged.pt and
    validate it; when it scores at least as well as best.pt, it becomes best.pt (what translate,
    export and a fine-tuning child read by default). The kept best.stepN.pt files are links to
    earlier best.pt files, and best.pt is replaced, never written into, so they stay as they were."""
    t, p = s.cfg.training, s.progress
    kept = sorted(p.kept[:t.average_checkpoints], key=lambda k: k[1])  # the K best, oldest step first
    if len(kept) < 2:
        log.info("training.average_checkpoints: %d checkpoint(s) kept, nothing to average", len(kept))
        return
    payload = average_checkpoints([s.run.kept_checkpoint(step) for _, step, _ in kept])
    save_checkpoint(s.run.averaged, payload)
    model = copy.deepcopy(s.weights)
    model.load_state_dict(payload["model"])
    result = validate(model, s.valid, s.cfg.decoding, s.tgt_tok, s.device)
    metric = t.early_stop_metric
    score = result[metric if metric != "loss" else "valid_loss"]
    gain = p.best_score - score if metric == "loss" else score - p.best_score
    wins = weights_finite(model) and gain >= 0
    names = ", ".join(name for _, _, name in kept)
    if wins:
        save_checkpoint(s.run.best, payload)
        s.run.valid_hypotheses.write_text("\n".join(result["hypotheses"]) + "\n", encoding="utf-8")
    record = {"step": p.step, "epoch": p.epoch - 1 if p.batch_in_epoch == 0 else p.epoch,
              "elapsed": round(p.elapsed, 1), "checkpoint": s.run.averaged.name,
              "averaged_from": payload["averaged_from"],
              **{k: v for k, v in result.items() if k != "hypotheses"}, **({"best": True} if wins else {})}
    with open(s.run.metrics, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    log.info("training.average_checkpoints: the average of %s scores %s %.2f against best.pt's %.2f (%+.2f): %s",
             names, metric, score, p.best_score, gain if metric != "loss" else -gain,
             f"the average won and is now {s.run.best.name}" if wins else f"{s.run.best.name} (step {p.best_step}) "
             f"stays; the average is kept as {s.run.averaged.name}")
