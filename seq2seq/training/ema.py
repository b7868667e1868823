"""An exponential moving average of the weights (Marian's exponential smoothing): what
validation, best.pt and the final model use when training.ema_decay is set, while the optimizer
goes on training the weights themselves."""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, *, decay: float, start: int) -> float | None:
    """The decay of the update after `step` updates: None (copy the weights) up to `start`, then
    min(decay, (1 + n) / (10 + n)) for the n-th update after it. The cap lets the average forget
    its first, poorly trained weights quickly: with 0.9999 from the first update, the random
    initialisation would still weigh 0.55 after 6,000 updates."""
    n = step - start
    return None if n <= 0 else min(decay, (1 + n) / (10 + n))


class WeightAverage:
    """A copy of the model whose weights are the moving average of the trained model's."""

    def __init__(self, model: nn.Module, *, decay: float, start: int):
        self.decay, self.start = decay, start
        self.model = copy.deepcopy(model).requires_grad_(False)  # tied weights stay tied in the copy
        self.trained = list(model.parameters())
        self.averaged = list(self.model.parameters())

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the weights after update number `step` (1-based) into the average. Queued on the
        device like the update itself: nothing is read back."""
        decay = ema_decay(step, decay=self.decay, start=self.start)
        if decay is None:
            torch._foreach_copy_(self.averaged, self.trained)
        else:
            torch._foreach_lerp_(self.averaged, self.trained, 1.0 - decay)  # decay * avg + (1 - decay) * w
