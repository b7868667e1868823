"""Attention over encoder states: additive (Bahdanau/MLP), dot and general (Luong).

Each variant splits its work in two: `project_keys` runs once per source sentence, and
`forward` runs once per decoder step, so nothing that depends only on the source is
recomputed at every step. `attend` is `forward` after the query projection (`query_proj`,
None when there is none), for callers that project queries themselves.
"""
from __future__ import annotations

import torch
from torch import nn


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Padding gets exactly zero weight, whatever its states hold.
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


class AdditiveAttention(nn.Module):
    """score(q, k) = v . tanh(W_q q + W_k k)"""

    def __init__(self, *, query_size: int, key_size: int, attn_size: int):
        super().__init__()
        self.key_proj = nn.Linear(key_size, attn_size, bias=False)
        self.query_proj = nn.Linear(query_size, attn_size, bias=False)
        self.v = nn.Linear(attn_size, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key_proj(keys)  # (batch, src_len, attn)

    def attend(self, projected_query: torch.Tensor, proj_keys: torch.Tensor, values: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """projected_query (batch, attn) -> context (batch, value_size), weights (batch, src_len)."""
        hidden = torch.tanh(proj_keys + projected_query.unsqueeze(1))  # (batch, src_len, attn)
        weights = _masked_softmax(self.v(hidden).squeeze(-1), mask)
        return torch.bmm(weights.unsqueeze(1), values).squeeze(1), weights

    def forward(self, query, proj_keys, values, mask):
        """query (batch, query_size) -> context (batch, value_size), weights (batch, src_len)."""
        return self.attend(self.query_proj(query), proj_keys, values, mask)


class DotAttention(nn.Module):
    """score(q, k) = q . k (query and key sizes must match)"""

    query_proj = None  # the query is used as it is

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return keys

    def attend(self, query, proj_keys, values, mask):
        scores = torch.bmm(proj_keys, query.unsqueeze(2)).squeeze(2)  # (batch, src_len)
        weights = _masked_softmax(scores, mask)
        return torch.bmm(weights.unsqueeze(1), values).squeeze(1), weights

    def forward(self, query, proj_keys, values, mask):
        """query (batch, query_size) -> context (batch, value_size), weights (batch, src_len)."""
        return self.attend(query, proj_keys, values, mask)


class GeneralAttention(DotAttention):
    """score(q, k) = q . W k, with W k computed once per sentence"""

    def __init__(self, *, query_size: int, key_size: int):
        super().__init__()
        self.key_proj = nn.Linear(key_size, query_size, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key_proj(keys)  # (batch, src_len, query_size)


def build_attention(kind: str, *, query_size: int, key_size: int) -> nn.Module:
    if kind == "additive":
        return AdditiveAttention(query_size=query_size, key_size=key_size, attn_size=query_size)
    if kind == "general":
        return GeneralAttention(query_size=query_size, key_size=key_size)
    if kind == "dot":
        if query_size != key_size:
            raise ValueError(f"dot attention needs equal query and key sizes, got {query_size} and {key_size}")
        return DotAttention()
    raise ValueError(f"unknown attention {kind!r}")
