"""Sequence-level knowledge distillation (Kim and Rush, 2016): trained teachers (one run, or
several as an ensemble) translate the source side of every corpus in a student's data.train
with beam search, and the student trains on their translations instead of (or beside) the
references. A smaller student learns the teachers' one consistent output per sentence far more
easily than the many ways people translate it.

Output, in DIR: NAME.SRC_LANG (a copy of the source lines distilled, one for one) and
NAME.TGT_LANG (their translations) per corpus, and config.yaml, the student's config with
data.train listing those pairs, so that `seq2seq train DIR/config.yaml` trains the student.
Text is all that passes between teachers and student, so their tokenizers need not match: the
student trains its own SentencePiece on the distilled text.

The source streams through in chunks (memory stays bounded however long the corpus), and after
each chunk both files are fsynced and the progress record (distill_record.py) counts it: a run
killed at any point continues after its last complete chunk, and writes exactly what an
uninterrupted run writes, because chunks start at the same lines."""
from __future__ import annotations

import logging
import os
import sys
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from seq2seq.config import Config, DataConfig, RUN_CONFIG_FILE, TrainCorpus, config_from_dict, dump_yaml, to_dict
from seq2seq.config import load_run_config
from seq2seq.data.text import corpus_files
from seq2seq.decoding.onnx_model import MANIFEST, is_export, sha256
from seq2seq.decoding.translator import Translator
from seq2seq.errors import ConfigError, DataError
from seq2seq.run.rundir import BEST, RunDir
from seq2seq.training.distill_record import (RECORD_FILE, CorpusProgress, Identity, Record, load_record, mismatch,
                                             prefix_crc32, sync_directory)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Teachers:
    """The runs (or export folders) that translate, several being an ensemble, and how they load:
    the same choices as `translate --model A --model B`."""
    models: tuple[str, ...]
    checkpoint: str = BEST
    device: str = "auto"
    precision: str | None = None
    quantize: str | None = None

    def identities(self) -> list[dict]:
        """Per model, the file that fixes its weights (its checkpoint, or an export's manifest,
        which holds the sha256 of every other file) and that file's sha256."""
        files = [Path(m) / MANIFEST if is_export(m) else RunDir(m).checkpoint(self.checkpoint) for m in self.models]
        return [{"model": str(m), "file": str(f), "sha256": sha256(f)} for m, f in zip(self.models, files)]

    def load(self) -> Translator:
        return Translator.load(self.models[0] if len(self.models) == 1 else list(self.models), device=self.device,
                               checkpoint=self.checkpoint, quantize=self.quantize, precision=self.precision)


@dataclass
class Summary:
    """What one call of `distill` did."""
    config: Path          # DIR/config.yaml, the student's config
    lines: int            # lines distilled in DIR, over all corpora
    new_lines: int        # of those, distilled by this call (the rest by earlier, interrupted ones)
    seconds: float        # wall time this call spent decoding


def distill(teachers: Teachers, *, student_config: str | Path, out: str | Path, beam_size: int | None = None,
            batch_size: int | None = None, chunk_lines: int | None = None, references: float | None = None,
            quiet: bool = False) -> Summary:
    """Translate the source side of every corpus in the student config's data.train into `out`
    (resuming a distillation begun there), then write OUT/config.yaml for the student.
    `beam_size`, `batch_size`: as translate's (default: the first teacher's decoding section);
    `chunk_lines`: lines between two durable progress points (default: 4 batches, as translate
    reads); `references`: also list the original corpora, at this times their own weight."""
    if references is not None and not 0 < references <= 1e6:
        raise ConfigError(f"--references: a weight above 0 and at most 1e6, got {references}")
    cfg = load_run_config(student_config)
    check_sources(cfg.data, targets=references is not None)
    translator = teachers.load()
    check_languages(translator.config.data, cfg.data)
    decoding = translator.config.decoding
    identity = Identity(teachers.identities(), beam_size or decoding.beam_size, translator.precision,
                        teachers.quantize, cfg.data.src_lang, cfg.data.tgt_lang, [c.path for c in cfg.data.train])
    out = Path(out)
    record = begin(out, identity, cfg.data, str(student_config))
    options = dict(beam_size=identity.beam_size, batch_size=batch_size or decoding.batch_size)
    before, started = sum(c.lines for c in record.corpora), time.perf_counter()
    for corpus, progress in zip(cfg.data.train, record.corpora):
        if not progress.done:
            distill_corpus(translator, record, progress, source=Path(corpus_files(cfg.data, corpus)[0]), out=out,
                           langs=(cfg.data.src_lang, cfg.data.tgt_lang), options=options,
                           chunk_lines=chunk_lines or 4 * options["batch_size"], quiet=quiet)
    seconds = time.perf_counter() - started
    config = write_student_config(cfg, record, out, references=references)
    lines = sum(c.lines for c in record.corpora)
    return Summary(config, lines, lines - before, seconds)


def check_sources(data: DataConfig, *, targets: bool) -> None:
    """Every corpus's source file is there, and with `targets` (--references) its target file."""
    for i, corpus in enumerate(data.train):
        for path in corpus_files(data, corpus)[:2 if targets else 1]:
            if not Path(path).is_file():
                raise DataError(f"{path}: file not found (data.train[{i}] in the student's config)")


def check_languages(teacher: DataConfig, student: DataConfig) -> None:
    """The teachers translate the student's pair, or a ConfigError names both."""
    if (teacher.src_lang, teacher.tgt_lang) != (student.src_lang, student.tgt_lang):
        raise ConfigError(f"--config: the student translates {student.src_lang}->{student.tgt_lang} (data.src_lang, "
                          f"data.tgt_lang), but the teachers {teacher.src_lang}->{teacher.tgt_lang}")


def corpus_names(train: list[TrainCorpus]) -> list[str]:
    """The output prefix of each corpus: its file name, numbered where two would share one."""
    names = [Path(c.path).name or "corpus" for c in train]
    return [name if names.count(name) == 1 else f"{i}.{name}" for i, name in enumerate(names)]


def begin(out: Path, identity: Identity, data: DataConfig, student_config: str) -> Record:
    """The record of the distillation in `out`: a new one for a new or empty folder, or the one
    there when it was begun with the same identity and its sources still start as they did."""
    record = load_record(out) if out.is_dir() else None
    if record is None:
        # A kill before the first record was in place may have left its temporary file, nothing else.
        if out.exists() and (not out.is_dir() or any(p.name != RECORD_FILE + ".tmp" for p in out.iterdir())):
            raise DataError(f"--out {out}: holds files but no distillation ({RECORD_FILE}); give a new or empty "
                            f"folder")
        out.mkdir(parents=True, exist_ok=True)
        record = Record(identity, [CorpusProgress(c.path, name) for c, name in zip(data.train,
                                                                                   corpus_names(data.train))],
                        student_config)
        record.save(out)
        return record
    problem = mismatch(record.identity, identity, out)
    if problem:
        raise DataError(problem)
    record.identity = identity  # the same checkpoints, perhaps under moved paths: keep the current ones
    for i, (corpus, progress) in enumerate(zip(data.train, record.corpora)):
        source = Path(corpus_files(data, corpus)[0])
        if prefix_crc32(source, progress.read_bytes) != (progress.crc32, progress.read_bytes):
            raise DataError(f"{source}: its first {progress.lines:,} lines changed since the distillation in {out} "
                            f"began (data.train[{i}]); give a new --out to distill it afresh")
    return record


def distill_corpus(translator: Translator, record: Record, progress: CorpusProgress, *, source: Path, out: Path,
                   langs: tuple[str, str], options: dict, chunk_lines: int, quiet: bool) -> None:
    """Translate `source` from where `progress` stopped to its end, chunk by chunk, each chunk
    durable (fsync) before the record counts it."""
    files = [out / f"{progress.name}.{lang}" for lang in langs]
    handles = [open_output(path, size) for path, size in zip(files, (progress.src_bytes, progress.tgt_bytes))]
    bar = progress_bar(source, progress.lines, quiet)
    try:
        with open(source, "rb") as f:
            f.seek(progress.read_bytes)
            while raw := read_chunk(f, chunk_lines):
                # Decoded as translate reads its input: split on \n only, undecodable bytes replaced.
                texts = [line.rstrip(b"\n").decode("utf-8", errors="replace") for line in raw]
                translations = translator.translate(texts, first_line=progress.lines + 1, **options)
                src_data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in raw)
                tgt_data = "".join(text + "\n" for text in translations).encode("utf-8")
                for handle, data in zip(handles, (src_data, tgt_data)):
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                progress.lines += len(raw)
                progress.read_bytes += sum(map(len, raw))
                progress.crc32 = zlib.crc32(b"".join(raw), progress.crc32)
                progress.src_bytes += len(src_data)
                progress.tgt_bytes += len(tgt_data)
                record.save(out)
                bar.update(len(raw))
        progress.done = True
        record.save(out)
        log.info("distilled %s: %d lines into %s", source, progress.lines, files[1])
    finally:
        bar.close()
        for handle in handles:
            handle.close()


def open_output(path: Path, size: int) -> BinaryIO:
    """`path` opened for appending after its first `size` bytes, the complete lines the record
    counts; whatever a kill left beyond them (part of a chunk) is cut off."""
    have = path.stat().st_size if path.exists() else 0
    if have < size:
        raise DataError(f"{path}: {have:,} bytes, but {RECORD_FILE} counts {size:,} written; the distillation in "
                        f"{path.parent} is damaged: give a new --out")
    handle = open(path, "ab")
    handle.truncate(size)
    return handle


def read_chunk(f: BinaryIO, lines: int) -> list[bytes]:
    """Up to `lines` raw lines of `f`, each with its newline (the file's last may have none)."""
    chunk = []
    while len(chunk) < lines and (line := f.readline()):
        chunk.append(line)
    return chunk


def progress_bar(source: Path, done: int, quiet: bool) -> tqdm:
    """A bar over the source's lines on a terminal (counting them reads the file once)."""
    show = not quiet and sys.stderr.isatty()
    total = None
    if show:
        with open(source, "rb") as f:
            total = sum(1 for _ in f)
    return tqdm(total=total, initial=done, disable=not show, unit="sent", desc=f"distilling {source.name}",
                dynamic_ncols=True, leave=False)


def student_config(cfg: Config, record: Record, out: Path, *, references: float | None) -> Config:
    """The student's config training on the distilled corpora (each with its corpus's weight and
    tag), and with `references` the original corpora too, at that times their own weight."""
    distilled = [TrainCorpus(str(out / p.name), c.weight, c.tag) for c, p in zip(cfg.data.train, record.corpora)]
    originals = [replace(c, weight=c.weight * references) for c in cfg.data.train] if references else []
    # Validated again: a weight scaled out of its range is an error here, not at training time.
    return config_from_dict(to_dict(replace(cfg, data=replace(cfg.data, train=distilled + originals))))


def write_student_config(cfg: Config, record: Record, out: Path, *, references: float | None) -> Path:
    """OUT/config.yaml, replaced atomically, with a header saying where it came from."""
    new = student_config(cfg, record, out, references=references)
    teachers = ", ".join(t["model"] for t in record.identity.teachers)
    also = f", beside the original references at {references:g} times their weight" if references else ""
    header = (f"# Written by `seq2seq distill` from {record.student_config}: data.train lists the corpora that\n"
              f"# {teachers} translated with beam {record.identity.beam_size}{also}.\n"
              f"# Train the student: seq2seq train {out / RUN_CONFIG_FILE} --run-dir runs/STUDENT_NAME\n")
    path, tmp = out / RUN_CONFIG_FILE, out / (RUN_CONFIG_FILE + ".tmp")
    tmp.write_text(header + dump_yaml(new), encoding="utf-8")
    os.replace(tmp, path)
    sync_directory(out)
    return path
