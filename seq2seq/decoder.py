"""Attention decoder with explicit state, stepped one target position at a time.

The decoder never keeps state inside the module: `step` takes a DecoderState and returns a
new one, and search reorders states with `select`. Teacher-forced training runs the same
step function, but computes everything that does not depend on the recurrence (embeddings
and their share of the first layer's gates, the output layer) for all positions at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .attention import build_attention
from .encoder import EncoderOutput
from .recurrence import StepLinear
from .tokenizer import PAD


@dataclass
class Memory:
    """What the decoder attends to; fixed for a sentence."""
    states: torch.Tensor  # (batch, src_len, memory_size) encoder outputs
    keys: torch.Tensor    # (batch, src_len, key_size) states as projected by the attention
    mask: torch.Tensor    # (batch, src_len) True at real tokens

    def select(self, index: torch.Tensor) -> "Memory":
        return Memory(self.states.index_select(0, index), self.keys.index_select(0, index),
                      self.mask.index_select(0, index))


@dataclass
class DecoderState:
    h: tuple[torch.Tensor, ...]            # per layer (batch, hidden)
    c: Optional[tuple[torch.Tensor, ...]]  # per layer (batch, hidden); LSTM only
    feed: Optional[torch.Tensor]           # (batch, hidden) last attentional vector (input feeding)

    def select(self, index: torch.Tensor) -> "DecoderState":
        pick = lambda ts: None if ts is None else tuple(t.index_select(0, index) for t in ts)  # noqa: E731
        return DecoderState(pick(self.h), pick(self.c),
                            None if self.feed is None else self.feed.index_select(0, index))


class Decoder(nn.Module):
    def __init__(self, *, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int, cell: str,
                 attention: str, memory_size: int, input_feeding: bool, init: str, dropout: float):
        super().__init__()
        self.cell_type = cell
        self.emb_size = emb_size
        self.hidden_size = hidden_size
        self.input_feeding = input_feeding
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=PAD)
        cell_cls = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]
        first_input = emb_size + (hidden_size if input_feeding else 0)
        # The cells only hold the weights (same layout as torch's); the step does the math,
        # so that the embedding share of the first layer can be computed for all steps at once.
        self.cells = nn.ModuleList(
            [cell_cls(first_input if i == 0 else hidden_size, hidden_size) for i in range(num_layers)])
        self.attention = build_attention(attention, query_size=hidden_size, key_size=memory_size)
        self.combine = nn.Linear(hidden_size + memory_size, hidden_size)
        self.output = nn.Linear(hidden_size, vocab_size)
        self.dropout = nn.Dropout(dropout)
        self.bridge_h = nn.Linear(memory_size, num_layers * hidden_size) if init == "bridge" else None
        self.bridge_c = (nn.Linear(memory_size, num_layers * hidden_size)
                         if init == "bridge" and cell == "lstm" else None)
        self.step_products: Optional[nn.ModuleDict] = None  # see prepare_inference

    # -- set-up per sentence --------------------------------------------------------------

    def make_memory(self, enc: EncoderOutput) -> Memory:
        return Memory(enc.states, self.attention.project_keys(enc.states), enc.mask)

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        batch, layers = enc.states.size(0), len(self.cells)
        if self.bridge_h is not None:
            h = torch.tanh(self.bridge_h(enc.final_h)).chunk(layers, dim=-1)
            c = None
            if self.cell_type == "lstm":
                source = enc.final_c if enc.final_c is not None else enc.final_h
                c = torch.tanh(self.bridge_c(source)).chunk(layers, dim=-1)
        else:
            zeros = enc.states.new_zeros(batch, self.hidden_size)
            h = (zeros,) * layers
            c = (zeros,) * layers if self.cell_type == "lstm" else None
        feed = enc.states.new_zeros(batch, self.hidden_size) if self.input_feeding else None
        return DecoderState(tuple(h), None if c is None else tuple(c), feed)

    # -- one step ---------------------------------------------------------------------------

    def _embed_gates(self, tokens: torch.Tensor) -> torch.Tensor:
        """The embedding's share of the first layer's gates, with the biases that can be
        folded in: (..., gates * hidden)."""
        emb = self.dropout(self.embed(tokens))
        cell = self.cells[0]
        bias = cell.bias_ih + cell.bias_hh if self.cell_type == "lstm" else cell.bias_ih
        return F.linear(emb, cell.weight_ih[:, :self.emb_size], bias)

    def _step_weights(self) -> list:
        """Per layer, the (weight, bias) pairs of its per-step products: for an LSTM one product
        of [input, h] with [W_ih, W_hh] and None; for a GRU the input product (None without an
        input) and the recurrent one."""
        lstm = self.cell_type == "lstm"
        layers = []
        for i, cell in enumerate(self.cells):
            w_in = cell.weight_ih[:, self.emb_size:] if i == 0 else cell.weight_ih
            has_input = i > 0 or self.input_feeding
            if lstm:
                # An LSTM adds its input and recurrent products, so one product of the
                # concatenated [input, h] with [W_ih, W_hh] does both.
                weight = torch.cat([w_in, cell.weight_hh], dim=1) if has_input else cell.weight_hh
                layers.append(((weight, None if i == 0 else cell.bias_ih + cell.bias_hh), None))
            else:
                w_input = (w_in, None if i == 0 else cell.bias_ih) if has_input else None
                layers.append((w_input, (cell.weight_hh, cell.bias_hh)))
        return layers

    def prepare_inference(self) -> None:
        """Build the per-step products once, as nn.Linear modules, for a model that from now on
        only decodes: the LSTM's weight concatenation is then not redone at every step, and int8
        quantization (which swaps whole nn.Linear modules) reaches the recurrent cell as well.
        Later changes to the cell weights are not seen by decoding."""
        def linear(pair):
            weight, bias = pair
            module = nn.Linear(weight.size(1), weight.size(0), bias=bias is not None,
                               device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                module.weight.copy_(weight)
                if bias is not None:
                    module.bias.copy_(bias)
            return module.requires_grad_(False)

        with torch.no_grad():
            self.step_products = nn.ModuleDict({f"{i}{side}": linear(pair)
                                                for i, pairs in enumerate(self._step_weights())
                                                for side, pair in zip("ab", pairs) if pair is not None})

    def _step_ops(self) -> "_StepOps":
        """The per-step matrix products of one forward pass (see recurrence.StepLinear)."""
        query_proj = getattr(self.attention, "query_proj", None)
        decoding = not torch.is_grad_enabled()
        products = self.step_products if decoding else None
        if products is not None:
            layers = [tuple(products[f"{i}{side}"] if f"{i}{side}" in products else None for side in "ab")
                      for i in range(len(self.cells))]
        else:
            layers = [tuple(None if pair is None else StepLinear(*pair) for pair in pairs)
                      for pairs in self._step_weights()]
        if decoding:
            # Decoding calls the modules themselves, which may be swapped for int8 ones.
            return _StepOps(layers=layers, query=query_proj, combine=self.combine)
        return _StepOps(layers=layers, query=StepLinear(query_proj.weight) if query_proj is not None else None,
                        combine=StepLinear(self.combine.weight, self.combine.bias))

    def _advance(self, emb_gates: torch.Tensor, state: DecoderState, memory: Memory, ops: "_StepOps"):
        """One decoder step from precomputed embedding gates (batch, gates * hidden)."""
        new_h, new_c = [], []
        for layer, (w_a, w_b) in enumerate(ops.layers):
            x = state.feed if layer == 0 else self.dropout(new_h[-1])  # feed is None without input feeding
            h_prev = state.h[layer]
            if self.cell_type == "lstm":
                gates = w_a(h_prev if x is None else torch.cat([x, h_prev], dim=-1))
                if layer == 0:
                    gates = gates + emb_gates
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * state.c[layer] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                new_c.append(c)
            else:
                gi = emb_gates if layer == 0 else 0
                if w_a is not None:
                    gi = gi + w_a(x)
                gh = w_b(h_prev)
                i_r, i_z, i_n = gi.chunk(3, dim=-1)
                h_r, h_z, h_n = gh.chunk(3, dim=-1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                # lerp wants one dtype; under autocast the state may still be float32
                h = torch.lerp(n, h_prev.to(n.dtype), z.to(n.dtype))
            new_h.append(h)
        query = new_h[-1]  # (batch, hidden)
        projected = ops.query(query) if ops.query is not None else query
        context, weights = self.attention.attend(projected, memory.keys, memory.states, memory.mask)
        att = self.dropout(torch.tanh(ops.combine(torch.cat([query, context], dim=-1))))  # (batch, hidden)
        new_state = DecoderState(tuple(new_h), tuple(new_c) if self.cell_type == "lstm" else None,
                                 att if self.input_feeding else None)
        return att, new_state, weights

    def step(self, prev: torch.Tensor, state: DecoderState, memory: Memory):
        """prev: (batch,) last tokens -> log-probs (batch, vocab), new state, attention (batch, src_len)."""
        att, state, weights = self._advance(self._embed_gates(prev), state, memory, self._step_ops())
        return torch.log_softmax(self.output(att), dim=-1), state, weights

    def forward(self, tgt_in: torch.Tensor, state: DecoderState, memory: Memory) -> torch.Tensor:
        """Teacher forcing: tgt_in (batch, tgt_len) -> logits (batch, tgt_len, vocab)."""
        emb_gates = self._embed_gates(tgt_in)  # (batch, tgt_len, gates * hidden), all steps at once
        ops = self._step_ops()
        outputs = []
        # unbind, not emb_gates[:, t]: the backward of each indexing would zero-fill a buffer of
        # all steps' size at every step; unbind's backward stacks the step gradients once.
        for gates in emb_gates.unbind(1):
            att, state, _ = self._advance(gates, state, memory, ops)
            outputs.append(att)
        return self.output(torch.stack(outputs, dim=1))  # one projection for all steps


@dataclass
class _StepOps:
    layers: list       # per layer: (input or [input, h] product, recurrent product or None)
    query: Optional[Callable]    # StepLinear when training, the module itself when decoding
    combine: Callable
