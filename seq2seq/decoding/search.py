"""Greedy search, beam search and sampling, batched over sentences and beams.

Written only against the step contract `StepModel` (start, step, and `select` on memory and
state), so the PyTorch model's decoding object (model/step.py), an ensemble and an exported
model are searched alike. Sentences that finish leave the batch, so no work is spent on them
afterwards. `translate_ids` searches lists of source ids in length-sorted batches: validation
and `translate` both decode through it. Sampling's random draws are draws.py's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence, TypeVar

import numpy as np
import torch

from seq2seq.data import pad
from seq2seq.decoding.draws import Sampling, draw, uniform
from seq2seq.model.precision import autocast
from seq2seq.data.tokenizer import BOS, EOS, PAD


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
    """Most output pieces (EOS included) allowed per sentence: ratio * source + offset. The
    search reads them on the model's device; made from lengths on that device, they cost no copy."""
    return (src_lengths.float() * ratio).long() + offset


@torch.no_grad()
def greedy_search(model: StepModel, src: torch.Tensor, src_lengths: torch.Tensor, *, max_lengths: torch.Tensor,
                  alpha: float = 0.0, return_attention: bool = False, cancelled: Stop = None) -> list[list[Hypothesis]]:
    """Pick the most likely piece at every step. Returns one hypothesis per sentence (with its
    attention weights when `return_attention`). One small copy to the host per step (which
    sentences ended) and one for the results."""
    return one_path(model, src, src_lengths, max_lengths=max_lengths, alpha=alpha, return_attention=return_attention,
                    choose=lambda lp, rows, t: lp.argmax(dim=-1), cancelled=cancelled)


@torch.no_grad()
def sample_search(model: StepModel, src: torch.Tensor, src_lengths: torch.Tensor, *, max_lengths: torch.Tensor,
                  line_ids: torch.Tensor, sampling: Sampling, alpha: float = 0.0,
                  return_attention: bool = False, cancelled: Stop = None) -> list[list[Hypothesis]]:
    """Draw every piece from the model's distribution (softmax(log-probs / temperature), among
    the top_k most likely when given). line_ids (batch,): each sentence's number in the input.
    The random number of a draw is a hash of (seed, line number, step), not a generator's
    state, so a sentence's translation does not depend on the batch it is in, on the other
    sentences, or on the device. Scores are the model's log-probabilities of the drawn pieces,
    as greedy's. Host copies as greedy_search."""
    lines = line_ids  # (batch,) on the model's device, as max_lengths

    def choose(lp: torch.Tensor, rows: torch.Tensor, t: int) -> torch.Tensor:
        return draw(lp.float(), uniform(sampling.seed, lines[rows], t), top_k=sampling.top_k,
                    temperature=sampling.temperature)
    return one_path(model, src, src_lengths, max_lengths=max_lengths, alpha=alpha, return_attention=return_attention,
                    choose=choose, cancelled=cancelled)


Choose = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
Stop = Optional[Callable[[], bool]]  # `cancelled`, asked once a step: once true, every sentence ends at the next step


def one_path(model: StepModel, src: torch.Tensor, src_lengths: torch.Tensor, *, max_lengths: torch.Tensor,
             alpha: float, return_attention: bool, choose: Choose, cancelled: Stop = None) -> list[list[Hypothesis]]:
    """One hypothesis per sentence, extended at every step by the piece that `choose`(log-probs
    (active, vocab), the active sentences' rows (active,), step) picks: greedy and sampling."""
    batch = src.size(0)
    device = src.device
    memory, state = model.start(src, src_lengths)
    log_probs = torch.zeros(batch, device=device)
    active = torch.arange(batch, device=device)  # original rows still decoding
    prev = torch.full((batch,), BOS, dtype=torch.long, device=device)
    pieces: list[torch.Tensor] = []     # per step (batch,): the piece of every sentence, EOS once it ended
    attention: list[torch.Tensor] = []  # per step (batch, src_len), with return_attention
    t = 0
    while True:  # every sentence ends by its max length, where EOS is forced
        lp, state, attn = model.step(prev, state, memory)  # (active, vocab)
        best = choose(lp, active, t)
        best = torch.where(t >= max_lengths[active] - 1, torch.full_like(best, EOS), best)
        log_probs[active] += lp.gather(1, best.unsqueeze(1)).squeeze(1)
        pieces.append(torch.full((batch,), EOS, dtype=torch.long, device=device).index_put_((active,), best))
        if return_attention:
            attention.append(src.new_zeros((batch, src.size(1)), dtype=torch.float).index_put_((active,), attn.float()))
        done = best == EOS
        left = to_host(done).tolist().count(False)  # the step's one copy to the host
        if left == 0:
            break
        if cancelled is not None and cancelled():  # EOS is forced next step; the caller drops what comes back
            max_lengths = torch.zeros_like(max_lengths)
        if left < active.numel():
            keep = still_going(done, left)
            active, best = active[keep], best[keep]
            memory, state = memory.select(keep), state.select(keep)
        prev = best
        t += 1
    # One copy of the results: pieces (exact in float32 below 2 ** 24) and summed log-probabilities.
    table = to_host(torch.cat([torch.stack(pieces, dim=1).float(), log_probs.unsqueeze(1)], dim=1))
    weights = to_host(torch.stack(attention, dim=1)) if return_attention else None  # (batch, steps, src_len)
    source = to_host(src_lengths).tolist() if return_attention else None
    results = []
    for i, row in enumerate(table.tolist()):
        total = row.pop()
        length = row.index(EOS) + 1  # EOS included
        hyp = Hypothesis([int(x) for x in row[:length - 1]], total / length_penalty(length, alpha), total)
        if weights is not None:
            hyp.attention = torch.from_numpy(weights[i, :length, :source[i]].copy())
        results.append([hyp])
    return results


def to_host(t: torch.Tensor) -> np.ndarray:
    """The one way search reads a device tensor: a copy to the host (a sync on a GPU)."""
    return t.numpy(force=True)


def still_going(done: torch.Tensor, left: int) -> torch.Tensor:
    """The rows of `done` (n,) that are False, in order, given that there are `left` of them:
    a stable sort puts them first, so no nonzero() has to ask the device how many there are."""
    return torch.sort(done.to(torch.uint8), stable=True).indices[:left]


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
                return_attention: bool = False, cancelled: Stop = None) -> list[list[Hypothesis]]:
    """Beam search with a GNMT length penalty. Returns the `nbest` best hypotheses per sentence,
    best first, ranked by log-probability / length_penalty. Live beams are ranked by raw
    log-probability; a sentence stops as soon as its best candidate ends, when no live
    beam can beat its finished ones any more, or at its maximum length (EOS is forced).
    With `return_attention`, each hypothesis carries the attention weights of its own path.

    Finished counts and best scores stay on the device; every step's candidates are recorded
    there too (`trail`), and the hypotheses are read back from it once at the end. The host
    sees one small tensor per step: which sentences are done."""
    if nbest > beam_size:
        raise ValueError(f"nbest ({nbest}) cannot exceed beam_size ({beam_size})")
    batch, k = src.size(0), beam_size
    device = src.device
    memory, state = _start_beams(model, src, src_lengths, k)
    active = torch.arange(batch, device=device)  # original sentence of each active row group
    scores, counts, best_done, prev = _first_beams(batch, k, device)
    trail: list[torch.Tensor] = []      # per step (batch, k, TRAIL_FIELDS), see _trail_step
    attention: list[torch.Tensor] = []  # per step (batch, k, src_len) of the live beams, with return_attention
    n, t = batch, 0
    while True:  # every sentence ends by its max length, where EOS is forced
        lp, state, attn = model.step(prev, state, memory)
        forced, (top_scores, parent, token) = _candidates(lp, scores, max_lengths, active, t=t, k=k)  # (n, 2k) each
        is_eos = token == EOS
        ended, counts, best_done = _count_endings(top_scores, is_eos, counts, best_done, k=k,
                                                  penalty=length_penalty(t + 1, alpha))
        new_scores, new_slot, new_token = _survivors(top_scores, parent, token, is_eos, k)
        trail.append(_trail_step(ended, top_scores, parent, new_slot, new_token, active, batch=batch, k=k))
        if return_attention:
            attention.append(src.new_zeros((batch, k, src.size(1)), dtype=torch.float).index_put_(
                (active,), attn.float().view(n, k, -1)))
        done = _sentences_done(forced, is_eos, counts, best_done, new_scores, max_lengths, active,
                               k=k, nbest=nbest, alpha=alpha)
        left = to_host(done).tolist().count(False)  # the step's one copy to the host
        if left == 0:
            break
        if cancelled is not None and cancelled():  # EOS is forced next step; the caller drops what comes back
            max_lengths = torch.zeros_like(max_lengths)
        rows = new_slot + (torch.arange(n, device=device) * k).unsqueeze(1)  # (n, k) parent rows of the survivors
        if left < n:
            keep = still_going(done, left)
            rows, new_scores, new_token, active = rows[keep], new_scores[keep], new_token[keep], active[keep]
            counts, best_done = counts[keep], best_done[keep]
            memory = memory.select((keep.unsqueeze(1) * k + torch.arange(k, device=device)).reshape(-1))
        state = state.select(rows.reshape(-1))
        scores, prev, n = new_scores, new_token.reshape(-1), left
        t += 1
    # One copy of the record of all steps (and one of the attention weights when asked for).
    return read_hypotheses(to_host(torch.stack(trail)), alpha=alpha, nbest=nbest,
                           attention=to_host(torch.stack(attention)) if return_attention else None,
                           src_lengths=to_host(src_lengths).tolist() if return_attention else None)


def _start_beams(model: StepModel, src: torch.Tensor, src_lengths: torch.Tensor, k: int):
    """Memory and first state with every sentence's row repeated k times (batch * k rows)."""
    memory, state = model.start(src, src_lengths)
    expand = torch.arange(src.size(0), device=src.device).repeat_interleave(k)
    return memory.select(expand), state.select(expand)


def _first_beams(batch: int, k: int, device: torch.device):
    """Beam scores (batch, k), finished counts (batch,), best finished score (batch,) and the
    first pieces (batch * k,) before step 0."""
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand at step 0
    counts = torch.zeros(batch, dtype=torch.long, device=device)  # finished hypotheses per active sentence
    best_done = torch.full((batch,), float("-inf"), device=device)  # their best score (float32)
    prev = torch.full((batch * k,), BOS, dtype=torch.long, device=device)
    return scores, counts, best_done, prev


def _candidates(lp: torch.Tensor, scores: torch.Tensor, max_lengths: torch.Tensor, active: torch.Tensor, *,
                t: int, k: int):
    """forced (n,), the sentences that must end at step t, and the 2k best extensions (score,
    beam, piece) of each sentence's beams, each (n, 2k); a forced sentence can only add EOS.
    lp (n * k, vocab) are the step's log-probabilities."""
    n, vocab = scores.size(0), lp.size(-1)
    lp = lp.view(n, k, vocab)
    forced = t >= max_lengths[active] - 1  # (n,) sentences that must end now: only EOS is left them
    lp = lp.masked_fill(forced.view(n, 1, 1) & (torch.arange(vocab, device=scores.device) != EOS), float("-inf"))
    return forced, best_candidates(scores, lp, min(2 * k, k * vocab))


def _count_endings(top_scores: torch.Tensor, is_eos: torch.Tensor, counts: torch.Tensor, best_done: torch.Tensor,
                   *, k: int, penalty: float):
    """Which of the k best candidates end a hypothesis, (n, k), and the finished counts and best
    finished scores (n,) with them counted."""
    # EOS among the k best candidates ends a hypothesis of t pieces; its score as Hypothesis.score
    # has it (a float64 division), rounded to float32 as the comparisons in _sentences_done use it.
    ended = is_eos[:, :k] & torch.isfinite(top_scores[:, :k])  # (n, k)
    finished = (top_scores[:, :k].double() / penalty).float()
    counts = counts + ended.sum(dim=1)
    best_done = torch.maximum(best_done, finished.masked_fill(~ended, float("-inf")).amax(dim=1))
    return ended, counts, best_done


def _survivors(top_scores: torch.Tensor, parent: torch.Tensor, token: torch.Tensor, is_eos: torch.Tensor, k: int):
    """The k best candidates that did not end, in score order (EOS ones rank last, and score
    -inf where they fill a place): their scores, beams and pieces, each (n, k)."""
    width = top_scores.size(1)
    rank = is_eos.long() * width + torch.arange(width, device=top_scores.device)
    pick = rank.topk(k, dim=-1, largest=False).indices  # (n, k), in score order
    new_scores = top_scores.gather(1, pick).masked_fill(is_eos.gather(1, pick), float("-inf"))
    new_slot = parent.gather(1, pick)  # (n, k) the beam each survivor extends
    new_token = token.gather(1, pick)
    return new_scores, new_slot, new_token


def _trail_step(ended: torch.Tensor, top_scores: torch.Tensor, parent: torch.Tensor, new_slot: torch.Tensor,
                new_token: torch.Tensor, active: torch.Tensor, *, batch: int, k: int) -> torch.Tensor:
    """One step of the record read_hypotheses reads, (batch, k, TRAIL_FIELDS), zeros in the rows
    of sentences already done."""
    # Kept in float32, exact for pieces below 2 ** 24: ended, score, the ended candidate's
    # beam, and each survivor's beam and piece (the back-pointers the hypotheses are read from).
    record = torch.stack([ended.float(), top_scores[:, :k], parent[:, :k].float(), new_slot.float(),
                          new_token.float()], dim=-1)  # (n, k, TRAIL_FIELDS)
    return top_scores.new_zeros((batch, k, TRAIL_FIELDS)).index_put_((active,), record)


def _sentences_done(forced: torch.Tensor, is_eos: torch.Tensor, counts: torch.Tensor, best_done: torch.Tensor,
                    new_scores: torch.Tensor, max_lengths: torch.Tensor, active: torch.Tensor, *, k: int,
                    nbest: int, alpha: float) -> torch.Tensor:
    """(n,) bool: the sentences whose search ends at this step."""
    # A sentence is done when its best candidate was EOS (the best path is complete), or
    # when it holds k finished hypotheses and no live one can still beat the best of them:
    # a live score can only fall, and the length penalty divides it by at most lp(max).
    bound = new_scores[:, 0] / length_penalty(max_lengths[active].float(), alpha)
    return forced | (is_eos[:, 0] & (counts >= nbest)) | ((counts >= k) & (best_done >= bound))


TRAIL_FIELDS = 5  # ended, score, ended candidate's beam, survivor's beam, survivor's piece


def read_hypotheses(trail: np.ndarray, *, alpha: float, nbest: int, attention: Optional[np.ndarray] = None,
                    src_lengths: Optional[list[int]] = None) -> list[list[Hypothesis]]:
    """The `nbest` best finished hypotheses per sentence from beam search's record `trail`
    (steps, batch, k, TRAIL_FIELDS), each path followed back through the survivors' beams;
    with `attention` (steps, batch, k, src_len) the weights of each path's steps too."""
    steps, batch = trail.shape[:2]
    ended, score, beam, parent, piece = (trail[..., f] for f in range(TRAIL_FIELDS))
    # In the order the hypotheses ended: by step, then by candidate (nonzero's order).
    at, sent, cand = np.nonzero(ended)
    slot = beam[at, sent, cand].astype(np.int64)  # the live beam each hypothesis extended by EOS
    pieces = np.zeros((len(at), steps), dtype=np.int64)
    slots = np.zeros((len(at), steps), dtype=np.int64)  # its path's beam at every step
    slots[np.arange(len(at)), at] = slot
    for u in range(steps - 2, -1, -1):  # back through the steps, every path at once
        on = at > u
        pieces[on, u] = piece[u, sent[on], slot[on]]
        slot[on] = parent[u, sent[on], slot[on]]
        slots[on, u] = slot[on]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for h, (u, i) in enumerate(zip(at.tolist(), sent.tolist())):
        total = float(score[u, i, cand[h]])
        hyp = Hypothesis(pieces[h, :u].tolist(), total / length_penalty(u + 1, alpha), total)
        if attention is not None:
            hyp.attention = torch.from_numpy(attention[np.arange(u + 1), i, slots[h, :u + 1], :src_lengths[i]])
        finished[i].append(hyp)
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def translate_ids(model: StepModel, src_ids: Sequence[Sequence[int]], *, beam_size: int, batch_size: int,
                  alpha: float, max_len_ratio: float, max_len_offset: int, nbest: int = 1,
                  return_attention: bool = False, precision: str = "fp32", sampling: Optional[Sampling] = None,
                  line_ids: Optional[Sequence[int]] = None, cancelled: Stop = None) -> list[list[Hypothesis]]:
    """Search every source; results come back in input order. Empty sources give an empty
    hypothesis without running the model. The model's products run in `precision` (under
    torch's autocast on model.device). With `sampling`, each translation is drawn
    (sample_search; beam_size and nbest must be 1), seeded per sentence by its number in
    `line_ids` (default: its position in `src_ids`). `cancelled`: see Stop."""
    if sampling is not None and (beam_size != 1 or nbest != 1):
        raise ValueError("sampling draws one translation per sentence: beam_size and nbest must be 1")
    lines = torch.tensor(list(line_ids) if line_ids is not None else range(len(src_ids)), dtype=torch.long)
    if len(lines) != len(src_ids):
        raise ValueError(f"line_ids: {len(lines)} numbers for {len(src_ids)} sources")
    device = model.device
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in src_ids]
    # Sorting by length keeps padding (and wasted work) low inside a batch.
    order = sorted((i for i, s in enumerate(src_ids) if len(s) > 0), key=lambda i: len(src_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        src = pad([src_ids[i] for i in chunk]).to(device)
        lengths = torch.tensor([len(src_ids[i]) for i in chunk])
        # Made on the device from the batch itself: a copy of host lengths would make the
        # host wait for the device (a blocking copy) in every batch.
        max_lengths = max_output_lengths((src != PAD).sum(1), max_len_ratio, max_len_offset)
        with autocast(precision, device):
            if sampling is not None:
                hyps = sample_search(model, src, lengths, max_lengths=max_lengths, line_ids=lines[chunk].to(device),
                                     sampling=sampling, alpha=alpha, return_attention=return_attention,
                                     cancelled=cancelled)
            elif beam_size == 1 and nbest == 1:
                hyps = greedy_search(model, src, lengths, max_lengths=max_lengths, alpha=alpha,
                                     return_attention=return_attention, cancelled=cancelled)
            else:
                hyps = beam_search(model, src, lengths, beam_size=beam_size, max_lengths=max_lengths,
                                   alpha=alpha, nbest=nbest, return_attention=return_attention, cancelled=cancelled)
        for i, h in zip(chunk, hyps):
            results[i] = h
    return results
