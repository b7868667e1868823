"""Ancestral sampling's settings and its random draws (translate --sample; `sample_search` in
search.py runs them): each sentence's random number at each step is a hash of (seed, line
number, step), so a draw does not depend on the batch, the other sentences or the device."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class Sampling:
    """Ancestral sampling (translate --sample): each piece drawn from the model's distribution."""
    seed: int = 1                 # with a sentence's line number and the step, it fixes the draw
    top_k: Optional[int] = None   # draw among the k most likely pieces only (None: all)
    temperature: float = 1.0      # log-probabilities are divided by it: above 1 flatter, below 1 sharper


MASK32 = 0xFFFFFFFF
# Odd multipliers below 2 ** 31: a 32-bit value times one stays below 2 ** 63, so the products
# never overflow int64 (whose overflow torch leaves undefined), on any device.
MULTIPLIERS = (0x65009FED, 0x45046391)
# Distinct constants for the parts of a key, so that (line 1, step 2) and (line 2, step 1) differ.
SEED, LINE, LINE_HIGH, STEP = 0x6E355B89, 0x23D83FD1, 0x6F99A26B, 0x73AA561F


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijection of 32-bit values (int64 tensors in [0, 2 ** 32)) that spreads each input bit
    over all output bits: xor-shifts and odd multiplications modulo 2 ** 32."""
    for multiplier in MULTIPLIERS:
        x = x ^ (x >> 16)
        x = (x * multiplier) & MASK32
    return x ^ (x >> 16)


def uniform(seed: int, line_ids: torch.Tensor, step: int) -> torch.Tensor:
    """(n,) float32 numbers in (0, 1), one per sentence of `line_ids` (n,) int64 at `step`: a
    counter-based hash of (seed, line number, step) in integer tensor operations, so the same
    on any device and in any batch."""
    key = mix32(torch.full_like(line_ids, (seed ^ SEED) & MASK32))
    key = mix32(key ^ ((line_ids & MASK32) ^ LINE))
    key = mix32(key ^ (((line_ids >> 32) & MASK32) ^ LINE_HIGH))
    bits = mix32(key ^ ((step & MASK32) ^ STEP)) >> 8  # 24 bits: exact in float32
    return (bits.float() + 0.5) * 2.0 ** -24


def draw(lp: torch.Tensor, u: torch.Tensor, *, top_k: Optional[int], temperature: float) -> torch.Tensor:
    """One piece per row of lp (n, vocab), drawn from softmax(lp / temperature) (among the top_k
    largest): the piece where the cumulative distribution first reaches u (n,), uniform in
    (0, 1). One random number a row, not one a piece as the Gumbel-max trick needs: hashing
    each of 8,000 pieces took 0.9-1.9 times the default model's step at batch 64 on a CPU, this
    0.13 times (docs/measurements/2026-12-04-subword)."""
    pieces = None
    if top_k is not None and top_k < lp.size(-1):
        lp, pieces = lp.topk(top_k, dim=-1)  # (n, top_k)
    scaled = lp if temperature == 1.0 else lp / temperature
    cdf = torch.exp(scaled - scaled.amax(dim=-1, keepdim=True)).cumsum(dim=-1)  # (n, k), unnormalised
    pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).squeeze(1).clamp(max=cdf.size(-1) - 1)
    return pick if pieces is None else pieces.gather(1, pick.unsqueeze(1)).squeeze(1)
