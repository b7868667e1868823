"""Recurrent encoder over source pieces, run with torch's fused (packed) RNN kernels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .tokenizer import PAD


@dataclass
class EncoderOutput:
    states: torch.Tensor            # (batch, src_len, directions * hidden) top-layer outputs, zero at padding
    final_h: torch.Tensor           # (batch, directions * hidden) top layer's last hidden state
    final_c: Optional[torch.Tensor]  # (batch, directions * hidden) LSTM cell state; None for GRU
    mask: torch.Tensor              # (batch, src_len) True at real tokens


class Encoder(nn.Module):
    """Embeds the source and runs a (bi)directional LSTM or GRU over it.

    `hidden_size` is per direction: a bidirectional encoder's outputs have 2 * hidden_size units.
    """

    def __init__(self, *, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int,
                 cell: str, bidirectional: bool, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=PAD)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(emb_size, hidden_size, num_layers=num_layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """src: (batch, src_len) ids; src_lengths: (batch,) on CPU."""
        emb = self.dropout(self.embed(src))  # (batch, src_len, emb)
        packed = pack_padded_sequence(emb, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        states = self.dropout(states)  # (batch, src_len, directions * hidden)
        h, c = final if isinstance(final, tuple) else (final, None)
        return EncoderOutput(states=states, final_h=self._top_layer(h),
                             final_c=None if c is None else self._top_layer(c), mask=src != PAD)

    def _top_layer(self, state: torch.Tensor) -> torch.Tensor:
        # (layers * directions, batch, hidden) -> (batch, directions * hidden) of the top layer
        top = state[-self.num_directions:]
        return torch.cat(list(top), dim=-1)
