"""Self-describing checkpoints: what one holds, written atomically and loaded without executing code.

Every checkpoint holds `format`, `format_version`, `config` (the resolved config as a dict),
`model` (the unwrapped model's weights: the ones to translate with, the moving average when
training.ema_decay is set), `step`, `epoch` and `best_score`. A run's last.pt adds the training
state --resume needs (TRAINING_STATE: optimizer, schedule, progress, random streams, fp16's loss
scale, and with a moving average `raw_model`, the trained weights themselves); an averaged
checkpoint adds `averaged_from`. This module is the one
place that writes, reads and filters these fields.
"""
from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from seq2seq.errors import CheckpointError, TrainingError

FORMAT = "seq2seq-checkpoint"
FORMAT_VERSION = 1

DISK_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def write_failure(path: Path, error: BaseException, *, what: str, needed: int | None = None,
                  change: str = "point --run-dir to a larger disk") -> str:
    """One line for a failed write of `path`: the cause, what stayed intact, and what to free or
    change. A full disk is recognised by its errno."""
    previous = f"the previous {path.name} is intact" if path.exists() else f"there was no {path.name} yet"
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        free = shutil.disk_usage(path.absolute().parent).free if path.absolute().parent.exists() else 0
        need = f"{what} needs about {_megabytes(needed)}, " if needed else ""
        return (f"{path}: {DISK_FULL[error.errno]} (could not write {what}; {previous}). Free space on the "
                f"filesystem of {path.absolute().parent} ({need}{_megabytes(free)} free) or {change}")
    cause = error.strerror if isinstance(error, OSError) and error.strerror else str(error).strip()
    cause = (cause.splitlines() or [type(error).__name__])[0][:200]
    return (f"{path}: cannot write it ({cause}); {previous}. Check the filesystem of {path.absolute().parent} "
            f"or {change}")


def atomic_write(path: str | Path, write, *, what: str = "the checkpoint", needed: int | None = None) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: a crash leaves the old file intact.
    Whatever the OS or torch raises while writing is a one-line TrainingError naming the path and
    what to free (`needed`: bytes the file takes, when known); the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        try:
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())  # some filesystems (NFS, quotas) report a full disk only here
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the rename itself durable
            finally:
                os.close(dir_fd)
        except (OSError, RuntimeError) as e:
            if tmp.exists():
                tmp.unlink()  # first, so the message counts the space it took as free
            raise TrainingError(write_failure(path, e, what=what, needed=needed)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


class _Recording:
    """A file that remembers the OSError of a failed write: torch's zip writer replaces it with a
    RuntimeError of its own ("unexpected pos ..."), so a full disk would lose its errno."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors inside `value` (nested dicts and lists): about a checkpoint's size."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


# What --resume needs beyond the weights; averaging and weights-only checkpoints leave it out.
TRAINING_STATE = ("optimizer", "scheduler", "progress", "rng", "scaler", "raw_model")


def weights_payload(model: torch.nn.Module, config: dict, *, step: int, epoch: int,
                    best_score: float | None) -> dict[str, Any]:
    """What every checkpoint holds: the resolved config, the weights and where training stood."""
    return {"config": config, "model": unwrap(model).state_dict(), "step": step, "epoch": epoch,
            "best_score": best_score}


def training_payload(model: torch.nn.Module, config: dict, *, progress: dict, optimizer, scheduler,
                     scaler=None, raw_model: torch.nn.Module | None = None) -> dict[str, Any]:
    """A weights payload plus the full training state (last.pt): optimizer, schedule, progress,
    the random streams and the loss scale, through their public state_dicts. `raw_model`: the
    trained weights when `model` holds their moving average."""
    payload = weights_payload(model, config, step=progress["step"], epoch=progress["epoch"],
                              best_score=progress["best_score"])
    payload.update({
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "progress": dict(progress),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "scaler": scaler.state_dict() if scaler is not None else None,
    })
    if raw_model is not None:
        payload["raw_model"] = unwrap(raw_model).state_dict()
    return payload


def without_training_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The entries of a loaded checkpoint that a derived weights-only checkpoint (an average)
    carries over: everything but the format tags, the weights and the training state."""
    return {k: v for k, v in checkpoint.items() if k not in ("format", "format_version", "model", *TRAINING_STATE)}


def restore_random_state(checkpoint: dict[str, Any]) -> None:
    """Put back the random streams a training_payload recorded."""
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if torch.cuda.is_available() and checkpoint["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])


def has_training_state(checkpoint: dict[str, Any]) -> bool:
    return "progress" in checkpoint and "optimizer" in checkpoint


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save `payload` (plain tensors, numbers, strings, lists and dicts only) with format tags."""
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            recording = _Recording(f)
            try:
                torch.save(data, recording)
            except RuntimeError:
                if recording.error is not None:
                    raise recording.error from None  # the OS's reason, e.g. ENOSPC
                raise

    atomic_write(path, write, needed=_tensor_bytes(data))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only: no code in the file runs) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        # torch.load does not check the zip CRCs, so flipped bytes inside a tensor would load
        # as silently wrong weights; testzip reads every member and checks it.
        if zipfile.is_zipfile(path):
            damaged = zipfile.ZipFile(path).testzip()
            if damaged is not None:
                raise CheckpointError(f"{path}: corrupted checkpoint (checksum mismatch in {damaged})")
        data = torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # a damaged file can fail in any layer (zip, pickle, tensors)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable seq2seq checkpoint (truncated, corrupted or "
                              f"not a torch file): {first_line[:200]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a seq2seq checkpoint (no '{FORMAT}' tag)")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this seq2seq "
                              f"understands ({FORMAT_VERSION}); upgrade seq2seq")
    for key in ("config", "model"):
        if key not in data:
            raise CheckpointError(f"{path}: checkpoint has no '{key}' entry")
    return data


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP or torch.compile wrappers, so saved names carry no prefixes."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
