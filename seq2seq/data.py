"""Parallel text: read and check files, encode, filter by length, and cut length-bucketed
batches within a token budget."""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .errors import DataError
from .tokenizer import BOS, EOS, PAD, Tokenizer

log = logging.getLogger(__name__)


def read_lines(path: str | Path, *, skip_invalid_utf8: bool = False) -> tuple[list[str], list[int]]:
    """Lines of a UTF-8 text file without their line ends, and the 1-based numbers of
    lines that were not UTF-8 (only when skipping them; otherwise that is an error)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    lines, bad = [], []
    # Split on \n only: a stray \r or U+2028 inside a line must not shift the pairing.
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            if not skip_invalid_utf8:
                raise DataError(f"{path}:{number}: not valid UTF-8 (byte {e.start}); "
                                "fix the file or set data.skip_invalid_utf8: true") from None
            bad.append(number)
            text = None
        lines.append(text.rstrip("\r") if text is not None else None)
    if raw.endswith(b"\n"):
        lines.pop()  # the empty string after the final newline is not a line
    return lines, bad


def read_parallel(src_path: str | Path, tgt_path: str | Path, *,
                  skip_invalid_utf8: bool = False) -> tuple[list[str], list[str]]:
    """Read two line-aligned files; different line counts are an error."""
    src, src_bad = read_lines(src_path, skip_invalid_utf8=skip_invalid_utf8)
    tgt, tgt_bad = read_lines(tgt_path, skip_invalid_utf8=skip_invalid_utf8)
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
                        "parallel files must have one line per sentence pair")
    if src_bad or tgt_bad:
        log.warning("skipped %d pairs with invalid UTF-8 (%s: %d lines, %s: %d lines)",
                    len(set(src_bad) | set(tgt_bad)), src_path, len(src_bad), tgt_path, len(tgt_bad))
        keep = [i for i in range(len(src)) if src[i] is not None and tgt[i] is not None]
        src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    return src, tgt


@dataclass
class ParallelData:
    """Encoded sentence pairs; target ids carry neither BOS nor EOS."""
    src: list[list[int]]
    tgt: list[list[int]]

    def __len__(self) -> int:
        return len(self.src)


def encode_parallel(src_lines: Sequence[str], tgt_lines: Sequence[str], src_tok: Tokenizer, tgt_tok: Tokenizer,
                    *, max_src_len: int | None = None, max_tgt_len: int | None = None,
                    name: str = "data") -> ParallelData:
    """Encode pairs, dropping empty pairs and (when limits are given) over-long ones, with counts logged."""
    src_ids = src_tok.encode_batch(src_lines)
    tgt_ids = tgt_tok.encode_batch(tgt_lines)
    keep_src, keep_tgt = [], []
    empty = too_long = 0
    for s, t in zip(src_ids, tgt_ids):
        if not s or not t:
            empty += 1
        elif (max_src_len is not None and len(s) > max_src_len) or (max_tgt_len is not None and len(t) > max_tgt_len):
            too_long += 1
        else:
            keep_src.append(s)
            keep_tgt.append(t)
    if empty or too_long:
        log.info("%s: dropped %d empty pairs and %d pairs over the length limit (%s/%s pieces); %d remain",
                 name, empty, too_long, max_src_len, max_tgt_len, len(keep_src))
    if not keep_src:
        raise DataError(f"{name}: no sentence pairs left after dropping {empty} empty and {too_long} over-long pairs")
    return ParallelData(keep_src, keep_tgt)


@dataclass
class Batch:
    """Padded tensors for one batch, batch first."""
    src: torch.Tensor        # (batch, src_len) piece ids, PAD-filled
    src_lengths: torch.Tensor  # (batch,) on CPU, as packing wants
    tgt_in: torch.Tensor     # (batch, tgt_len + 1) BOS + target
    tgt_out: torch.Tensor    # (batch, tgt_len + 1) target + EOS
    indices: list[int]       # positions of these pairs in the dataset

    @property
    def num_tgt_tokens(self) -> int:
        return int((self.tgt_out != PAD).sum())

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.src.to(device, non_blocking=True), self.src_lengths,
                     self.tgt_in.to(device, non_blocking=True), self.tgt_out.to(device, non_blocking=True),
                     self.indices)


def pad(seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Stack id lists into a (len(seqs), longest) tensor filled with PAD."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def make_batch(data: ParallelData, indices: Sequence[int]) -> Batch:
    src = [data.src[i] for i in indices]
    tgt = [data.tgt[i] for i in indices]
    return Batch(
        src=pad(src),
        src_lengths=torch.tensor([len(s) for s in src], dtype=torch.long),
        tgt_in=pad([[BOS] + t for t in tgt]),
        tgt_out=pad([t + [EOS] for t in tgt]),
        indices=list(indices),
    )


def batch_indices(src_lens: Sequence[int], tgt_lens: Sequence[int], *, batch_tokens: int | None,
                  batch_size: int | None, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Group sentence indices into batches of similar length.

    A batch holds at most `batch_size` sentences and, when `batch_tokens` is set, at most that
    many tokens counted as sentences * longest side (padding included). Every index appears in
    exactly one batch. With `shuffle`, ties in length are broken at random and the batch order
    is shuffled, both from `seed`, so a (seed, epoch) pair always gives the same batches.
    """
    rng = random.Random(seed)
    order = list(range(len(src_lens)))
    if shuffle:
        rng.shuffle(order)  # random tie-breaking among equal lengths (sort is stable)
    order.sort(key=lambda i: (tgt_lens[i], src_lens[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        size = max(src_lens[i], tgt_lens[i])
        new_longest = max(longest, size)
        too_many = batch_size is not None and len(current) + 1 > batch_size
        too_big = batch_tokens is not None and new_longest * (len(current) + 1) > batch_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current, new_longest = [], size
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


def epoch_batches(data: ParallelData, *, batch_tokens: int | None, batch_size: int | None,
                  seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """The batches of one training epoch (the same for a given seed and epoch); under
    distributed training each rank takes a disjoint, equally long share."""
    src_lens = [len(s) for s in data.src]
    tgt_lens = [len(t) + 1 for t in data.tgt]  # + BOS/EOS
    batches = batch_indices(src_lens, tgt_lens, batch_tokens=batch_tokens, batch_size=batch_size,
                            shuffle=True, seed=seed * 100_003 + epoch)
    if world_size > 1:
        usable = len(batches) - len(batches) % world_size  # equal counts keep collective ops in step
        batches = batches[rank:usable:world_size]
    return batches


def iterate_batches(data: ParallelData, batches: Sequence[Sequence[int]], start: int = 0) -> Iterator[Batch]:
    for indices in batches[start:]:
        yield make_batch(data, indices)


TAG_PATTERN = re.compile(r"<2[^<>\s]+>")


def target_tag(lang: str) -> str:
    """The source prefix that asks a multilingual model for target language `lang`."""
    return f"<2{lang}>"


def tag_sources(lines: Sequence[str], tgt_lang: str) -> list[str]:
    """Prefix every source with <2TGT_LANG>, except those that already start with a tag
    (and empty ones, which stay empty)."""
    tag = target_tag(tgt_lang)
    return [line if TAG_PATTERN.match(line) or not line.strip() else f"{tag} {line}" for line in lines]


def tags_in(lines: Sequence[str]) -> list[str]:
    """The distinct language tags that start lines, sorted (they must become single pieces)."""
    return sorted({m.group(0) for m in map(TAG_PATTERN.match, lines) if m})


def encode_sources(lines: Sequence[str], src_tok: Tokenizer, *, max_len: int,
                   tgt_lang: str | None = None) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Source lines as the model reads them, for validation and `translate` alike: stripped,
    tagged with <2TGT_LANG> when `tgt_lang` is given (data.src_prefix_tag), encoded and cut to
    `max_len` pieces. Returns the ids and (index, pieces) of each line that was cut."""
    lines = [line.strip() for line in lines]
    if tgt_lang is not None:
        lines = tag_sources(lines, tgt_lang)
    ids = src_tok.encode_batch(lines)
    cut = [(n, len(s)) for n, s in enumerate(ids) if len(s) > max_len]
    for n, _ in cut:
        ids[n] = ids[n][:max_len]
    return ids, cut


def detokenize(tgt_tok: Tokenizer, ids: Sequence[int]) -> str:
    """Output ids as text. A translation is one line, whatever pieces the model produced (no
    \\r, U+2028, ... either), so line n of the output is always line n of the input."""
    return " ".join(tgt_tok.decode(ids).splitlines())
