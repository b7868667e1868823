"""The prepared store: the training corpora encoded once into flat binary files, which training
reads pair by pair, so its memory does not grow with the corpus.

A store is a directory:

    meta.json            format version, the fingerprint of its inputs, counts per corpus
    src.ids, tgt.ids     every pair's piece ids, one after another (uint16, or int32 for
                         vocabularies over 65,536 pieces)
    src.off, tgt.off     int64 offsets into the ids: pair i is ids[off[i]:off[i + 1]]
    src.len, tgt.len     lengths in pieces (uint8, int16 or int32, by data.max_*_len)

Training keeps only the lengths in memory (one or two bytes a pair and side) and reads the ids
of a batch's pairs with positioned reads, through the page cache that every process on the
machine shares. A store is written into a temporary directory and renamed when complete, so an
interrupted prepare leaves nothing that a later run would trust; a store whose inputs changed
(files, tokenizers, filters) has another fingerprint and is rebuilt.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import random
import shutil
import struct
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from ..config import Config
from ..errors import DataError, TrainingError
from ..tokenizer import Tokenizer
from .batches import groups
from .text import SkippedLines, stream_pairs, tag_sources

log = logging.getLogger("seq2seq")

STORE_VERSION = 1
CHUNK = 10_000  # pairs encoded at a time (and per task for data.num_workers)


@dataclass(frozen=True)
class Corpus:
    prefix: str    # files are PREFIX.SRC_LANG and PREFIX.TGT_LANG
    weight: float  # share of the pairs an epoch draws from it (relative to the other corpora)


def corpora(cfg: Config) -> list[Corpus]:
    """data.train as a list: one path prefix, or a list of {path, weight}."""
    train = cfg.data.train
    if isinstance(train, str):
        return [Corpus(train, 1.0)]
    return [Corpus(c.path, c.weight) for c in train]


def corpus_pairs(cfg: Config, corpus: Corpus, skipped: SkippedLines) -> Iterator[tuple[str, str]]:
    d = cfg.data
    return stream_pairs(f"{corpus.prefix}.{d.src_lang}", f"{corpus.prefix}.{d.tgt_lang}",
                        skip_invalid_utf8=d.skip_invalid_utf8, skipped=skipped)


def tokenizer_sample(cfg: Config) -> tuple[list[str], list[str]]:
    """Up to tokenizer.sample_size training pairs, drawn uniformly while streaming every corpus
    once (seeded by training.seed), in corpus order, sources tagged as training tags them: what
    SentencePiece trains on. A corpus that fits is taken whole."""
    size = cfg.tokenizer.sample_size
    rng = random.Random(cfg.training.seed)
    kept: list[tuple[int, str, str]] = []
    seen = 0
    for corpus in corpora(cfg):
        for src, tgt in corpus_pairs(cfg, corpus, SkippedLines()):
            if len(kept) < size:
                kept.append((seen, src, tgt))
            else:
                j = rng.randrange(seen + 1)  # reservoir sampling: every pair kept with equal chance
                if j < size:
                    kept[j] = (seen, src, tgt)
            seen += 1
    kept.sort()
    src, tgt = [s for _, s, _ in kept], [t for _, _, t in kept]
    if not any(s.strip() and t.strip() for s, t in zip(src, tgt)):
        raise DataError(f"{cfg.data.train if isinstance(cfg.data.train, str) else 'data.train'}"
                        f".{{{cfg.data.src_lang},{cfg.data.tgt_lang}}}: no non-empty sentence pairs to train on")
    if seen > size:
        log.info("tokenizer: training on a sample of %d of %d pairs (tokenizer.sample_size)", size, seen)
    if cfg.data.src_prefix_tag:
        src = tag_sources(src, cfg.data.tgt_lang)
    return src, tgt


# ---------------------------------------------------------------------------------------
# Encoding and filtering


@dataclass(frozen=True)
class Filters:
    max_src_len: int | None
    max_tgt_len: int | None
    max_len_ratio: float | None
    drop_identical: bool
    tag_lang: str | None  # data.src_prefix_tag: the target language whose tag starts each source


@dataclass
class Counts:
    read: int = 0
    kept: int = 0
    empty: int = 0
    identical: int = 0
    too_long: int = 0
    ratio: int = 0
    invalid_utf8: int = 0

    def add(self, other: "Counts") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


def encode_chunk(pairs: Sequence[tuple[str, str]], src_tok: Tokenizer, tgt_tok: Tokenizer,
                 filters: Filters) -> tuple[list[list[int]], list[list[int]], Counts]:
    """Encode pairs and drop, counting each: empty pairs, pairs whose source equals their
    target, pairs over the length limits and pairs over the length ratio."""
    src_text = [s for s, _ in pairs]
    if filters.tag_lang is not None:
        src_text = tag_sources(src_text, filters.tag_lang)
    src_ids = src_tok.encode_batch(src_text)
    tgt_ids = tgt_tok.encode_batch([t for _, t in pairs])
    counts = Counts(read=len(pairs))
    keep_src, keep_tgt = [], []
    f = filters
    for (src, tgt), s, t in zip(pairs, src_ids, tgt_ids):
        if not s or not t:
            counts.empty += 1
        elif f.drop_identical and src.strip() == tgt.strip():
            counts.identical += 1
        elif (f.max_src_len is not None and len(s) > f.max_src_len) or \
                (f.max_tgt_len is not None and len(t) > f.max_tgt_len):
            counts.too_long += 1
        elif f.max_len_ratio is not None and max(len(s), len(t)) > f.max_len_ratio * min(len(s), len(t)):
            counts.ratio += 1
        else:
            keep_src.append(s)
            keep_tgt.append(t)
    counts.kept = len(keep_src)
    return keep_src, keep_tgt, counts


def describe(counts: Counts, filters: Filters, name: str) -> str:
    """The log line of what the filters dropped."""
    text = (f"{name}: dropped {counts.empty} empty pairs and {counts.too_long} pairs over the length limit "
            f"({filters.max_src_len}/{filters.max_tgt_len} pieces); {counts.kept} remain")
    extra = [f"{counts.identical} with the source identical to the target"] if counts.identical else []
    if counts.ratio:
        extra.append(f"{counts.ratio} over data.max_len_ratio={filters.max_len_ratio}")
    return text + (f" (also dropped: {', '.join(extra)})" if extra else "")


# Each worker process of data.num_workers loads the tokenizers once.
_worker: dict = {}


def _start_worker(files: tuple, filters: Filters) -> None:
    (src_model, src_kept), (tgt_model, tgt_kept) = files
    _worker.update(src=Tokenizer(src_model, src_kept), tgt=Tokenizer(tgt_model, tgt_kept), filters=filters)


def _encode_in_worker(pairs: list[tuple[str, str]]):
    return encode_chunk(pairs, _worker["src"], _worker["tgt"], _worker["filters"])


# ---------------------------------------------------------------------------------------
# Writing and reading


def _typecode(largest: int, codes: str) -> str:
    for code in codes:
        if largest < 1 << (8 * array(code).itemsize - (code.islower())):
            return code
    raise ValueError(largest)


_DTYPES = {"B": torch.uint8, "H": torch.uint16, "h": torch.int16, "i": torch.int32}


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def fingerprint(cfg: Config, tokenizer_files: Sequence[Path]) -> dict:
    """Everything the store's content depends on: the input files (path, size, modification
    time), the tokenizer files' content and the settings that encode and filter."""
    d = cfg.data
    inputs = []
    for corpus in corpora(cfg):
        for lang in (d.src_lang, d.tgt_lang):
            path = Path(f"{corpus.prefix}.{lang}")
            stat = path.stat() if path.exists() else None
            inputs.append([str(path.resolve()), stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return {"version": STORE_VERSION, "inputs": inputs,
            "tokenizers": [_file_hash(Path(f)) for f in tokenizer_files],
            "settings": {k: getattr(d, k) for k in ("src_lang", "tgt_lang", "max_src_len", "max_tgt_len",
                                                    "max_len_ratio", "drop_identical", "src_prefix_tag",
                                                    "skip_invalid_utf8")}}


def store_dir(cfg: Config, run_dir: Path, fp: dict) -> Path:
    """RUN_DIR/prepared, or under data.cache_dir one directory per fingerprint (runs share it)."""
    if cfg.data.cache_dir is None:
        return run_dir / "prepared"
    key = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cfg.data.cache_dir) / f"prepared-{key}"


@dataclass
class Store:
    """A prepared store opened for reading; the same `lengths` and `pair` as ParallelData."""
    directory: Path
    meta: dict
    src_lens: torch.Tensor
    tgt_lens: torch.Tensor
    _fds: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, directory: Path) -> "Store":
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        lens = [torch.frombuffer(bytearray((directory / f"{side}.len").read_bytes()) or bytearray(1),
                                 dtype=_DTYPES[meta["len_type"]])[:meta["pairs"]] for side in ("src", "tgt")]
        return cls(directory, meta, *lens)

    def __len__(self) -> int:
        return self.meta["pairs"]

    def lengths(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.src_lens, self.tgt_lens

    def _read(self, name: str, size: int, offset: int) -> bytes:
        # Opened lazily, so that a Store can be handed to another process before its first read.
        key = (os.getpid(), name)
        if key not in self._fds:
            self._fds[key] = os.open(self.directory / name, os.O_RDONLY)
        return os.pread(self._fds[key], size, offset)

    def _ids(self, side: str, i: int) -> list[int]:
        start, end = struct.unpack("<2q", self._read(f"{side}.off", 16, 8 * i))
        code = self.meta["id_type"]
        width = array(code).itemsize
        return array(code, self._read(f"{side}.ids", (end - start) * width, start * width)).tolist()

    def pair(self, i: int) -> tuple[list[int], list[int]]:
        return self._ids("src", i), self._ids("tgt", i)

    def corpus_ranges(self) -> list[tuple[int, int]]:
        """[start, end) of each corpus's pairs: corpora are stored one after another."""
        ranges, start = [], 0
        for c in self.meta["corpora"]:
            ranges.append((start, start + c["kept"]))
            start += c["kept"]
        return ranges


class _Writer:
    """Appends encoded pairs to the store's files in `directory`."""

    def __init__(self, directory: Path, id_code: str, len_code: str):
        self.directory, self.id_code, self.len_code = directory, id_code, len_code
        self.files = {name: open(directory / name, "wb") for name in
                      ("src.ids", "tgt.ids", "src.off", "tgt.off", "src.len", "tgt.len")}
        self.offsets = {"src": 0, "tgt": 0}
        for side in ("src", "tgt"):
            self.files[f"{side}.off"].write(struct.pack("<q", 0))

    def write(self, side: str, seqs: list[list[int]]) -> None:
        ids, offs, lens = array(self.id_code), array("q"), array(self.len_code)
        for s in seqs:
            ids.extend(s)
            self.offsets[side] += len(s)
            offs.append(self.offsets[side])
            lens.append(len(s))
        self.files[f"{side}.ids"].write(ids.tobytes())
        self.files[f"{side}.off"].write(offs.tobytes())
        self.files[f"{side}.len"].write(lens.tobytes())

    def close(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()


def prepare_store(cfg: Config, directory: Path, src_tok: Tokenizer, tgt_tok: Tokenizer, fp: dict, *,
                  quiet: bool = False) -> Store:
    """Stream every training corpus once, encode and filter it, and write the store into
    `directory` (replacing what is there). Progress goes to the log (and a bar on a terminal)."""
    d = cfg.data
    filters = Filters(d.max_src_len, d.max_tgt_len, d.max_len_ratio, d.drop_identical,
                      d.tgt_lang if d.src_prefix_tag else None)
    id_code = _typecode(max(len(src_tok), len(tgt_tok)) - 1, "Hi")
    len_code = _typecode(max(d.max_src_len, d.max_tgt_len), "Bhi")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp{os.getpid()}"
    for stale in directory.parent.glob(f".{directory.name}.tmp*"):  # left by a killed prepare
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    pool = None
    try:
        writer = _Writer(tmp, id_code, len_code)
        if d.num_workers > 1:
            files = ((src_tok.path, src_tok.kept), (tgt_tok.path, tgt_tok.kept))
            pool = multiprocessing.get_context("spawn").Pool(d.num_workers, _start_worker, (files, filters))
        total, per_corpus = Counts(), []
        show_bar = not quiet and sys.stderr.isatty()
        start = time.perf_counter()
        bar = tqdm(disable=not show_bar, unit=" pairs", desc="preparing", dynamic_ncols=True, leave=False)
        for corpus in corpora(cfg):
            counts, skipped = Counts(), SkippedLines()
            chunks = groups(corpus_pairs(cfg, corpus, skipped), CHUNK)
            results = (pool.imap(_encode_in_worker, chunks) if pool is not None else
                       (encode_chunk(chunk, src_tok, tgt_tok, filters) for chunk in chunks))
            for src_ids, tgt_ids, chunk_counts in results:
                writer.write("src", src_ids)
                writer.write("tgt", tgt_ids)
                counts.add(chunk_counts)
                bar.update(chunk_counts.read)
                if (total.read + counts.read) // 1_000_000 > (total.read + counts.read - chunk_counts.read) // 1_000_000:
                    log.info("prepare: %s pairs read (%.0f pairs/s)", f"{total.read + counts.read:,}",
                             (total.read + counts.read) / (time.perf_counter() - start))
            counts.invalid_utf8 = skipped.pairs
            name = f"{corpus.prefix}.{{{d.src_lang},{d.tgt_lang}}}"
            if skipped.pairs:
                log.warning("skipped %d pairs with invalid UTF-8 (%s.%s: %d lines, %s.%s: %d lines)", skipped.pairs,
                            corpus.prefix, d.src_lang, skipped.src, corpus.prefix, d.tgt_lang, skipped.tgt)
            if counts.empty or counts.too_long or counts.identical or counts.ratio:
                log.info("%s", describe(counts, filters, name))
            if not counts.kept:
                raise DataError(f"{name}: no sentence pairs left after dropping {counts.empty} empty and "
                                f"{counts.too_long} over-long pairs"
                                + (f" ({counts.identical} identical, {counts.ratio} over the length ratio)"
                                   if counts.identical or counts.ratio else ""))
            per_corpus.append({"prefix": corpus.prefix, **asdict(counts)})
            total.add(counts)
        bar.close()
        writer.close()
        meta = {"fingerprint": fp, "pairs": total.kept, "id_type": id_code, "len_type": len_code,
                "corpora": per_corpus, "counts": asdict(total)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
        seconds = time.perf_counter() - start
        log.info("prepared %s of %s pairs into %s in %.0f s (%.0f pairs/s)", f"{total.kept:,}", f"{total.read:,}",
                 directory, seconds, total.read / max(seconds, 1e-9))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TrainingError(f"{directory.parent}: the disk is full while writing the prepared store; free "
                                f"space there or set data.cache_dir to a directory on a larger disk") from None
        raise
    finally:
        if pool is not None:
            pool.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return Store.open(directory)


def _stored_fingerprint(meta_file: Path) -> dict | None:
    try:
        return json.loads(meta_file.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError):
        return None


def open_or_prepare(cfg: Config, run_dir: Path, src_tok: Tokenizer, tgt_tok: Tokenizer,
                    tokenizer_files: Sequence[Path], *, prepare: bool, quiet: bool = False) -> Store:
    """The run's store: reused when its fingerprint matches, otherwise (re)built when `prepare`
    (the process that may write; the others wait for it and then open what it wrote)."""
    fp = fingerprint(cfg, tokenizer_files)
    directory = store_dir(cfg, run_dir, fp)
    meta_file = directory / "meta.json"
    while not prepare and not (meta_file.is_file() and _stored_fingerprint(meta_file) == fp):
        # Another process prepares it; polling the disk has no time limit, unlike a barrier.
        time.sleep(1.0)
    if meta_file.is_file():
        stored = _stored_fingerprint(meta_file)
        if stored == fp:
            store = Store.open(directory)
            log.info("data: using the prepared store %s (%s pairs)", directory, f"{len(store):,}")
            return store
        if prepare:
            changed = [k for k in fp if stored is None or stored.get(k) != fp[k]]
            log.info("data: the prepared store %s is out of date (%s changed); preparing it again", directory,
                     ", ".join(changed) or "format")
    return prepare_store(cfg, directory, src_tok, tgt_tok, fp, quiet=quiet)


def epoch_pool(store: Store, weights: Sequence[float], *, seed: int, epoch: int) -> torch.Tensor | None:
    """The pairs an epoch draws when data.train lists several corpora: as many pairs as the
    corpora hold together, shared among them in proportion to their weights (a corpus drawn more
    often than its size repeats, one drawn less gives a different random part each epoch). None
    with a single corpus: every pair once."""
    ranges = store.corpus_ranges()
    if len(ranges) == 1:
        return None
    total = sum(end - start for start, end in ranges)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    parts = []
    for (start, end), weight in zip(ranges, weights):
        want, size = round(total * weight / sum(weights)), end - start
        picks = [torch.randperm(size, generator=g) for _ in range(-(-want // size))]
        parts.append(torch.cat(picks)[:want] + start if picks else torch.zeros(0, dtype=torch.int64))
    return torch.cat(parts)
