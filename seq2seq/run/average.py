"""Checkpoint averaging: the elementwise mean of several checkpoints' weights, saved as a new
checkpoint that `translate --checkpoint` loads like any other."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from seq2seq.run.checkpoint import load_checkpoint, save_checkpoint, without_training_state
from seq2seq.errors import CheckpointError
from seq2seq.run.rundir import RunDir

log = logging.getLogger(__name__)


def average_checkpoints(paths: Sequence[str | Path]) -> dict:
    """A checkpoint payload whose weights are the mean of those in `paths`; config and the
    other entries come from the last path. All must hold the same parameter names and shapes."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    last: dict = {}
    for n, path in enumerate(paths):
        ckpt = load_checkpoint(path)
        weights = ckpt["model"]
        if n == 0:
            # Summing in float64 keeps the mean exact to float32 precision for any count.
            total = {k: v.to(torch.float64) if v.is_floating_point() else v.clone() for k, v in weights.items()}
            reference = path
        else:
            if weights.keys() != total.keys():
                raise CheckpointError(f"{path}: holds other parameters than {reference}; cannot average")
            for k, v in weights.items():
                if v.shape != total[k].shape:
                    raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, but {tuple(total[k].shape)} "
                                          f"in {reference}; cannot average")
                if v.is_floating_point():
                    total[k] += v
        last = ckpt
    dtypes = {k: v.dtype for k, v in last["model"].items()}
    model = {k: (v / len(paths)).to(dtypes[k]) if v.is_floating_point() else v for k, v in total.items()}
    payload = without_training_state(last)
    payload["model"] = model
    payload["averaged_from"] = [Path(p).name for p in paths]
    return payload


def average_run(run_dir: str | Path, *, last: int, output: str | Path | None = None) -> tuple[Path, list[Path]]:
    """Average the `last` most recent kept checkpoints of a run into `output` (default
    RUN_DIR/averaged.pt, a relative name is taken inside RUN_DIR). Returns (output, inputs)."""
    rd = RunDir(run_dir)
    run_dir = rd.path
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: is not a run directory (it does not exist or is a file)")
    if last < 1:
        raise CheckpointError(f"--last: must be at least 1, got {last}")
    kept = rd.kept_checkpoints()
    if len(kept) < last:
        raise CheckpointError(f"{run_dir}: asked to average {last} checkpoints but only {len(kept)} "
                              f"best.stepN.pt files are kept (raise training.keep_best to keep more)")
    inputs = kept[-last:]
    out = rd.averaged if output is None else Path(output)
    if not out.is_absolute() and out.parent == Path("."):
        out = run_dir / out
    save_checkpoint(out, average_checkpoints(inputs))
    log.info("averaged %s into %s", ", ".join(p.name for p in inputs), out)
    return out, inputs
