"""Attention decoder with explicit state, trained by teacher forcing.

The decoder never keeps state inside the module: a step takes a DecoderState and returns a
new one, and search reorders states with `select`. Teacher-forced training computes
everything that does not depend on the recurrence (embeddings and their share of the first
layer's gates, the output layer, the attentional vectors' dropout masks) for all positions at
once, and runs each step in few operators: the products through recurrence.StepLinear, each
cell as one autograd node (a fused kernel on CUDA), the attention as one node
(attention.StepAttention). Decoding runs the same cell and attention functions (`lstm_layers`,
`gru_layers`, `attentional_vector`) from its own object, decoding.DecodingModel, with the plain
maths an export traces. A layer-normalized decoder (`layer_norm`) has its own step functions,
`lstm_norm_layers` and `gru_norm_layers`: the normalization needs the input and recurrent
products apart, and the biases after it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.model.attention import StepAttention, build_attention
from seq2seq.model.encoder import EncoderOutput
from seq2seq.model.recurrence import StepLinear, gru_cell, lstm_cell, normalize
from seq2seq.data.tokenizer import PAD
from seq2seq.model.word_dropout import WordDropout

# The per-step products of one layer by name (see Decoder.step_weights): a StepLinear when
# training, an nn.Linear (maybe int8) when decoding.
Products = Mapping[str, Callable[[torch.Tensor], torch.Tensor]]


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


# -- the maths of one step, shared by training and decoding -----------------------------------

def lstm_layers(emb_gates: torch.Tensor, state: DecoderState, layers: Sequence[Products], *,
                dropout: Callable, train: bool) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """LSTM layers of one step from the embedding's gates (batch, 4 * hidden): new h and c per
    layer, each (batch, hidden). A layer's one product "gates" takes [input, h]. `train`: the
    cells' own backward pass (recurrence.lstm_cell)."""
    new_h, new_c = [], []
    for layer, products in enumerate(layers):
        x = state.feed if layer == 0 else dropout(new_h[-1])  # feed is None without input feeding
        h_prev = state.h[layer]
        gates = products["gates"](h_prev if x is None else torch.cat([x, h_prev], dim=-1))
        h, c = lstm_cell(gates, emb_gates if layer == 0 else None, state.c[layer], train=train)
        new_h.append(h)
        new_c.append(c)
    return tuple(new_h), tuple(new_c)


def gru_layers(emb_gates: torch.Tensor, state: DecoderState, layers: Sequence[Products], *,
               dropout: Callable, train: bool) -> tuple[tuple[torch.Tensor, ...], None]:
    """GRU layers of one step from the embedding's gates (batch, 3 * hidden): new h per layer
    (batch, hidden) and no c. A layer's products: "input" (absent for the first layer without
    input feeding) and "hidden". `train` as for lstm_layers."""
    new_h = []
    for layer, products in enumerate(layers):
        x = state.feed if layer == 0 else dropout(new_h[-1])  # feed is None without input feeding
        if x is None:
            gi = emb_gates
        else:
            gi = products["input"](x) if layer > 0 else emb_gates + products["input"](x)
        new_h.append(gru_cell(gi, products["hidden"](state.h[layer]), state.h[layer], train=train))
    return tuple(new_h), None


def _normalized_gates(emb_gates: torch.Tensor, x: Optional[torch.Tensor], h: torch.Tensor, products: Products,
                      first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer-normalized layer's input and recurrent gates (batch, gates * hidden), each
    normalized on its own. The first layer's input is the embedding's share (no bias) plus the
    fed vector's."""
    if first:
        gi = emb_gates if x is None else emb_gates + products["input"](x)
    else:
        gi = products["input"](x)
    return products["norm_input"](gi), products["norm_hidden"](products["hidden"](h))


def lstm_norm_layers(emb_gates: torch.Tensor, state: DecoderState, layers: Sequence[Products], *,
                     dropout: Callable, train: bool) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """lstm_layers for layer-normalized cells. A layer's products: "input" (absent for the first
    layer without input feeding) and "hidden", without biases, and "norm_input" and
    "norm_hidden", the normalizations (recurrence.normalize) with the cell's biases as shifts."""
    new_h, new_c = [], []
    for layer, products in enumerate(layers):
        x = state.feed if layer == 0 else dropout(new_h[-1])
        gi, gh = _normalized_gates(emb_gates, x, state.h[layer], products, layer == 0)
        h, c = lstm_cell(gi, gh, state.c[layer], train=train)
        new_h.append(h)
        new_c.append(c)
    return tuple(new_h), tuple(new_c)


def gru_norm_layers(emb_gates: torch.Tensor, state: DecoderState, layers: Sequence[Products], *,
                    dropout: Callable, train: bool) -> tuple[tuple[torch.Tensor, ...], None]:
    """gru_layers for layer-normalized cells; the products as for lstm_norm_layers."""
    new_h = []
    for layer, products in enumerate(layers):
        x = state.feed if layer == 0 else dropout(new_h[-1])
        gi, gh = _normalized_gates(emb_gates, x, state.h[layer], products, layer == 0)
        new_h.append(gru_cell(gi, gh, state.h[layer], train=train))
    return tuple(new_h), None


# One step function per cell and normalization, chosen once.
CELL_LAYERS = {("lstm", False): lstm_layers, ("gru", False): gru_layers,
               ("lstm", True): lstm_norm_layers, ("gru", True): gru_norm_layers}


def attentional_vector(query: torch.Tensor, memory: Memory, *, attend: Callable, project: Optional[Callable],
                       combine: Callable, dropout: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """Top layer's h (batch, hidden) -> attentional vector (batch, hidden), attention (batch, src_len).
    `project` is the attention's query projection (None for dot and general attention); `attend`
    (query, projected, memory) gives [query; context] and the weights (see `attend_with`)."""
    projected = project(query) if project is not None else query
    joined, weights = attend(query, projected, memory)  # (batch, hidden + memory_size)
    return dropout(torch.tanh(combine(joined))), weights


def attend_with(attention: nn.Module) -> Callable:
    """The attention step through the module's own `attend`, as decoding runs it:
    (query, projected, memory) -> [query; context], weights."""
    def attend(query: torch.Tensor, projected: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        context, weights = attention.attend(projected, memory.keys, memory.states, memory.mask)
        return torch.cat([query, context], dim=-1), weights
    return attend


def initial_state(enc: EncoderOutput, *, bridge_h: Optional[nn.Module], bridge_c: Optional[nn.Module],
                  num_layers: int, hidden_size: int, lstm: bool, input_feeding: bool) -> DecoderState:
    """The state before the first step: bridged from the encoder's final state, or zeros."""
    batch = enc.states.size(0)
    if bridge_h is not None:
        h = torch.tanh(bridge_h(enc.final_h)).chunk(num_layers, dim=-1)
        c = None
        if lstm:
            source = enc.final_c if enc.final_c is not None else enc.final_h
            c = torch.tanh(bridge_c(source)).chunk(num_layers, dim=-1)
    else:
        zeros = enc.states.new_zeros(batch, hidden_size)
        h = (zeros,) * num_layers
        c = (zeros,) * num_layers if lstm else None
    feed = enc.states.new_zeros(batch, hidden_size) if input_feeding else None
    return DecoderState(tuple(h), None if c is None else tuple(c), feed)


class Decoder(nn.Module):
    """`dropout` acts between layers, `emb_dropout` on the target embeddings, `output_dropout` on
    the attentional vector (what the output layer reads and input feeding passes on),
    `word_dropout` on whole target input positions. With `layer_norm` every layer has gains for
    its input and recurrent products (its biases are the normalization's shifts)."""

    def __init__(self, *, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int, cell: str,
                 attention: str, memory_size: int, input_feeding: bool, init: str, dropout: float,
                 emb_dropout: float, output_dropout: float, word_dropout: float = 0.0, layer_norm: bool = False):
        super().__init__()
        self.cell_type = cell
        self.layer_norm = layer_norm
        self.cell_layers = CELL_LAYERS[cell, layer_norm]
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
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.output_dropout = nn.Dropout(output_dropout)
        self.word_dropout = WordDropout(word_dropout)
        self.input_gains = self.hidden_gains = None
        if layer_norm:
            gates = (4 if cell == "lstm" else 3) * hidden_size
            self.input_gains = nn.ParameterList([nn.Parameter(torch.ones(gates)) for _ in range(num_layers)])
            self.hidden_gains = nn.ParameterList([nn.Parameter(torch.ones(gates)) for _ in range(num_layers)])
        self.bridge_h = nn.Linear(memory_size, num_layers * hidden_size) if init == "bridge" else None
        self.bridge_c = (nn.Linear(memory_size, num_layers * hidden_size)
                         if init == "bridge" and cell == "lstm" else None)

    # -- set-up per sentence --------------------------------------------------------------

    def make_memory(self, enc: EncoderOutput) -> Memory:
        return Memory(enc.states, self.attention.project_keys(enc.states), enc.mask)

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        return initial_state(enc, bridge_h=self.bridge_h, bridge_c=self.bridge_c, num_layers=len(self.cells),
                             hidden_size=self.hidden_size, lstm=self.cell_type == "lstm",
                             input_feeding=self.input_feeding)

    # -- the weights of a step ------------------------------------------------------------------

    def embed_bias(self) -> Optional[torch.Tensor]:
        """The first layer's biases that fold into the embedding's share of its gates (gates * hidden,);
        None when layer-normalized (the biases come after the normalization)."""
        cell = self.cells[0]
        if self.layer_norm:
            return None
        return cell.bias_ih + cell.bias_hh if self.cell_type == "lstm" else cell.bias_ih

    def step_weights(self) -> list[dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]]]:
        """Per layer, the (weight, bias) of its per-step products by name: for an LSTM "gates", one
        product of [input, h] with [W_ih, W_hh]; for a GRU "input" (absent without an input)
        and "hidden". The embedding's share of the first layer is not among them. Layer-normalized:
        "input" and "hidden" for either cell, without biases (see norm_weights)."""
        lstm = self.cell_type == "lstm"
        layers = []
        for i, cell in enumerate(self.cells):
            w_in = cell.weight_ih[:, self.emb_size:] if i == 0 else cell.weight_ih
            has_input = i > 0 or self.input_feeding
            if self.layer_norm:
                products = {"input": (w_in, None)} if has_input else {}
                products["hidden"] = (cell.weight_hh, None)
                layers.append(products)
            elif lstm:
                # An LSTM adds its input and recurrent products, so one product of the
                # concatenated [input, h] with [W_ih, W_hh] does both.
                weight = torch.cat([w_in, cell.weight_hh], dim=1) if has_input else cell.weight_hh
                layers.append({"gates": (weight, None if i == 0 else cell.bias_ih + cell.bias_hh)})
            else:
                products = {"input": (w_in, None if i == 0 else cell.bias_ih)} if has_input else {}
                products["hidden"] = (cell.weight_hh, cell.bias_hh)
                layers.append(products)
        return layers

    def norm_weights(self) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Per layer, the (gain, bias) of its normalizations "norm_input" and "norm_hidden" (empty
        without layer_norm)."""
        if not self.layer_norm:
            return []
        return [{"norm_input": (g_in, cell.bias_ih), "norm_hidden": (g_h, cell.bias_hh)}
                for cell, g_in, g_h in zip(self.cells, self.input_gains, self.hidden_gains)]

    # -- teacher forcing ------------------------------------------------------------------------

    def _embed_gates(self, tokens: torch.Tensor) -> torch.Tensor:
        """The embedding's share of the first layer's gates, with the biases that can be
        folded in: (..., gates * hidden)."""
        emb = self.emb_dropout(self.word_dropout(self.embed(tokens), tokens))
        bias = self.embed_bias()
        return F.linear(emb, self.cells[0].weight_ih[:, :self.emb_size], bias)

    def _step_ops(self, memory: Memory) -> "_StepOps":
        """The per-step products and attention of one forward pass over `memory` (see
        recurrence.StepLinear and attention.StepAttention)."""
        query_proj = getattr(self.attention, "query_proj", None)
        layers = [{name: StepLinear(*pair) for name, pair in products.items()} for products in self.step_weights()]
        for layer, norms in zip(layers, self.norm_weights()):
            layer.update({name: partial(normalize, gain=gain, bias=bias) for name, (gain, bias) in norms.items()})
        step_attention = StepAttention(self.attention, memory.keys, memory.states, memory.mask)
        return _StepOps(layers=layers, query=StepLinear(query_proj.weight) if query_proj is not None else None,
                        combine=StepLinear(self.combine.weight, self.combine.bias),
                        attend=lambda query, projected, _: step_attention(query, projected))

    def _advance(self, emb_gates: torch.Tensor, state: DecoderState, memory: Memory, ops: "_StepOps",
                 keep: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """One step from precomputed embedding gates (batch, gates * hidden): attentional vector
        (batch, hidden), new state, attention (batch, src_len). `keep`: this step's dropout mask
        (batch, hidden) of the attentional vector, drawn beforehand (None: self.output_dropout)."""
        h, c = self.cell_layers(emb_gates, state, ops.layers, dropout=self.dropout, train=True)
        att, weights = attentional_vector(h[-1], memory, attend=ops.attend, project=ops.query, combine=ops.combine,
                                          dropout=self.output_dropout if keep is None else keep.mul)
        return att, DecoderState(h, c, att if self.input_feeding else None), weights

    def forward(self, tgt_in: torch.Tensor, state: DecoderState, memory: Memory) -> torch.Tensor:
        """Teacher forcing: tgt_in (batch, tgt_len) -> logits (batch, tgt_len, vocab)."""
        emb_gates = self._embed_gates(tgt_in)  # (batch, tgt_len, gates * hidden), all steps at once
        ops = self._step_ops(memory)
        steps = emb_gates.unbind(1)
        # The attentional vectors' dropout masks of all steps in one draw, not one at every step.
        keep = [None] * len(steps)
        if self.training and self.output_dropout.p > 0:
            keep = self.output_dropout(emb_gates.new_ones(len(steps), tgt_in.size(0), self.hidden_size)).unbind(0)
        outputs = []
        # unbind, not emb_gates[:, t]: the backward of each indexing would zero-fill a buffer of
        # all steps' size at every step; unbind's backward stacks the step gradients once.
        for gates, mask in zip(steps, keep):
            att, state, _ = self._advance(gates, state, memory, ops, mask)
            outputs.append(att)
        return self.output(torch.stack(outputs, dim=1))  # one projection for all steps


@dataclass
class _StepOps:
    layers: list[dict[str, StepLinear]]  # per layer, its products by name (see Decoder.step_weights)
    query: Optional[StepLinear]          # the attention's query projection, None without one
    combine: StepLinear
    attend: Callable                     # (query, projected, memory) -> [query; context], weights
