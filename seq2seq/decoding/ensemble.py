"""Several trained models searched as one: an ensemble behind the decoding contract of
search.py (StepModel: start, step, select), so greedy, beam, n-best, scores and attention work unchanged.

Each step averages the members' probabilities and returns the log of that mean,
log(1/M * sum_m p_m), rather than the mean of their log-probabilities: a piece one member
finds unlikely is not vetoed by it, and the result stays a distribution (each row sums to one),
so scores and length penalties mean what they mean for one model. Attention weights are the
first member's (members may attend differently, or have different attention types).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from seq2seq.decoding.search import Selectable, StepModel


@dataclass
class Members:
    """One value per member (its memory or its decoder state), reordered together."""
    items: list[Selectable]

    def select(self, index: torch.Tensor) -> "Members":
        return Members([item.select(index) for item in self.items])


class Ensemble:
    """Members are step models themselves (decoding objects, exported models, ensembles), all on one device."""

    def __init__(self, models: Sequence[StepModel]):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = list(models)

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Members, Members]:
        """Each member's memory and first state."""
        started = [model.start(src, src_lengths) for model in self.members]
        return Members([m for m, _ in started]), Members([s for _, s in started])

    def step(self, prev: torch.Tensor, state: Members,
             memory: Members) -> tuple[torch.Tensor, Members, torch.Tensor]:
        """prev (batch,) -> log of the members' mean probabilities (batch, vocab), their states, attention."""
        outputs = [model.step(prev, s, m) for model, s, m in zip(self.members, state.items, memory.items)]
        log_probs = torch.stack([lp.float() for lp, _, _ in outputs])  # (members, batch, vocab)
        mean = torch.logsumexp(log_probs, dim=0) - math.log(len(outputs))
        return mean, Members([s for _, s, _ in outputs]), outputs[0][2]
