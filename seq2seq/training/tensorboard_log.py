"""Optional TensorBoard logging (training.tensorboard: true) into RUN_DIR/tensorboard."""
from __future__ import annotations

from pathlib import Path

from seq2seq.errors import TrainingError


def open_writer(log_dir: str | Path):
    """A torch SummaryWriter writing into `log_dir` (RunDir.tensorboard); a clear error without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises this when the tensorboard package is absent
        raise TrainingError("training.tensorboard: needs the tensorboard package "
                            "(pip install tensorboard), or set training.tensorboard: false") from None
    return SummaryWriter(log_dir=str(log_dir))


def log_scalars(writer, record: dict, step: int, prefix: str) -> None:
    """Every number in `record` (except the step itself) as PREFIX/KEY at `step`."""
    if writer is None:
        return
    for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{prefix}/{key}", value, step)
    writer.flush()
