"""What a run directory is, and the one way to open one.

A run directory holds everything a trained model needs and everything its training wrote:

    config.yaml                 the resolved config (also stored in every checkpoint)
    spm.joint.model             the SentencePiece model, or spm.SRC.model and spm.TGT.model
    spm.settings.json           what they were trained from: settings, training files' sizes and times
    vocab.source.txt, .target   the pieces each side keeps (tokenizer.drop_unseen, absent otherwise)
    best.pt, last.pt            the best validated weights (or their average, training.average_checkpoints);
                                the full training state for --resume
    best.stepN.pt               the best few validated checkpoints (training.keep_best)
    valid.best.hyp              the best validation's translations
    averaged.pt                 `seq2seq average`'s output (unless told otherwise), or the average
                                training.average_checkpoints made at the end of training
    train.log, train.jsonl      the training log, as text and one JSON line per logged window
    metrics.jsonl               one JSON line per validation
    finetune.json               what a fine-tuned run took from its parent
    prepared/                   the training data as piece ids (data/prepare.py)
    plots/, tensorboard/        `seq2seq plot`'s pictures; TensorBoard's event files

No other module spells a file name inside a run directory: they ask a RunDir.

`translate`, `info`, `average`, `--resume` and a fine-tuning parent all read runs through here.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from seq2seq.run.checkpoint import load_checkpoint
from seq2seq.config import Config, config_from_dict
from seq2seq.errors import CheckpointError, ConfigError
from seq2seq.model.model import Seq2Seq, build_model
from seq2seq.data.tokenizer import Tokenizer, read_kept

KEPT_PATTERN = re.compile(r"best\.step(\d+)\.pt")
BEST = "best.pt"  # the checkpoint that translate, info, export and a fine-tuning parent read by default


class RunDir:
    """The paths of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def train_records(self) -> Path:
        return self.path / "train.jsonl"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def averaged(self) -> Path:
        return self.path / "averaged.pt"

    @property
    def finetune_record(self) -> Path:
        return self.path / "finetune.json"

    @property
    def prepared(self) -> Path:
        return self.path / "prepared"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @staticmethod
    def default_for(config_path: str | Path) -> "RunDir":
        """Where a run of CONFIG goes when no --run-dir is given: runs/CONFIG_NAME."""
        return RunDir(Path("runs") / Path(config_path).stem)

    def tokenizer_files(self, cfg: Config) -> tuple[Path, Path]:
        """The source and target SentencePiece models (the same file for a joint one)."""
        if cfg.tokenizer.joint:
            return self.path / "spm.joint.model", self.path / "spm.joint.model"
        return self.path / f"spm.{cfg.data.src_lang}.model", self.path / f"spm.{cfg.data.tgt_lang}.model"

    @property
    def tokenizer_record(self) -> Path:
        """The settings and training files the tokenizers were trained from (training/tokenizer_record.py compares them)."""
        return self.path / "spm.settings.json"

    def trained(self) -> list[Path]:
        """What shows that training ran here (checkpoints, logged updates and validations)."""
        if not self.path.is_dir():
            return []
        named = [self.last, self.best, *self.kept_checkpoints(), self.averaged, self.metrics, self.train_records]
        return [p for p in named if p.exists()]

    def clear(self) -> list[Path]:
        """Remove everything a run wrote here but its prepared store (rebuilt whenever its inputs
        change): checkpoints, logs, metrics, config and tokenizers. Returns what was removed."""
        if not self.path.is_dir():
            return []
        named = [self.last, self.best, *self.kept_checkpoints(), self.averaged, self.metrics, self.train_records,
                 self.train_log, self.valid_hypotheses, self.finetune_record, self.config_file, *self.kept_files(),
                 self.tokenizer_record, *sorted(self.path.glob("spm.*.model")), self.plots, self.tensorboard]
        removed = [p for p in dict.fromkeys(named) if p.exists()]
        for p in removed:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return removed

    def kept_files(self) -> tuple[Path, Path]:
        """Where the run lists the pieces each side keeps (absent: every piece of its model)."""
        return self.path / "vocab.source.txt", self.path / "vocab.target.txt"

    @property
    def valid_hypotheses(self) -> Path:
        """The best validation's translations, one per line."""
        return self.path / "valid.best.hyp"

    def kept_checkpoint(self, step: int) -> Path:
        """best.stepN.pt: the best validated weights of step N (training.keep_best)."""
        return self.path / f"best.step{step}.pt"

    def kept_checkpoints(self) -> list[Path]:
        """The best.stepN.pt files the trainer kept, oldest step first."""
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if (m := KEPT_PATTERN.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def checkpoint(self, name: str = BEST) -> Path:
        """The checkpoint file `name`; best.pt falls back to last.pt for a run stopped before its
        first validation. A CheckpointError says what is there instead."""
        if self.path.is_file() and self.path.suffix == ".pt":
            raise CheckpointError(f"{self.path}: is a checkpoint file, not a run directory; give the directory and "
                                  f"the file: --model {self.path.parent} --checkpoint {self.path.name}")
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: is not a run directory (it does not exist or is a file)")
        path = self.path / name
        if name == BEST and not path.exists() and self.last.exists():
            path = self.last
        if not path.is_file():
            found = ", ".join(sorted(p.name for p in self.path.glob("*.pt"))) or "no checkpoints at all"
            also = " or last.pt" if name == BEST else ""
            raise CheckpointError(f"{path}: checkpoint not found: {self.path} has no {name}{also} (found: {found})")
        return path

    def open_tokenizers(self, cfg: Config) -> tuple[Tokenizer, Tokenizer]:
        """The run's tokenizers for `cfg`, each restricted to its kept pieces where listed; a
        missing file is a CheckpointError naming it."""
        models, kept = self.tokenizer_files(cfg), self.kept_files()
        for f in (*models, *(kept if cfg.tokenizer.drop_unseen else ())):
            if not f.is_file():
                raise CheckpointError(f"{self.path}: run directory is missing its tokenizer {f.name}")
        return Tokenizer(models[0], read_kept(kept[0])), Tokenizer(models[1], read_kept(kept[1]))

    def training_state(self) -> tuple[Path, dict, Config]:
        """last.pt, everything in it, and its config: what --resume and a parent's training
        state (finetune.reset_*: false) read."""
        path = self.checkpoint("last.pt")
        ckpt = load_checkpoint(path)
        return path, ckpt, stored_config(path, ckpt)


@dataclass
class Run:
    """An opened run: its checkpoint, the config stored in it, its tokenizers and its model."""
    dir: RunDir
    path: Path                # the checkpoint file that was read
    checkpoint: dict          # everything in it (weights, step, and for last.pt the training state)
    config: Config
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    model: Seq2Seq            # on CPU, in training mode, with the checkpoint's weights


def stored_config(path: Path, checkpoint: dict) -> Config:
    """The config a checkpoint carries, validated by today's rules."""
    try:
        return config_from_dict(checkpoint["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its stored config is not valid here: {e}") from None


def open_run(run_dir: str | Path, checkpoint: str = BEST) -> Run:
    """Open RUN_DIR/checkpoint (see RunDir.checkpoint for the fallback) with the run's config,
    tokenizers and model. Every problem is a CheckpointError naming the file."""
    rd = RunDir(run_dir)
    path = rd.checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    cfg = stored_config(path, ckpt)
    src_tok, tgt_tok = rd.open_tokenizers(cfg)
    model = build_model(cfg.model, src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit the model its config describes "
                              f"({first[1].strip() if len(first) > 1 else first[0][:200]})") from None
    return Run(rd, path, ckpt, cfg, src_tok, tgt_tok, model)
