"""Training: build everything first, then one short loop (step, validate, checkpoint, stop)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from . import distributed as dist
from .checkpoint import load_checkpoint, save_checkpoint, unwrap
from .config import Config, config_from_dict, dump_yaml, to_dict
from . import finetune
from .data import DataError, encode_parallel, epoch_batches, iterate_batches, read_parallel, tag_sources, tags_in
from .model import build_model, count_parameters, resolve_device
from .tokenizer import (Tokenizer, kept_files, open_tokenizers, side_lists, tokenizer_files, train_tokenizer,
                        write_kept)
from .update import forward_backward
from .validation import validate

log = logging.getLogger("seq2seq")


MAX_NONFINITE_IN_A_ROW = 5


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what is saved."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped training after `last.pt` was saved."""


# ---------------------------------------------------------------------------------------
# Set-up


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
        handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
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


def load_tokenizers(cfg: Config, run_dir: Path, train_src: list[str], train_tgt: list[str]) -> tuple[Tokenizer, Tokenizer]:
    """The run's tokenizers, trained on the training data the first time (and, with
    tokenizer.drop_unseen, restricted to the pieces each side's training text uses)."""
    d, t = cfg.data, cfg.tokenizer
    src_file, tgt_file = tokenizer_files(run_dir, t.joint, d.src_lang, d.tgt_lang)
    options = dict(vocab_size=t.vocab_size, model_type=t.model_type, character_coverage=t.character_coverage)
    tags = tags_in(train_src) if d.src_prefix_tag else []
    # Fine-tuning with vocabulary keep has copied the parent's lists (or its lack of them).
    keeps_parent = cfg.init_from is not None and cfg.finetune.vocabulary == "keep"
    if dist.is_main():
        if t.joint and not src_file.exists():
            train_tokenizer(train_src + train_tgt, src_file, user_defined_symbols=tags, **options)
        if not t.joint:
            if not src_file.exists():
                train_tokenizer(train_src, src_file, user_defined_symbols=tags, **options)
            if not tgt_file.exists():
                train_tokenizer(train_tgt, tgt_file, **options)
        src_kept, tgt_kept = kept_files(run_dir)
        if t.drop_unseen and not keeps_parent and not tgt_kept.exists():
            src_list, tgt_list = side_lists(Tokenizer(src_file), Tokenizer(tgt_file), train_src, train_tgt,
                                            shared=cfg.model.share_embeddings)
            write_kept(src_kept, src_list)
            write_kept(tgt_kept, tgt_list)
            log.info("tokenizer.drop_unseen: keeping %d source / %d target pieces seen in the training data",
                     len(src_list), len(tgt_list))
    dist.barrier()
    return open_tokenizers(run_dir, t.joint, d.src_lang, d.tgt_lang)


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


# ---------------------------------------------------------------------------------------
# Progress that survives a restart


@dataclass
class Progress:
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


# ---------------------------------------------------------------------------------------
# The run


def checkpoint_payload(model, optimizer, scheduler, progress: Progress, cfg: Config, *, full: bool) -> dict:
    payload = {"config": to_dict(cfg), "model": unwrap(model).state_dict(), "step": progress.step,
               "epoch": progress.epoch, "best_score": progress.best_score}
    if full:
        payload.update({
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "progress": vars(progress).copy(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        })
    return payload


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False, quiet: bool = False,
          on_step: Callable[[int, float, Sequence[Any]], None] | None = None) -> dict[str, Any]:
    """Train a model as `cfg` describes, writing everything into `run_dir`. Returns the best
    validation figures. With `resume`, continue exactly where `run_dir/last.pt` stopped.
    `on_step(step, seconds, batches)`, if given, is called after every update with its wall time
    and the batches it consumed (for benchmarks)."""
    run_dir = Path(run_dir)
    dist.init()
    resume_state = None
    if resume:
        last = run_dir / "last.pt"
        if not last.exists():
            raise TrainingError(f"{run_dir}: nothing to resume (no last.pt)")
        resume_state = load_checkpoint(last)
        stored = config_from_dict(resume_state["config"])
        # Only the stopping limits may change on resume; everything else comes from the run.
        t = cfg.training
        cfg = replace(stored, training=replace(stored.training, max_epochs=t.max_epochs, max_steps=t.max_steps,
                                               max_minutes=t.max_minutes, patience=t.patience))
    if dist.is_main():
        prepare_run_dir(run_dir)
        setup_logging(run_dir, quiet=quiet)
        (run_dir / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
    else:
        setup_logging(None, quiet=True)
    dist.barrier()

    t, d = cfg.training, cfg.data
    device = dist.device_for_rank(resolve_device(t.device))
    if t.num_threads is not None:
        torch.set_num_threads(t.num_threads)
    torch.manual_seed(t.seed)

    train_src, train_tgt = read_parallel(f"{d.train}.{d.src_lang}", f"{d.train}.{d.tgt_lang}",
                                         skip_invalid_utf8=d.skip_invalid_utf8)
    valid_src, valid_tgt = read_parallel(f"{d.valid}.{d.src_lang}", f"{d.valid}.{d.tgt_lang}",
                                         skip_invalid_utf8=d.skip_invalid_utf8)
    if not any(s.strip() and t.strip() for s, t in zip(train_src, train_tgt)):
        raise DataError(f"{d.train}.{{{d.src_lang},{d.tgt_lang}}}: no non-empty sentence pairs to train on")
    if d.src_prefix_tag:
        train_src, valid_src = tag_sources(train_src, d.tgt_lang), tag_sources(valid_src, d.tgt_lang)
    # A fine-tuned run gets its tokenizers from the parent (copied or transferred) before loading them.
    parent = finetune.prepare(cfg, run_dir, train_src, train_tgt) if cfg.init_from and not resume else None
    src_tok, tgt_tok = load_tokenizers(cfg, run_dir, train_src, train_tgt)
    train_data = encode_parallel(train_src, train_tgt, src_tok, tgt_tok, max_src_len=d.max_src_len,
                                 max_tgt_len=d.max_tgt_len, name=f"{d.train}.{{{d.src_lang},{d.tgt_lang}}}")
    valid_pairs = encode_parallel(valid_src, valid_tgt, src_tok, tgt_tok, name=f"{d.valid}")
    valid_src_ids = [s[:d.max_src_len] for s in src_tok.encode_batch(valid_src)]
    log.info("data: %d training pairs, %d validation pairs; vocabulary %d source / %d target pieces",
             len(train_data), len(valid_src), len(src_tok), len(tgt_tok))

    model = build_model(cfg.model, src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok)).to(device)
    if parent is not None:
        parent.initialise(model, src_tok, tgt_tok)
    finetune.freeze(model, cfg.finetune.freeze)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    progress = Progress()
    if parent is not None:
        parent.continue_training_state(cfg, model, optimizer, scheduler, progress)
    if resume_state is not None:
        unwrap(model).load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if scheduler is not None and resume_state.get("scheduler"):
            scheduler.load_state_dict(resume_state["scheduler"])
        progress = Progress(**resume_state["progress"])
        torch.set_rng_state(resume_state["rng"]["torch"])
        if torch.cuda.is_available() and resume_state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(resume_state["rng"]["cuda"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", run_dir / "last.pt", progress.step,
                 progress.epoch, progress.batch_in_epoch)
    log.info("model: %s parameters (%s trainable) on %s", f"{count_parameters(model):,}",
             f"{count_parameters(model, trainable_only=True):,}", device)
    train_model = dist.wrap(model)
    if dist.world_size() > 1:
        # Ranks start from identical weights (same seed), but each needs its own dropout masks,
        # or N ranks regularise like one. The step term gives a resumed run fresh streams too.
        torch.manual_seed(t.seed + 1_000_003 * dist.rank() + progress.step)
    writer = None
    if t.tensorboard and dist.is_main():
        from .tensorboard_log import log_scalars, open_writer
        writer = open_writer(run_dir)

    def save(name: str, *, full: bool) -> None:
        if dist.is_main():
            save_checkpoint(run_dir / name, checkpoint_payload(model, optimizer, scheduler, progress, cfg, full=full))

    def save_if_finite() -> str:
        """Save last.pt when the weights are still finite (skipped updates leave them so);
        the name of the newest checkpoint with finite weights, for the error message."""
        if all(torch.isfinite(p).all() for p in model.parameters()):
            save("last.pt", full=True)
            return f"{run_dir / 'last.pt'} (step {progress.step})"
        if progress.best_step is not None:
            return f"{run_dir / 'best.pt'} (step {progress.best_step})"
        return "none (no checkpoint saved yet)"

    def run_validation() -> bool:
        """Validate, checkpoint and decide on early stopping; True means stop."""
        stop = False
        progress.last_valid_step = progress.step
        if dist.is_main():
            result = validate(model, cfg, valid_pairs, valid_src_ids, valid_tgt, tgt_tok, device)
            score = result[t.early_stop_metric if t.early_stop_metric != "loss" else "valid_loss"]
            # At an epoch's end the counter already points at the next epoch; the record
            # names the epoch the validated weights finished.
            epoch = progress.epoch - 1 if progress.batch_in_epoch == 0 else progress.epoch
            record = {"step": progress.step, "epoch": epoch, "elapsed": round(progress.elapsed, 1),
                      "lr": optimizer.param_groups[0]["lr"], "train_loss": window_loss(),
                      **{k: v for k, v in result.items() if k != "hypotheses"}}
            finite = all(torch.isfinite(p).all() for p in model.parameters())
            if not finite:
                log.warning("step %d: weights are not finite; this model is never saved as best", progress.step)
            if finite and progress.improved(score, t.early_stop_metric):
                progress.best_score, progress.best_step, progress.bad_validations = score, progress.step, 0
                save("best.pt", full=False)
                (run_dir / "valid.best.hyp").write_text("\n".join(result["hypotheses"]) + "\n", encoding="utf-8")
                keep_best_checkpoint(score)
                record["best"] = True
            else:
                progress.bad_validations += 1
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if writer is not None:
                log_scalars(writer, record, progress.step, "valid")
            log.info("validation at step %d: loss %.3f, ppl %.2f, BLEU %.2f, chrF %.2f%s", progress.step,
                     result["valid_loss"], result["valid_ppl"], result["bleu"], result["chrf"],
                     " (new best)" if record.get("best") else f" (best {progress.best_score:.2f} at step "
                     f"{progress.best_step}, {progress.bad_validations} without improvement)")
            stop = t.patience is not None and progress.bad_validations >= t.patience
            if stop:
                log.info("early stopping: %d validations without improvement", progress.bad_validations)
        if scheduler is not None:
            # The score is broadcast so every rank's learning rate follows rank 0's validation.
            scheduler.step(dist.broadcast_float(score if dist.is_main() else 0.0))
        if dist.is_main():
            save("last.pt", full=True)
        return dist.any_rank(stop)

    def keep_best_checkpoint(score: float) -> None:
        if t.keep_best == 0:
            return
        name = f"best.step{progress.step}.pt"
        (run_dir / name).unlink(missing_ok=True)
        os.link(run_dir / "best.pt", run_dir / name)  # same bytes, no second write
        progress.kept.append([score, progress.step, name])
        progress.kept.sort(key=lambda k: k[0], reverse=t.early_stop_metric != "loss")
        for _, _, old in progress.kept[t.keep_best:]:
            (run_dir / old).unlink(missing_ok=True)
        del progress.kept[t.keep_best:]

    window: list[tuple[float, int]] = []

    def window_loss() -> float | None:
        if not window:
            return None
        return sum(l for l, _ in window) / max(sum(n for _, n in window), 1)

    def limits_reached() -> str | None:
        if t.max_steps is not None and progress.step >= t.max_steps:
            return f"reached training.max_steps={t.max_steps}"
        # Ranks' clocks differ; they must agree on stopping, or one waits forever for the other.
        if t.max_minutes is not None and dist.any_rank(progress.elapsed >= 60 * t.max_minutes):
            return f"reached training.max_minutes={t.max_minutes}"
        return None

    model.train()
    show_bar = not quiet and sys.stderr.isatty() and dist.is_main()
    stop_reason = None
    clock = time.perf_counter()
    with StopFlag() as stop_flag:
        while progress.epoch <= t.max_epochs and stop_reason is None:
            batches = epoch_batches(train_data, batch_tokens=t.batch_tokens, batch_size=t.batch_size,
                                    seed=t.seed, epoch=progress.epoch, rank=dist.rank(), world_size=dist.world_size())
            bar = tqdm(total=len(batches), initial=progress.batch_in_epoch, disable=not show_bar, leave=False,
                       desc=f"epoch {progress.epoch}", unit="batch", dynamic_ncols=True)
            pending = 0
            tokens_seen, window_start = 0, time.perf_counter()
            step_batches = []
            for batch in iterate_batches(train_data, batches, progress.batch_in_epoch):
                if on_step is not None:
                    step_batches.append(batch)
                batch = batch.to(device)
                ntok = batch.num_tgt_tokens
                denominator = ntok if t.loss_normalization == "tokens" else batch.src.size(0)
                # Under DDP only the last batch of an update needs its gradients averaged across
                # ranks; the others just add to the local ones.
                syncs = pending + 1 >= t.accum_steps or progress.batch_in_epoch + 1 >= len(batches)
                with nullcontext() if syncs or train_model is model else train_model.no_sync():
                    loss_sum, skipped = forward_backward(train_model, batch,
                                                         denominator=denominator * t.accum_steps,
                                                         label_smoothing=t.label_smoothing)
                progress.oom_skipped += skipped
                window.append((loss_sum, ntok))
                tokens_seen += ntok
                progress.batch_in_epoch += 1
                pending += 1
                bar.update(1)
                if pending < t.accum_steps and progress.batch_in_epoch < len(batches):
                    continue
                pending = 0
                # The gradient norm is the same on every rank (gradients are averaged), so all
                # ranks agree on skipping an update whose loss or gradients are not finite.
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm or float("inf"))
                if not torch.isfinite(norm):
                    optimizer.zero_grad(set_to_none=True)
                    progress.nonfinite_in_a_row += 1
                    log.warning("step %d: loss or gradients not finite; update skipped", progress.step + 1)
                    if progress.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                        raise TrainingError(
                            f"step {progress.step + 1}: {progress.nonfinite_in_a_row} updates in a row had "
                            f"non-finite loss or gradients; stopping. Last good checkpoint: {save_if_finite()}")
                    continue
                progress.nonfinite_in_a_row = 0
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                progress.step += 1
                now = time.perf_counter()
                progress.elapsed += now - clock
                if on_step is not None:
                    on_step(progress.step, now - clock, step_batches)
                    step_batches = []
                clock = now
                if progress.step % t.log_every == 0:
                    rate = tokens_seen * dist.world_size() / max(now - window_start, 1e-9)
                    log.info("step %d epoch %d: loss %.3f, lr %.2e, %.0f target tok/s, %.1f min", progress.step,
                             progress.epoch, window_loss(), optimizer.param_groups[0]["lr"], rate,
                             progress.elapsed / 60)
                    bar.set_postfix(loss=f"{window_loss():.3f}", tok_s=f"{rate:.0f}",
                                   next_valid=f"{t.valid_every - progress.step % t.valid_every} steps")
                    if writer is not None:
                        log_scalars(writer, {"loss": window_loss(), "lr": optimizer.param_groups[0]["lr"],
                                             "tokens_per_second": rate}, progress.step, "train")
                    window.clear()
                    tokens_seen, window_start = 0, now
                stop_reason = limits_reached()
                if stop_reason is None and progress.step % t.valid_every == 0:
                    if run_validation():
                        stop_reason = "early stopping"
                    clock = time.perf_counter()  # validation time does not count as training time
                if stop_reason is None and dist.any_rank(stop_flag.signal_name is not None):
                    save("last.pt", full=True)
                    bar.close()
                    message = (f"stopped by {stop_flag.signal_name} at step {progress.step}; saved "
                               f"{run_dir / 'last.pt'}; resume with: seq2seq train --run-dir {run_dir} --resume")
                    log.info("%s", message)
                    raise Interrupted(message)
                if stop_reason is not None:
                    break
            bar.close()
            if stop_reason is None:
                progress.epoch += 1
                progress.batch_in_epoch = 0
                # An epoch that ends on a valid_every step was just validated: once is enough
                # (a repeat would count as a validation without improvement).
                if t.valid_at_epoch_end and progress.last_valid_step != progress.step and run_validation():
                    stop_reason = "early stopping"
                clock = time.perf_counter()
        if stop_reason is None:
            stop_reason = f"reached training.max_epochs={t.max_epochs}"
        if progress.last_valid_step != progress.step:
            run_validation()
    if writer is not None:
        writer.close()
    if progress.oom_skipped:
        log.warning("%d training pairs were skipped because even alone they did not fit in memory",
                    progress.oom_skipped)
    if os.environ.get("SEQ2SEQ_DEBUG_RANK_DUMP"):
        # Lets tests check that DDP ranks ended with identical weights.
        save_checkpoint(run_dir / f"final.rank{dist.rank()}.pt",
                        {**checkpoint_payload(model, optimizer, scheduler, progress, cfg, full=False),
                         "rng": {"torch": torch.get_rng_state()}})
    log.info("training finished (%s) after %d steps, %.1f minutes; best %s %.2f at step %s", stop_reason,
             progress.step, progress.elapsed / 60, t.early_stop_metric,
             float("nan") if progress.best_score is None else progress.best_score, progress.best_step)
    return {"step": progress.step, "best_score": progress.best_score, "best_step": progress.best_step,
            "elapsed": progress.elapsed, "stop_reason": stop_reason}
