"""When training writes what: validation with best.pt, the kept best checkpoints and last.pt
(`validate_and_save`), last.pt between validations, on a signal or before stopping on
non-finite updates, and training.average_checkpoints' average at the end of a run."""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import torch

from seq2seq.config import to_dict
from seq2seq.errors import Interrupted, TrainingError
from seq2seq.run.average import average_checkpoints
from seq2seq.run.checkpoint import save_checkpoint, training_payload, weights_payload
from seq2seq.training import distributed as dist
from seq2seq.training.log import MAX_NONFINITE_IN_A_ROW, TrainLog
from seq2seq.training.state import Session
from seq2seq.training.validation import validate

log = logging.getLogger("seq2seq")


def save(s: Session, path: Path, *, full: bool) -> None:
    """A checkpoint from rank 0: the weights, and with `full` everything --resume needs."""
    if not dist.is_main():
        return
    p, config = s.progress, to_dict(s.cfg)
    if full:
        payload = training_payload(s.weights, config, progress=vars(p), optimizer=s.optimizer,
                                   scheduler=s.schedule.plateau, scaler=s.scaler,
                                   raw_model=None if s.ema is None else s.model)
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


def save_between_validations(s: Session, logger: TrainLog, saved_at: float) -> None:
    """last.pt as a validation or a signal would write it, so a kill -9 or an out-of-memory
    kill loses little; it reads state (RNG included) without changing it, so resuming is exact."""
    logger.settle()
    save(s, s.run.last, full=True)
    log.info("step %d: saved %s (%.1f minutes of training since the previous save)", s.progress.step, s.run.last,
             (s.progress.elapsed - saved_at) / 60)


def interrupt(s: Session, logger: TrainLog, signal_name: str) -> None:
    """A SIGINT or SIGTERM arrived: save last.pt and stop with the command that resumes."""
    logger.settle()
    save(s, s.run.last, full=True)
    message = (f"stopped by {signal_name} at step {s.progress.step}; saved {s.run.last}; resume with: "
               f"seq2seq train --run-dir {s.run} --resume")
    log.info("%s", message)
    raise Interrupted(message)


def validate_and_save(s: Session, logger: TrainLog) -> str | None:
    """Validate (rank 0), record the figures, save best.pt when they improved and last.pt
    always, and step the learning-rate schedule on every rank. Returns why to stop, if so."""
    logger.settle()
    s.progress.last_valid_step = s.progress.step
    score, stop = None, False
    if dist.is_main():
        score, stop = validate_on_main(s, logger)
    s.schedule.after_validation(score)
    save(s, s.run.last, full=True)
    return "early stopping" if dist.any_rank(stop) else None


def validate_on_main(s: Session, logger: TrainLog) -> tuple[float, bool]:
    """Rank 0's half of a validation: the score, and whether early stopping says stop."""
    t, p = s.cfg.training, s.progress
    result = validate(s.weights, s.valid, s.cfg.decoding, s.tgt_tok, s.device)
    score = result[t.early_stop_metric if t.early_stop_metric != "loss" else "valid_loss"]
    record = {"step": p.step, "epoch": p.validated_epoch, "elapsed": round(p.elapsed, 1),
              "lr": s.schedule.rate, "train_loss": logger.window_loss(),
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
    logger.scalars(record, "valid")
    log.info("validation at step %d: loss %.3f, ppl %.2f, BLEU %.2f, chrF %.2f%s", p.step, result["valid_loss"],
             result["valid_ppl"], result["bleu"], result["chrf"],
             " (new best)" if record.get("best") else f" (best {p.best_score:.2f} at step {p.best_step}, "
             f"{p.bad_validations} without improvement)")
    stop = t.patience is not None and p.bad_validations >= t.patience
    if stop:
        log.info("early stopping: %d validations without improvement", p.bad_validations)
    return score, stop


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


def end_of_run(s: Session) -> None:
    """What the checkpoint policy does when training ends: training.average_checkpoints (rank 0)."""
    if s.cfg.training.average_checkpoints and dist.is_main():
        average_best(s)


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
    if wins:
        save_checkpoint(s.run.best, payload)
        s.run.valid_hypotheses.write_text("\n".join(result["hypotheses"]) + "\n", encoding="utf-8")
    record = {"step": p.step, "epoch": p.validated_epoch, "elapsed": round(p.elapsed, 1),
              "checkpoint": s.run.averaged.name, "averaged_from": payload["averaged_from"],
              **{k: v for k, v in result.items() if k != "hypotheses"}, **({"best": True} if wins else {})}
    with open(s.run.metrics, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    log.info("training.average_checkpoints: the average of %s scores %s %.2f against best.pt's %.2f (%+.2f): %s",
             ", ".join(name for _, _, name in kept), metric, score, p.best_score, gain if metric != "loss" else -gain,
             f"the average won and is now {s.run.best.name}" if wins else f"{s.run.best.name} (step {p.best_step}) "
             f"stays; the average is kept as {s.run.averaged.name}")
