"""Greedy and beam search, batched over sentences and beams.

Written only against the step contract `StepModel` (start, step, and `select` on memory and
state), so the PyTorch model's decoding object (decoding.py), an ensemble and an exported model
are searched alike. Sentences that finish leave the batch, so no work is spent on them
afterwards. `translate_ids` searches lists of source ids in length-sorted batches: validation
and `translate` both decode through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, TypeVar

import torch

from .data import pad
from .precision import autocast
from .tokenizer import BOS, EOS


T = TypeVar("T", bound="Selectable")


class Selectable(Protocol):
    """Memory or state of a batch of rows, which search reorders (and repeats) by row."""

    def select(self: T, index: torch.Tensor) -> T:
        """The rows `index` (n,), in that order."""
        ...


M = TypeVar("M", bound=Selectable)
S = TypeVar("S", bound=Selectable)


class StepModel(Protocol[M, S]):
    """What search needs of a model: it encodes a batch once, then scores one next piece at a time.

    memory, state = model.start(src, src_lengths)
    log_probs, state, attention = model.step(prev, state, memory)
    memory.select(index), state.select(index)
    """

    @property
    def device(self) -> torch.device:
        """Where the inputs go; the outputs come back as torch tensors on it."""
        ...

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[M, S]:
        """src (batch, src_len) padded ids, src_lengths (batch,) on CPU -> memory, first state."""
        ...

    def step(self, prev: torch.Tensor, state: S, memory: M) -> tuple[torch.Tensor, S, torch.Tensor]:
        """prev (batch,) last pieces -> log-probs (batch, vocab), next state, attention (batch, src_len)."""
        ...


@dataclass
class Hypothesis:
    tokens: list[int]   # output pieces, without BOS and EOS
    score: float        # log-probability divided by the length penalty
    log_prob: float     # summed log-probability, EOS included
    # Only with return_attention: (len(tokens) + 1, src_len) weights of every step, EOS included.
    attention: Optional[torch.Tensor] = None


def length_penalty(length: int | torch.Tensor, alpha: float):
    """GNMT length penalty ((5 + length) / 6) ** alpha; length counts EOS."""
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(src_lengths: torch.Tensor, ratio: float, offset: int) -> torch.Tensor:
    """Most output pieces (EOS included) allowed per sentence: ratio * source + offset."""
    return (src_lengths.float() * ratio).long() + offset


@torch.no_grad()
def greedy_search(model: StepModel, src: torch.Tensor, src_lengths: torch.Tensor, *, max_lengths: torch.Tensor,
                  alpha: float = 0.0, return_attention: bool = False) -> list[list[Hypothesis]]:
    """Pick the most likely piece at every step. Returns one hypothesis per sentence (with its
    attention weights when `return_attention`)."""
    batch = src.size(0)
    device = src.device
    memory, state = model.start(src, src_lengths)
    max_lengths = max_lengths.to(device)
    steps = int(max_lengths.max())
    tokens = torch.full((batch, steps), EOS, dtype=torch.long, device=device)
    log_probs = torch.zeros(batch, device=device)
    lengths = torch.full((batch,), steps, dtype=torch.long, device=device)
    active = torch.arange(batch, device=device)  # original rows still decoding
    prev = torch.full((batch,), BOS, dtype=torch.long, device=device)
    attention = src.new_zeros((batch, steps, src.size(1)), dtype=torch.float) if return_attention else None
    for t in range(steps):
        lp, state, attn = model.step(prev, state, memory)  # (active, vocab)
        if attention is not None:
            attention[active, t] = attn.float()
        best = lp.argmax(dim=-1)
        best = torch.where(t >= max_lengths[active] - 1, torch.full_like(best, EOS), best)
        log_probs[active] += lp.gather(1, best.unsqueeze(1)).squeeze(1)
        tokens[active, t] = best
        done = best == EOS
        if done.any():
            lengths[active[done]] = t + 1
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            active, best = active[keep], best[keep]
            memory, state = memory.select(keep), state.select(keep)
        prev = best
    results = []
    for i, (row, length, total) in enumerate(zip(tokens.tolist(), lengths.tolist(), log_probs.tolist())):
        hyp = Hypothesis(row[:length - 1], total / length_penalty(length, alpha), total)
        if attention is not None:
            hyp.attention = attention[i, :length, :int(src_lengths[i])].cpu()
        results.append([hyp])
    return results


def best_candidates(scores: torch.Tensor, lp: torch.Tensor, count: int, block: int = 64):
    """The `count` best extensions scores[i, b] + lp[i, b, v] of each sentence i over its beams b
    and pieces v, best first, as (score, beam, piece), each (n, count).

    Equal to a topk over the (n, beams * vocab) sum, without forming that sum: a candidate
    among the best `count` lies in a block of `block` pieces whose maximum is among the best
    `count` block maxima (otherwise `count` blocks would each hold a better candidate). So only
    the block maxima (one cheap pass) and those blocks' pieces are added and ranked; building
    and ranking the whole sum was a fifth of int8 beam search."""
    n, k, vocab = lp.shape
    whole = vocab - vocab % block
    maxima = lp[..., :whole].reshape(n, k, whole // block, block).amax(-1)
    if whole < vocab:  # the last, shorter block
        maxima = torch.cat([maxima, lp[..., whole:].amax(-1, keepdim=True)], dim=-1)
    blocks = maxima.size(-1)
    best_blocks = (scores.unsqueeze(-1) + maxima).view(n, k * blocks).topk(min(count, k * blocks), dim=-1).indices
    beam = best_blocks // blocks  # (n, m)
    piece = (best_blocks % blocks).unsqueeze(-1) * block + torch.arange(block, device=lp.device)  # (n, m, block)
    outside = piece >= vocab  # past the end of the last block
    piece = piece.clamp(max=vocab - 1)
    values = lp.reshape(n, k * vocab).gather(1, (beam.unsqueeze(-1) * vocab + piece).view(n, -1)).view(piece.shape)
    values = (values + scores.gather(1, beam).unsqueeze(-1)).masked_fill(outside, float("-inf"))
    top, index = values.view(n, -1).topk(count, dim=-1)
    return top, beam.gather(1, index // block), piece.view(n, -1).gather(1, index)


@torch.no_grad()
def beam_search(model: StepModel, src: torch.Tensor, src_lengths: torch.Tensor, *, beam_size: int,
                max_lengths: torch.Tensor, alpha: float = 1.0, nbest: int = 1,
                return_attention: bool = False) -> list[list[Hypothesis]]:
    """Beam search with a GNMT length penalty. Returns the `nbest` best hypotheses per sentence,
    best first, ranked by log-probability / length_penalty. Live beams are ranked by raw
    log-probability; a sentence stops as soon as its best candidate ends, when no live
    beam can beat its finished ones any more, or at its maximum length (EOS is forced).
    With `return_attention`, each hypothesis carries the attention weights of its own path."""
    if nbest > beam_size:
        raise ValueError(f"nbest ({nbest}) cannot exceed beam_size ({beam_size})")
    batch, k = src.size(0), beam_size
    device = src.device
    memory, state = model.start(src, src_lengths)
    expand = torch.arange(batch, device=device).repeat_interleave(k)
    memory, state = memory.select(expand), state.select(expand)
    max_lengths = max_lengths.to(device)
    active = torch.arange(batch, device=device)  # original sentence of each active row group
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand at step 0
    prev = torch.full((batch * k,), BOS, dtype=torch.long, device=device)
    history = torch.empty((batch * k, 0), dtype=torch.long, device=device)
    # Per live beam, the attention of every step so far; reordered with history. None when off,
    # so the search does no extra work.
    attn_history = (torch.empty((batch * k, 0, src.size(1)), device=device) if return_attention else None)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for t in range(int(max_lengths.max())):
        n = active.numel()
        lp, state, attn = model.step(prev, state, memory)
        if attn_history is not None:
            attn_history = torch.cat([attn_history, attn.float().unsqueeze(1)], dim=1)  # (n * k, t + 1, src_len)
        vocab = lp.size(-1)
        lp = lp.view(n, k, vocab)
        forced = t >= max_lengths[active] - 1  # (n,) sentences that must end now
        if forced.any():
            only_eos = torch.full((vocab,), float("-inf"), device=device)
            only_eos[EOS] = 0.0
            lp = torch.where(forced.view(n, 1, 1), lp + only_eos, lp)
        top_scores, parent, token = best_candidates(scores, lp, min(2 * k, k * vocab))  # (n, 2k) each
        is_eos = token == EOS

        # EOS among the k best candidates ends a hypothesis.
        ended = is_eos[:, :k] & torch.isfinite(top_scores[:, :k])
        if ended.any():
            for i, j in ended.nonzero().tolist():
                sent = finished[int(active[i])]
                total = float(top_scores[i, j])
                row = i * k + int(parent[i, j])
                seq = history[row].tolist()
                sent.append(Hypothesis(seq, total / length_penalty(len(seq) + 1, alpha), total))
                if attn_history is not None:
                    source = int(src_lengths[int(active[i])])
                    sent[-1].attention = attn_history[row, :, :source].cpu()

        # The k best candidates that did not end continue (EOS ones rank last).
        width = top_scores.size(1)
        rank = is_eos.long() * width + torch.arange(width, device=device)
        pick = rank.topk(k, dim=-1, largest=False).indices  # (n, k), in score order
        new_scores = top_scores.gather(1, pick).masked_fill(is_eos.gather(1, pick), float("-inf"))
        new_parent = parent.gather(1, pick) + (torch.arange(n, device=device) * k).unsqueeze(1)
        new_token = token.gather(1, pick)

        # A sentence is done when its best candidate was EOS (the best path is complete), or
        # when it holds k finished hypotheses and no live one can still beat the best of them:
        # a live score can only fall, and the length penalty divides it by at most lp(max).
        counts = torch.tensor([len(finished[s]) for s in active.tolist()], device=device)
        best_done = torch.tensor([max((h.score for h in finished[s]), default=float("-inf"))
                                  for s in active.tolist()], device=device)
        bound = new_scores[:, 0] / length_penalty(max_lengths[active].float(), alpha)
        done = forced | (is_eos[:, 0] & (counts >= nbest)) | ((counts >= k) & (best_done >= bound))
        keep = (~done).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        rows = new_parent[keep].reshape(-1)  # (kept * k,) parent rows of the surviving beams
        history = torch.cat([history[rows], new_token[keep].reshape(-1, 1)], dim=1)
        if attn_history is not None:
            attn_history = attn_history[rows]
        state = state.select(rows)
        if keep.numel() < n:
            memory = memory.select((keep.unsqueeze(1) * k + torch.arange(k, device=device)).reshape(-1))
        scores, active = new_scores[keep], active[keep]
        prev = new_token[keep].reshape(-1)
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def translate_ids(model: StepModel, src_ids: Sequence[Sequence[int]], *, beam_size: int, batch_size: int,
                  alpha: float, max_len_ratio: float, max_len_offset: int, nbest: int = 1,
                  return_attention: bool = False, precision: str = "fp32") -> list[list[Hypothesis]]:
    """Search every source; results come back in input order. Empty sources give an empty
    hypothesis without running the model. The model's products run in `precision` (under
    torch's autocast on model.device)."""
    device = model.device
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in src_ids]
    # Sorting by length keeps padding (and wasted work) low inside a batch.
    order = sorted((i for i, s in enumerate(src_ids) if len(s) > 0), key=lambda i: len(src_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        src = pad([src_ids[i] for i in chunk]).to(device)
        lengths = torch.tensor([len(src_ids[i]) for i in chunk])
        max_lengths = max_output_lengths(lengths, max_len_ratio, max_len_offset)
        with autocast(precision, device):
            if beam_size == 1 and nbest == 1:
                hyps = greedy_search(model, src, lengths, max_lengths=max_lengths, alpha=alpha,
                                     return_attention=return_attention)
            else:
                hyps = beam_search(model, src, lengths, beam_size=beam_size, max_lengths=max_lengths,
                                   alpha=alpha, nbest=nbest, return_attention=return_attention)
        for i, h in zip(chunk, hyps):
            results[i] = h
    return results
