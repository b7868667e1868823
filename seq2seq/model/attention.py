"""Attention over encoder states: additive (Bahdanau/MLP), dot and general (Luong).

Each variant splits its work in two: `project_keys` runs once per source sentence, and
`forward` runs once per decoder step, so nothing that depends only on the source is
recomputed at every step. `attend` is `forward` after the query projection (`query_proj`,
None when there is none), for callers that project queries themselves. `StepAttention` is the
same attention for the steps of a teacher-forced training pass, one autograd node a step.
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


class _Attend(torch.autograd.Function):
    """One training step's attention as one autograd node: from the query (batch, query_size) and
    its projection (batch, key_size), [query; context] (batch, query_size + value_size) and the
    weights (batch, src_len). Scores are v . tanh(keys + projected) with `v` (additive), or
    keys . projected without (dot, general); `pad` (batch, src_len) gets zero weight."""

    @staticmethod
    def forward(ctx, query, projected, keys, values, pad, v):
        if v is not None:
            hidden = torch.tanh(keys + projected.unsqueeze(1))  # (batch, src_len, attn)
            scores = hidden.matmul(v.unsqueeze(1)).squeeze(2)  # (a matrix product torch's FLOP counter sees)
        else:
            hidden = None
            scores = keys.bmm(projected.unsqueeze(2)).squeeze(2)  # (batch, src_len)
        weights = torch.softmax(scores.masked_fill_(pad, float("-inf")), dim=-1)
        context = weights.unsqueeze(1).bmm(values).squeeze(1)  # (batch, value_size)
        ctx.save_for_backward(projected, keys, values, weights, hidden, v)
        ctx.set_materialize_grads(False)
        return torch.cat([query, context], dim=-1), weights

    @staticmethod
    def backward(ctx, d_joined, d_weights):
        projected, keys, values, weights, hidden, v = ctx.saved_tensors
        if d_joined is None and d_weights is None:
            return None, None, None, None, None, None
        if d_joined is None:  # only the weights were used
            d_query = d_values = None
            d_w = d_weights.to(weights.dtype)
        else:
            split = d_joined.size(1) - values.size(2)
            d_query, d_context = d_joined[:, :split], d_joined[:, split:].unsqueeze(1)  # (batch, 1, value_size)
            d_w = (values * d_context).sum(-1)
            d_w = d_w if d_weights is None else d_w + d_weights
            d_w = d_w if d_w.dtype == weights.dtype else d_w.to(weights.dtype)
            d_values = weights.unsqueeze(-1) * d_context  # (batch, src_len, value_size)
        d_scores = torch.ops.aten._softmax_backward_data(d_w, weights, -1, weights.dtype).unsqueeze(-1)
        if v is not None:
            d_v = (d_scores * hidden).sum((0, 1))
            d_keys = torch.ops.aten.tanh_backward(d_scores * v, hidden)  # (batch, src_len, attn)
            d_projected = d_keys.sum(1)
        else:
            d_v = None
            d_keys = d_scores * projected.unsqueeze(1)
            d_projected = (d_scores * keys).sum(1)
        return d_query, d_projected, d_keys, d_values, None, d_v


class StepAttention:
    """The attention of every step of one teacher-forced pass as one autograd node a step (the
    same scores as the module's `attend`), for memory of keys (batch, src_len, key_size), values
    (batch, src_len, value_size) and mask (batch, src_len), True at real tokens."""

    def __init__(self, attention: nn.Module, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor):
        self.keys, self.values, self.pad = keys, values, ~mask  # the mask is inverted once, not at every step
        scorer = getattr(attention, "v", None)  # additive attention's score vector; dot and general have none
        v = None if scorer is None else scorer.weight[0]  # (attn,)
        device = keys.device.type
        if v is not None and torch.is_autocast_enabled(device):
            v = v.to(torch.get_autocast_dtype(device))  # cast once per pass, as recurrence.StepLinear does
        self.v = v

    def __call__(self, query: torch.Tensor, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (batch, query_size), its projection -> [query; context], weights (batch, src_len)."""
        return _Attend.apply(query, projected, self.keys, self.values, self.pad, self.v)
