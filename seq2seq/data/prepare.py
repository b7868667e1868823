"""Preparing the store: the training corpora streamed once, encoded and filtered (encode.py) and
written in the store's format (format.py), so that training reads them pair by pair and its
memory does not grow with the corpus.

A store is written into a temporary directory and renamed when complete, so an interrupted
prepare leaves nothing that a later run would trust; a store whose inputs changed (files,
tokenizers, filters) has another fingerprint and is rebuilt. With data.cache_dir, runs with the
same inputs share one store there.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from seq2seq.config import DataConfig
from seq2seq.errors import TrainingError
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.data.batches import groups
from seq2seq.data.encode import Counts, Filters, Segmenting, encode_chunk, report
from seq2seq.data.format import META, STORE_VERSION, Store, Writer, id_type, len_type, read_meta, sampled_dir, write_meta
from seq2seq.data.text import SkippedLines, corpus_files, corpus_name, stream_corpus

log = logging.getLogger("seq2seq")

CHUNK = 10_000  # pairs encoded at a time (and per task for data.num_workers)

# The data.* settings that change what encode_pairs keeps (and how the files are read).
SETTINGS = ("src_lang", "tgt_lang", "max_src_len", "max_tgt_len", "max_len_ratio", "drop_identical",
            "src_prefix_tag", "skip_invalid_utf8")


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def fingerprint(data: DataConfig, tokenizer_files: Sequence[Path], segmenting: Segmenting | None = None) -> dict:
    """Everything the store's content depends on: the input files (path, size, modification
    time), the tokenizer files' content, the settings that encode and filter, and the corpus
    tags and random segmentations where there are any (so that stores without them keep the
    fingerprint they had before either existed)."""
    inputs = []
    for corpus in data.train:
        for name in corpus_files(data, corpus):
            path = Path(name)
            stat = path.stat() if path.exists() else None
            inputs.append([str(path.resolve()), stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    fp = {"version": STORE_VERSION, "inputs": inputs, "tokenizers": [_file_hash(Path(f)) for f in tokenizer_files],
          "settings": {k: getattr(data, k) for k in SETTINGS}}
    if any(corpus.tag for corpus in data.train):
        fp["tags"] = [corpus.tag for corpus in data.train]
    if segmenting is not None:
        fp["sampling"] = asdict(segmenting)
    return fp


def store_dir(data: DataConfig, prepared: Path, fp: dict) -> Path:
    """`prepared` (the run's RunDir.prepared), or under data.cache_dir one directory per
    fingerprint (runs share it)."""
    if data.cache_dir is None:
        return prepared
    key = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    return Path(data.cache_dir) / f"prepared-{key}"


# Each worker process of data.num_workers loads the tokenizers once.
_worker: dict = {}


def _start_worker(files: tuple) -> None:
    (src_model, src_kept), (tgt_model, tgt_kept) = files
    _worker.update(src=Tokenizer(src_model, src_kept), tgt=Tokenizer(tgt_model, tgt_kept))


def _encode_in_worker(task: tuple):
    pairs, filters, segmenting, place = task
    return encode_chunk(pairs, _worker["src"], _worker["tgt"], filters, segmenting, place)


def prepare_store(data: DataConfig, directory: Path, src_tok: Tokenizer, tgt_tok: Tokenizer, fp: dict, *,
                  segmenting: Segmenting | None = None, quiet: bool = False) -> Store:
    """Stream every training corpus once, encode and filter it, and write the store into
    `directory` (replacing what is there), with `segmenting`'s random segmentations of the
    same pairs beside it. Progress goes to the log (and a bar on a terminal)."""
    id_code = id_type(max(len(src_tok), len(tgt_tok)))
    len_code = len_type(max(data.max_src_len, data.max_tgt_len))
    tmp = _new_tmp(directory)
    pool = None
    try:
        writers = _Writers(tmp, id_code, len_code, copies=segmenting.copies if segmenting is not None else 0)
        if data.num_workers > 1:
            files = ((src_tok.path, src_tok.kept), (tgt_tok.path, tgt_tok.kept))
            pool = multiprocessing.get_context("spawn").Pool(data.num_workers, _start_worker, (files,))
        total, per_corpus = Counts(), []
        show_bar = not quiet and sys.stderr.isatty()
        start = time.perf_counter()
        bar = tqdm(disable=not show_bar, unit=" pairs", desc="preparing", dynamic_ncols=True, leave=False)
        for c, corpus in enumerate(data.train):
            counts = _write_corpus(data, c, corpus, src_tok, tgt_tok, writers, pool=pool, segmenting=segmenting,
                                   bar=bar, before=total, start=start)
            per_corpus.append({"prefix": corpus.path, **asdict(counts)})
            total.add(counts)
        bar.close()
        writers.close()
        meta = {"fingerprint": fp, "pairs": total.kept, "id_type": id_code, "len_type": len_code,
                "corpora": per_corpus, "counts": asdict(total)}
        if writers.copies:
            meta["sampled_copies"] = len(writers.copies)
        _publish(tmp, directory, meta)
        seconds = time.perf_counter() - start
        log.info("prepared %s of %s pairs into %s in %.0f s (%.0f pairs/s)%s", f"{total.kept:,}", f"{total.read:,}",
                 directory, seconds, total.read / max(seconds, 1e-9),
                 f", with {len(writers.copies)} random segmentations" if writers.copies else "")
    except OSError as e:  # whatever the OS says; the temporary directory goes (finally), nothing half-written stays
        raise _cannot_write(e, tmp, directory) from None
    finally:
        if pool is not None:
            pool.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return Store.open(directory)


def _new_tmp(directory: Path) -> Path:
    """An empty temporary directory beside `directory`, where the store is written before it is
    renamed into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp{os.getpid()}"
    for stale in directory.parent.glob(f".{directory.name}.tmp*"):  # left by a killed prepare
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    return tmp


class _Writers:
    """The store's writer and one per random segmentation of the same pairs (sampled_dir(k))."""

    def __init__(self, tmp: Path, id_code: str, len_code: str, *, copies: int):
        self.main = Writer(tmp, id_code, len_code)
        self.copies: list[Writer] = []
        for k in range(copies):
            (tmp / sampled_dir(k)).mkdir()
            self.copies.append(Writer(tmp / sampled_dir(k), id_code, len_code))

    def write(self, src_ids, tgt_ids, copies) -> None:
        """One encoded chunk, and its random segmentations (one (src, tgt) per copy)."""
        self.main.write("src", src_ids)
        self.main.write("tgt", tgt_ids)
        for copy_writer, (copy_src, copy_tgt) in zip(self.copies, copies):
            copy_writer.write("src", copy_src)
            copy_writer.write("tgt", copy_tgt)

    def close(self) -> None:
        for w in [self.main, *self.copies]:
            w.close()


def _write_corpus(data: DataConfig, c: int, corpus, src_tok: Tokenizer, tgt_tok: Tokenizer, writers: _Writers, *,
                  pool, segmenting: Segmenting | None, bar, before: Counts, start: float) -> Counts:
    """Corpus number `c` streamed, encoded (in `pool`'s workers when there is one), filtered and
    written; returns its counts. `before`: the counts of the corpora written already, for the
    progress log every million pairs read."""
    filters = Filters.for_training(data, corpus)
    counts, skipped = Counts(), SkippedLines()
    tasks = ((chunk, filters, segmenting, (c, n))
             for n, chunk in enumerate(groups(stream_corpus(data, corpus, skipped), CHUNK)))
    results = (pool.imap(_encode_in_worker, tasks) if pool is not None else
               (encode_chunk(chunk, src_tok, tgt_tok, *rest) for chunk, *rest in tasks))
    for src_ids, tgt_ids, chunk_counts, copies in results:
        writers.write(src_ids, tgt_ids, copies)
        counts.add(chunk_counts)
        bar.update(chunk_counts.read)
        read = before.read + counts.read
        if read // 1_000_000 > (read - chunk_counts.read) // 1_000_000:
            log.info("prepare: %s pairs read (%.0f pairs/s)", f"{read:,}", read / (time.perf_counter() - start))
    counts.invalid_utf8 = skipped.pairs
    if skipped.pairs:
        src_file, tgt_file = corpus_files(data, corpus)
        log.warning("skipped %d pairs with invalid UTF-8 (%s: %d lines, %s: %d lines)", skipped.pairs,
                    src_file, skipped.src, tgt_file, skipped.tgt)
    report(counts, filters, corpus_name(data, corpus))
    return counts


def _publish(tmp: Path, directory: Path, meta: dict) -> None:
    """The finished store in `tmp` renamed to `directory`, replacing what was there."""
    write_meta(tmp, meta)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)


def _cannot_write(e: OSError, tmp: Path, directory: Path) -> TrainingError:
    """The error for an OSError while the store was written: a full disk says how much is free."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        shutil.rmtree(tmp, ignore_errors=True)  # first, so the free space below counts what it took
        free = shutil.disk_usage(directory.parent).free / 1e6
        return TrainingError(f"{directory.parent}: the disk is full while writing the prepared store ({free:.1f} "
                             f"MB free); free space there or set data.cache_dir to a directory on a larger "
                             f"disk")
    return TrainingError(f"{directory}: cannot write the prepared store ({e.strerror or e}); check that "
                         f"filesystem or set data.cache_dir to another directory")


def _stored_fingerprint(directory: Path) -> dict | None:
    meta = read_meta(directory)
    return meta.get("fingerprint") if meta is not None else None


def open_or_prepare(data: DataConfig, prepared: Path, src_tok: Tokenizer, tgt_tok: Tokenizer,
                    tokenizer_files: Sequence[Path], *, prepare: bool, segmenting: Segmenting | None = None,
                    quiet: bool = False) -> Store:
    """The run's store (in `prepared`, the run's RunDir.prepared, or under data.cache_dir):
    reused when its fingerprint matches, otherwise (re)built when `prepare` (the process that may
    write; the others wait for it and then open what it wrote)."""
    fp = fingerprint(data, tokenizer_files, segmenting)
    directory = store_dir(data, prepared, fp)
    while not prepare and _stored_fingerprint(directory) != fp:
        # Another process prepares it; polling the disk has no time limit, unlike a barrier.
        time.sleep(1.0)
    if (directory / META).is_file():
        stored = _stored_fingerprint(directory)
        if stored == fp:
            store = Store.open(directory)
            log.info("data: using the prepared store %s (%s pairs)", directory, f"{len(store):,}")
            return store
        if prepare:
            changed = [k for k in fp if stored is None or stored.get(k) != fp[k]]
            log.info("data: the prepared store %s is out of date (%s changed); preparing it again", directory,
                     ", ".join(changed) or "format")
    return prepare_store(data, directory, src_tok, tgt_tok, fp, segmenting=segmenting, quiet=quiet)
