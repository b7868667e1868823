"""Encoding sentence pairs and filtering them: the one path that both the prepared store (a chunk
at a time, data.* filters) and pairs held in memory (validation sets, tests, scripts) go through."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Sequence

import numpy as np
import torch

from seq2seq.config import DataConfig, SubwordSampling, TrainCorpus
from seq2seq.errors import DataError
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.data.text import leading_tags, tag_training_sources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    """What encode_pairs drops; None: no limit."""
    max_src_len: int | None
    max_tgt_len: int | None
    max_len_ratio: float | None
    drop_identical: bool
    tag_lang: str | None  # data.src_prefix_tag: the target language whose tag starts each source
    corpus_tag: str | None = None  # data.train[].tag: put before each source of this corpus

    @classmethod
    def for_training(cls, data: DataConfig, corpus: TrainCorpus) -> "Filters":
        """The filters data.* sets for a training corpus."""
        return cls(data.max_src_len, data.max_tgt_len, data.max_len_ratio, data.drop_identical,
                   data.tgt_lang if data.src_prefix_tag else None, corpus.tag)


@dataclass
class Counts:
    """Pairs read, kept, and dropped by each filter (or skipped for invalid UTF-8)."""
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


@dataclass(frozen=True)
class Segmenting:
    """The random segmentations a prepared store holds besides the deterministic one
    (tokenizer.sampling): `copies` of them, drawn with `seed` (training.seed)."""
    alpha: float       # unigram: smoothing; bpe: the dropout probability (SentencePiece's alpha)
    nbest_size: int    # unigram: among how many best segmentations (-1: all); -1 for bpe
    copies: int
    seed: int

    @classmethod
    def from_config(cls, sampling: SubwordSampling, seed: int) -> "Segmenting | None":
        """None when sampling is off."""
        if not sampling.on:
            return None
        if sampling.alpha is not None:
            return cls(sampling.alpha, sampling.nbest_size, sampling.copies, seed)
        return cls(sampling.dropout, -1, sampling.copies, seed)

    def seed_of(self, corpus: int, chunk: int, copy: int, side: int) -> int:
        """The seed of one side of one chunk's copy, from its place in the corpora. (SentencePiece
        repeats a seed's draws within one process only: preparing a store again, or with worker
        processes, draws other segmentations of the same statistics.)"""
        key = self.seed
        for part in (corpus, chunk, copy, side):
            key = (key * 1_000_003 + part + 1) % (1 << 32)
        return key


def encode_pairs(pairs: Sequence[tuple[str, str]], src_tok: Tokenizer, tgt_tok: Tokenizer,
                 filters: Filters) -> tuple[list[list[int]], list[list[int]], Counts]:
    """Encode pairs and drop, counting each: empty pairs, pairs whose source equals their
    target, pairs over the length limits and pairs over the length ratio."""
    src_ids, tgt_ids, counts, _ = encode_chunk(pairs, src_tok, tgt_tok, filters)
    return src_ids, tgt_ids, counts


def source_text(pairs: Sequence[tuple[str, str]], filters: Filters) -> list[str]:
    return tag_training_sources([s for s, _ in pairs], lang=filters.tag_lang, corpus_tag=filters.corpus_tag)


def kept(pairs: Sequence[tuple[str, str]], src_ids: list[list[int]], tgt_ids: list[list[int]], filters: Filters,
         counts: Counts) -> list[int]:
    """The positions of the pairs the filters keep; what they drop is counted in `counts`."""
    keep = []
    f = filters
    for n, ((src, tgt), s, t) in enumerate(zip(pairs, src_ids, tgt_ids)):
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
            keep.append(n)
    return keep


def encode_chunk(pairs: Sequence[tuple[str, str]], src_tok: Tokenizer, tgt_tok: Tokenizer, filters: Filters,
                 segmenting: Segmenting | None = None, place: tuple[int, int] = (0, 0)):
    """encode_pairs, and with `segmenting` its random segmentations of the kept pairs: per copy
    (src ids, tgt ids). Which pairs are kept is decided on the deterministic segmentation, so
    every copy holds the same pairs; a random segmentation longer than data.max_*_len is
    replaced by the deterministic one. `place`: (corpus, chunk), which seeds the copies."""
    src_text = source_text(pairs, filters)
    src_ids = src_tok.encode_batch(src_text)
    tgt_ids = tgt_tok.encode_batch([t for _, t in pairs])
    counts = Counts(read=len(pairs))
    keep = kept(pairs, src_ids, tgt_ids, filters, counts)
    counts.kept = len(keep)
    src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
    copies = []
    if segmenting is not None:
        # Tags are cut as always (a unigram model's sampling could split them); the text after them at random.
        tags, src_text = zip(*(leading_tags(src_text[i]) for i in keep)) if keep else ((), ())
        tag_ids = {t: src_tok.encode(" ".join(t)) if t else [] for t in set(map(tuple, tags))}
        prefixes = [tag_ids[tuple(t)] for t in tags]
        for copy in range(segmenting.copies):
            sides = []
            for side, (tok, text, before, fixed, limit) in enumerate((
                    (src_tok, src_text, prefixes, src_ids, filters.max_src_len),
                    (tgt_tok, [pairs[i][1] for i in keep], [[]] * len(keep), tgt_ids, filters.max_tgt_len))):
                drawn = tok.sample_batch(text, alpha=segmenting.alpha, nbest_size=segmenting.nbest_size,
                                         seed=segmenting.seed_of(*place, copy, side))
                drawn = [b + d for b, d in zip(before, drawn)]
                sides.append([d if limit is None or len(d) <= limit else f for d, f in zip(drawn, fixed)])
            copies.append(tuple(sides))
    return src_ids, tgt_ids, counts, copies


def describe(counts: Counts, filters: Filters, name: str) -> str:
    """The log line of what the filters dropped."""
    text = (f"{name}: dropped {counts.empty} empty pairs and {counts.too_long} pairs over the length limit "
            f"({filters.max_src_len}/{filters.max_tgt_len} pieces); {counts.kept} remain")
    extra = [f"{counts.identical} with the source identical to the target"] if counts.identical else []
    if counts.ratio:
        extra.append(f"{counts.ratio} over data.max_len_ratio={filters.max_len_ratio}")
    return text + (f" (also dropped: {', '.join(extra)})" if extra else "")


def report(counts: Counts, filters: Filters, name: str) -> None:
    """Log what the filters dropped (if anything); nothing left at all is a DataError."""
    if counts.empty or counts.too_long or counts.identical or counts.ratio:
        log.info("%s", describe(counts, filters, name))
    if not counts.kept:
        raise DataError(f"{name}: no sentence pairs left after dropping {counts.empty} empty and "
                        f"{counts.too_long} over-long pairs"
                        + (f" ({counts.identical} identical, {counts.ratio} over the length ratio)"
                           if counts.identical or counts.ratio else ""))


@dataclass
class ParallelData:
    """Encoded sentence pairs held in memory (validation sets, tests); target ids carry neither
    BOS nor EOS. A prepared store (format.Store) offers the same `lengths` and `pair`."""
    src: list[list[int]]
    tgt: list[list[int]]

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Source and target lengths in pieces, (len(self),) each."""
        return (torch.tensor([len(s) for s in self.src], dtype=torch.int32),
                torch.tensor([len(t) for t in self.tgt], dtype=torch.int32))

    def pair(self, i: int) -> tuple[list[int], list[int]]:
        return self.src[i], self.tgt[i]

    def ids(self, side: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The ids of pairs `indices` (n,) on `side`, one pair after another (total,), and their lengths (n,)."""
        rows = [(self.src if side == "src" else self.tgt)[i] for i in indices.tolist()]
        return (torch.tensor(list(chain.from_iterable(rows)), dtype=torch.long),
                torch.tensor([len(r) for r in rows], dtype=torch.long))


def encode_parallel(src_lines: Sequence[str], tgt_lines: Sequence[str], src_tok: Tokenizer, tgt_tok: Tokenizer,
                    *, max_src_len: int | None = None, max_tgt_len: int | None = None,
                    name: str = "data") -> ParallelData:
    """Encode pairs into memory, dropping empty pairs and (when limits are given) over-long ones,
    with counts logged; sources are taken as given (tagged by the caller where needed)."""
    filters = Filters(max_src_len, max_tgt_len, max_len_ratio=None, drop_identical=False, tag_lang=None)
    src, tgt, counts = encode_pairs(list(zip(src_lines, tgt_lines)), src_tok, tgt_tok, filters)
    report(counts, filters, name)
    return ParallelData(src, tgt)
