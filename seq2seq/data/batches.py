"""Batches: length-bucketed, token-budgeted groups of pair indices, cut from lengths alone and
held as arrays (a corpus of millions of pairs costs a few bytes a pair, not a Python list each),
and the padded tensors of one batch."""
from __future__ import annotations

import queue
import random
import threading
from array import array
from dataclasses import dataclass
from itertools import chain
from typing import Iterable, Iterator, Protocol, Sequence, TypeVar

import numpy as np
import torch

from seq2seq.data.tokenizer import BOS, EOS, PAD

T = TypeVar("T")

# Pairs are bucketed this many at a time (after shuffling), so the sort's scratch memory stays
# bounded; a corpus up to this size is bucketed in one piece.
POOL = 1 << 20


class Pairs(Protocol):
    """Encoded pairs: ParallelData in memory, or a prepared Store on disk."""

    def __len__(self) -> int: ...

    def lengths(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def pair(self, i: int) -> tuple[list[int], list[int]]: ...

    def ids(self, side: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The ids of pairs `indices` (n,) on `side` ("src" or "tgt"), one pair after another
        (total,), and their lengths (n,), both int64."""
        ...


@dataclass
class Batch:
    """Padded tensors for one batch, batch first."""
    src: torch.Tensor        # (batch, src_len) piece ids, PAD-filled
    src_lengths: torch.Tensor  # (batch,) on CPU, as packing wants
    tgt_in: torch.Tensor     # (batch, tgt_len + 1) BOS + target
    tgt_out: torch.Tensor    # (batch, tgt_len + 1) target + EOS
    indices: list[int]       # positions of these pairs in the dataset
    # Target tokens, EOS included: counted on the host when the batch is made, so that a
    # training update never reads it back from the device.
    num_tgt_tokens: int

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.src.to(device, non_blocking=True), self.src_lengths,
                     self.tgt_in.to(device, non_blocking=True), self.tgt_out.to(device, non_blocking=True),
                     self.indices, self.num_tgt_tokens)

    def pin_memory(self) -> "Batch":
        """The same batch in page-locked memory, so that .to(cuda) copies without blocking."""
        return Batch(self.src.pin_memory(), self.src_lengths, self.tgt_in.pin_memory(), self.tgt_out.pin_memory(),
                     self.indices, self.num_tgt_tokens)


def pad_flat(flat: torch.Tensor, lengths: torch.Tensor, *, bos: bool = False, eos: bool = False) -> torch.Tensor:
    """Sequences stored one after another, flat (sum(lengths),) with lengths (n,), as one
    PAD-filled (n, longest + bos + eos) tensor, with BOS before and/or EOS after each."""
    n = lengths.numel()
    width = (int(lengths.max()) if n else 0) + bos + eos
    out = torch.full((n, width), PAD, dtype=torch.long)
    columns = torch.arange(width)
    # Row-major order of the mask is the order of the flat ids.
    out[(columns >= bos) & (columns < lengths.unsqueeze(1) + bos)] = flat
    if bos:
        out[:, 0] = BOS
    if eos:
        out[torch.arange(n), lengths + bos] = EOS
    return out


def pad(seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Stack id lists into a (len(seqs), longest) tensor filled with PAD."""
    flat = torch.tensor(list(chain.from_iterable(seqs)), dtype=torch.long)
    return pad_flat(flat, torch.tensor([len(s) for s in seqs], dtype=torch.long))


def make_batch(data: Pairs, indices: Sequence[int]) -> Batch:
    """The padded batch of pairs `indices`: each field built as one tensor from the pairs' ids."""
    index = np.asarray(indices, dtype=np.int64)
    src, src_lengths = data.ids("src", index)
    tgt, tgt_lengths = data.ids("tgt", index)
    return Batch(
        src=pad_flat(src, src_lengths),
        src_lengths=src_lengths,
        tgt_in=pad_flat(tgt, tgt_lengths, bos=True),
        tgt_out=pad_flat(tgt, tgt_lengths, eos=True),
        indices=index.tolist(),
        num_tgt_tokens=int(tgt_lengths.sum()) + len(index),
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


_END = object()  # the end of a prefetched stream


class Prefetcher:
    """Iterates `items` in a background thread, at most `ahead` items in front of the loop that
    consumes them, so that building the next batches overlaps the current update. The items and
    their order are exactly the iterator's own; an error raised while building surfaces in the
    consumer. Use as a context manager: leaving it stops the thread, even mid-stream."""

    def __init__(self, items: Iterable[T], *, ahead: int = 2, pin: bool = False):
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._pin = pin
        self._thread = threading.Thread(target=self._fill, args=(iter(items),), name="batches", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, items: Iterator) -> None:
        try:
            for item in items:
                if self._pin:  # page-locked, so that the copy to the GPU does not block
                    item = [b.pin_memory() for b in item] if isinstance(item, list) else item.pin_memory()
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as e:  # handed to the consumer, which raises it
            self._put((_END, e))

    def __iter__(self):
        while True:
            item, error = self._queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
