"""Word dropout (Marian's --dropout-src / --dropout-trg): in training, whole embeddings are zeroed at
random positions, so the model learns not to lean on any single piece of its input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.data.tokenizer import PAD


class WordDropout(nn.Module):
    """Zeroes each non-padding position's whole embedding with probability `p` in training (the
    kept ones scaled by 1 / (1 - p), as dropout does); padding and evaluation pass through."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, emb: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """emb (batch, len, emb_size) of tokens (batch, len) -> the same shape."""
        if not self.training or self.p == 0:
            return emb  # no draw at all: the random streams stay as they were without it
        keep = F.dropout(emb.new_ones(*tokens.shape, 1), self.p)  # (batch, len, 1): 0 or 1 / (1 - p)
        # Padding is left exactly as it is: its embedding is the zero row and its states are masked anyway.
        return emb * keep.masked_fill((tokens == PAD).unsqueeze(-1), 1.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"
