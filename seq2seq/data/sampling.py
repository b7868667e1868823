"""Drawing from the training data: a seeded sample streamed from the corpora in one pass (what
SentencePiece trains on; a fine-tuning parent's share of a joint vocabulary), and the pairs each
epoch draws from weighted corpora."""
from __future__ import annotations

import logging
import random
from itertools import chain
from typing import Iterable, Sequence, TypeVar

import torch

from seq2seq.config import DataConfig
from seq2seq.errors import DataError
from seq2seq.data.format import Store
from seq2seq.data.text import describe_train, stream_corpus, tag_training_sources

log = logging.getLogger(__name__)

T = TypeVar("T")


def reservoir(items: Iterable[T], size: int, rng: random.Random) -> tuple[list[T], int]:
    """Up to `size` items drawn uniformly from a stream in one pass, in stream order, and how many
    items the stream had. Memory holds `size` items however long the stream (reservoir sampling);
    a stream of at most `size` items is taken whole, drawing nothing from `rng`."""
    kept: list[tuple[int, T]] = []
    seen = 0
    for item in items:
        if len(kept) < size:
            kept.append((seen, item))
        else:
            j = rng.randrange(seen + 1)  # item number `seen` stays with chance size / (seen + 1)
            if j < size:
                kept[j] = (seen, item)
        seen += 1
    kept.sort(key=lambda k: k[0])
    return [item for _, item in kept], seen


def sample_pairs(data: DataConfig, size: int, seed: int) -> tuple[list[str], list[str], int]:
    """Up to `size` pairs of data.train drawn uniformly (random.Random(seed)) while streaming every
    corpus once, in corpus order, sources tagged as training tags them; and how many pairs the
    corpora hold."""
    pairs = chain.from_iterable(((c, s, t) for s, t in stream_corpus(data, corpus))
                                for c, corpus in enumerate(data.train))
    kept, seen = reservoir(pairs, size, random.Random(seed))
    lang = data.tgt_lang if data.src_prefix_tag else None
    src = [tag_training_sources([s], lang=lang, corpus_tag=data.train[c].tag)[0] for c, s, _ in kept]
    return src, [t for _, _, t in kept], seen


def tokenizer_sample(data: DataConfig, *, size: int, seed: int) -> tuple[list[str], list[str]]:
    """What SentencePiece trains on: up to `size` (tokenizer.sample_size) training pairs drawn
    with `seed` (training.seed) by sample_pairs. A corpus that fits is taken whole."""
    src, tgt, seen = sample_pairs(data, size, seed)
    if not any(s.strip() and t.strip() for s, t in zip(src, tgt)):
        raise DataError(f"{describe_train(data)}: no non-empty sentence pairs to train on")
    if seen > size:
        log.info("tokenizer: training on a sample of %d of %d pairs (tokenizer.sample_size)", size, seen)
    return src, tgt


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
