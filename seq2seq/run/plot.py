"""Pictures of a run: learning curves from metrics.jsonl and attention heatmaps.

matplotlib is an optional extra (`pip install 'seq2seq-rnn[plot]'`); it is imported only when a
picture is drawn, with the file-only Agg backend so no display is needed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import torch

from seq2seq.errors import PlotError
from seq2seq.run.rundir import RunDir

log = logging.getLogger(__name__)


# (file name, title, y label, [(metrics.jsonl key, legend label)])
CURVES = [
    ("loss.png", "Loss", "cross-entropy per target token", [("train_loss", "train"), ("valid_loss", "validation")]),
    ("ppl.png", "Validation perplexity", "perplexity", [("valid_ppl", "validation")]),
    ("bleu.png", "Validation BLEU", "BLEU", [("bleu", "validation")]),
    ("chrf.png", "Validation chrF", "chrF", [("chrf", "validation")]),
    ("lr.png", "Learning rate", "learning rate", [("lr", "lr")]),
]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'seq2seq-rnn[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def read_metrics(path: str | Path) -> list[dict]:
    """The validation records of a run, one dict per line of metrics.jsonl."""
    path = Path(path)
    if not path.is_file():
        raise PlotError(f"{path}: not found (a run writes it at its first validation)")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # A run killed mid-write leaves a torn last line; the rest is still worth plotting.
            log.warning("%s:%d: not valid JSON, skipped", path, n)
    if not records:
        raise PlotError(f"{path}: no validation records yet")
    return records


def plot_learning_curves(run_dir: str | Path, output_dir: str | Path | None = None) -> list[Path]:
    """Write one PNG per quantity (loss, perplexity, BLEU, chrF, learning rate) against step
    into output_dir (default RUN_DIR/plots); returns the files written."""
    run = RunDir(run_dir)
    # The validation of an average made at the end of training (training.average_checkpoints) is
    # no point on the curves: it is not the weights of any step.
    records = [r for r in read_metrics(run.metrics) if "averaged_from" not in r]
    plt = _pyplot()
    out = Path(output_dir) if output_dir is not None else run.plots
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, ylabel, series in CURVES:
        lines = []
        for key, label in series:
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            if points:
                lines.append((label, points))
        if not lines:
            continue  # e.g. no train loss in records written before it was logged
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for label, points in lines:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o", markersize=3, label=label)
        best = [r for r in records if r.get("best")]
        if best and name != "lr.png":
            ax.axvline(best[-1]["step"], color="grey", linestyle=":", linewidth=1, label="best checkpoint")
        if name == "lr.png":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        written.append(out / name)
    return written


def plot_attention(weights: torch.Tensor, src_pieces: Sequence[str], tgt_pieces: Sequence[str],
                   path: str | Path) -> Path:
    """Heatmap of weights (tgt_len, src_len): target pieces down, source pieces across."""
    plt = _pyplot()
    weights = weights.detach().float().cpu().numpy()
    rows, cols = weights.shape
    # Grow with the sentence so that every piece keeps a readable label.
    fig, ax = plt.subplots(figsize=(max(4.0, 0.4 * cols + 2), max(3.0, 0.4 * rows + 1.5)), dpi=100)
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), labels=list(src_pieces)[:cols], rotation=90)
    ax.set_yticks(range(rows), labels=list(tgt_pieces)[:rows])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
