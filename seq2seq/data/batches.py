"""Batches: length-bucketed, token-budgeted groups of pair indices, cut from lengths alone and
held as arrays (a corpus of millions of pairs costs a few bytes a pair, not a Python list each),
and the padded tensors of one batch."""
from __future__ import annotations

import random
from array import array
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence, TypeVar

import torch

from ..tokenizer import BOS, EOS, PAD

T = TypeVar("T")

# Pairs are bucketed this many at a time (after shuffling), so the sort's scratch memory stays
# bounded; a corpus up to this size is bucketed in one piece.
POOL = 1 << 20


class Pairs(Protocol):
    """Encoded pairs: ParallelData in memory, or a prepared Store on disk."""

    def __len__(self) -> int: ...

    def lengths(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def pair(self, i: int) -> tuple[list[int], list[int]]: ...


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


def make_batch(data: Pairs, indices: Sequence[int]) -> Batch:
    pairs = [data.pair(i) for i in indices]
    return Batch(
        src=pad([s for s, _ in pairs]),
        src_lengths=torch.tensor([len(s) for s, _ in pairs], dtype=torch.long),
        tgt_in=pad([[BOS] + t for _, t in pairs]),
        tgt_out=pad([t + [EOS] for _, t in pairs]),
        indices=list(indices),
    )


class BatchPlan:
    """The batches of one pass: batch k holds order[starts[ids[k]]:starts[ids[k] + 1]]."""

    def __init__(self, order: torch.Tensor, starts: array, ids: array, buffer: array | None = None):
        self.order, self.starts, self.ids = order, starts, ids
        self._buffer = buffer  # the memory `order` lives in

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> list[int]:
        b = self.ids[k]
        return self.order[self.starts[b]:self.starts[b + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        return (self[k] for k in range(len(self)))

    def share(self, rank: int, world_size: int) -> "BatchPlan":
        """Every world_size-th batch from `rank` on, after dropping the last len % world_size
        batches: equal counts on every rank keep collective operations in step."""
        usable = len(self.ids) - len(self.ids) % world_size
        return BatchPlan(self.order, self.starts, self.ids[rank:usable:world_size], self._buffer)


def _cut(order: torch.Tensor, src_lens: torch.Tensor, tgt_lens: torch.Tensor, batch_tokens: int | None,
         batch_size: int | None, starts: array, offset: int) -> None:
    """Append to `starts` where batches begin in `order` (sorted by length): a batch takes pairs
    while it holds at most batch_size of them and sentences * longest side <= batch_tokens."""
    sizes = torch.maximum(src_lens[order], tgt_lens[order]).tolist()
    count = longest = 0
    for n, size in enumerate(sizes):
        new_longest = max(longest, size)
        too_many = batch_size is not None and count + 1 > batch_size
        too_big = batch_tokens is not None and new_longest * (count + 1) > batch_tokens
        if count and (too_many or too_big):
            starts.append(offset + n)
            count, new_longest = 0, size
        count += 1
        longest = new_longest


def plan_batches(src_lens: torch.Tensor, tgt_lens: torch.Tensor, *, batch_tokens: int | None,
                 batch_size: int | None, shuffle: bool, seed: int = 0, pool: torch.Tensor | None = None,
                 tgt_extra: int = 0) -> BatchPlan:
    """Group pair indices (all of them, or those in `pool`) into batches of similar length.

    A batch holds at most `batch_size` pairs and, when `batch_tokens` is set, at most that many
    tokens counted as pairs * longest side (padding included). Every index appears in exactly
    one batch. With `shuffle`, ties in length are broken at random and the batch order is
    shuffled, both from `seed`, so a seed always gives the same batches. `tgt_extra` is added to
    every target length (BOS/EOS), pool by pool, so that no full-size copy of the lengths is made."""
    rng = random.Random(seed)
    n = len(src_lens) if pool is None else len(pool)
    # 4 bytes a pair: the one array that grows with the corpus
    order = array("i", range(n)) if pool is None else array("i", bytes(4 * n))
    if pool is not None and n:
        torch.frombuffer(order, dtype=torch.int32).copy_(pool)
    if shuffle:
        rng.shuffle(order)  # random tie-breaking among equal lengths (the sort is stable)
    order_t = torch.frombuffer(order, dtype=torch.int32) if n else torch.zeros(0, dtype=torch.int32)
    longest_src = int(src_lens.max()) + 1 if len(src_lens) else 1
    starts = array("q")
    for begin in range(0, n, POOL):
        part = order_t[begin:begin + POOL]
        src = src_lens[part].to(torch.int64)
        tgt = tgt_lens[part].to(torch.int64) + tgt_extra
        by_length = torch.sort(tgt * longest_src + src, stable=True).indices
        order_t[begin:begin + POOL] = part[by_length]
        starts.append(begin)
        _cut(by_length, src, tgt, batch_tokens, batch_size, starts, begin)
    starts.append(n)
    ids = array("q", range(len(starts) - 1))
    if shuffle:
        rng.shuffle(ids)
    return BatchPlan(order_t, starts, ids, order)


def batch_indices(src_lens: Sequence[int], tgt_lens: Sequence[int], *, batch_tokens: int | None,
                  batch_size: int | None, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """plan_batches over plain lists of lengths, as a list of index lists (small data)."""
    plan = plan_batches(torch.tensor(list(src_lens), dtype=torch.int64),
                        torch.tensor(list(tgt_lens), dtype=torch.int64), batch_tokens=batch_tokens,
                        batch_size=batch_size, shuffle=shuffle, seed=seed)
    return list(plan)


def epoch_batches(data: Pairs, *, batch_tokens: int | None, batch_size: int | None, seed: int, epoch: int,
                  rank: int = 0, world_size: int = 1, pool: torch.Tensor | None = None) -> BatchPlan:
    """The batches of one training epoch (the same for a given seed and epoch); under
    distributed training each rank takes a disjoint, equally long share."""
    src_lens, tgt_lens = data.lengths()
    plan = plan_batches(src_lens, tgt_lens, tgt_extra=1,  # + BOS/EOS
                        batch_tokens=batch_tokens, batch_size=batch_size, shuffle=True,
                        seed=seed * 100_003 + epoch, pool=pool)
    return plan.share(rank, world_size) if world_size > 1 else plan


def groups(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size`, the last one shorter when they run out: the batches of one
    update (training.accum_steps), the pairs of one encoding chunk, the lines of one translate chunk."""
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def iterate_batches(data: Pairs, batches: Sequence[Sequence[int]], start: int = 0) -> Iterator[Batch]:
    for k in range(start, len(batches)):
        yield make_batch(data, batches[k])
