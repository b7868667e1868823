"""Encoding sentence pairs and filtering them: the one path that both the prepared store (a chunk
at a time, data.* filters) and pairs held in memory (validation sets, tests, scripts) go through."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Sequence

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..tokenizer import Tokenizer
from .text import tag_sources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    """What encode_pairs drops; None: no limit."""
    max_src_len: int | None
    max_tgt_len: int | None
    max_len_ratio: float | None
    drop_identical: bool
    tag_lang: str | None  # data.src_prefix_tag: the target language whose tag starts each source

    @classmethod
    def for_training(cls, data: DataConfig) -> "Filters":
        """The filters data.* sets for the training corpora."""
        return cls(data.max_src_len, data.max_tgt_len, data.max_len_ratio, data.drop_identical,
                   data.tgt_lang if data.src_prefix_tag else None)


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


def encode_pairs(pairs: Sequence[tuple[str, str]], src_tok: Tokenizer, tgt_tok: Tokenizer,
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
