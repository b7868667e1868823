"""The model as decoding runs it: one explicit object, built on purpose from a trained model
(`Seq2Seq.for_decoding()`), that search steps through (search.StepModel).

It holds what decoding needs and nothing else: the encoder and the decoder's embedding,
attention, combine and output layers and bridges (the trained model's own modules), and the
recurrent cells' per-step products as nn.Linear modules of its own, so that a cast to the
decoding precision or int8 quantization (which swaps whole nn.Linear modules) reaches the
recurrence as well (a layer-normalized decoder's normalizations are recurrence.GateNorm
modules beside them, which stay float32). Its step is a function of tensors only: no dropout and
no branch on the data, so that an export can trace it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.model.decoder import (CELL_LAYERS, Decoder, DecoderState, Memory, attend_with, attentional_vector,
                      initial_state)
from seq2seq.model.encoder import Encoder
from seq2seq.model.recurrence import GateNorm


class DecodingModel(nn.Module):
    """start(src, src_lengths) -> (memory, state); step(prev, state, memory) -> (log-probs, state, attention).

    Built from the weights as they are now (sharing them where it can, so it costs little):
    build a new one after training has changed them."""

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        if encoder.training or decoder.training:
            # The encoder is shared: its dropout would follow the training mode.
            raise ValueError("decoding needs the model in eval mode (model.eval()), or dropout would apply")
        self.encoder = encoder
        self.embed = decoder.embed
        self.attention = decoder.attention
        self.combine = decoder.combine
        self.output = decoder.output
        self.bridge_h, self.bridge_c = decoder.bridge_h, decoder.bridge_c
        self.cell_type = decoder.cell_type
        self.emb_size, self.hidden_size = decoder.emb_size, decoder.hidden_size
        self.num_layers, self.input_feeding = len(decoder.cells), decoder.input_feeding
        self.cell_layers = CELL_LAYERS[decoder.cell_type, decoder.layer_norm]  # one step function, chosen once
        with torch.no_grad():
            # The whole first-layer input weight (gates * hidden, emb + feed), sliced at every
            # step as teacher forcing slices it: its first emb_size columns read the embedding.
            self.first_weight_ih = _frozen(decoder.cells[0].weight_ih)
            bias = decoder.embed_bias()
            self.embed_bias = None if bias is None else _frozen(bias)  # (gates * hidden,)
            # Per layer, its products by name (Decoder.step_weights) and normalizations
            # (Decoder.norm_weights); the LSTM's concatenated weight is made here once, not at every step.
            norms = decoder.norm_weights() or [{} for _ in decoder.cells]
            self.products = nn.ModuleList([
                nn.ModuleDict({**{name: _linear(*pair) for name, pair in layer.items()},
                               **{name: GateNorm(*pair) for name, pair in norm.items()}})
                for layer, norm in zip(decoder.step_weights(), norms)])
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where inputs go (the embedding is never quantized, so its weight is always a tensor)."""
        return self.embed.weight.device

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[Memory, DecoderState]:
        """Encode src (batch, src_len) of src_lengths (batch,): the memory to attend to and the first state."""
        enc = self.encoder(src, src_lengths)
        memory = Memory(enc.states, self.attention.project_keys(enc.states), enc.mask)
        state = initial_state(enc, bridge_h=self.bridge_h, bridge_c=self.bridge_c, num_layers=self.num_layers,
                              hidden_size=self.hidden_size, lstm=self.cell_type == "lstm",
                              input_feeding=self.input_feeding)
        return memory, state

    def step(self, prev: torch.Tensor, state: DecoderState,
             memory: Memory) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """prev (batch,) last pieces -> log-probs (batch, vocab), new state, attention (batch, src_len)."""
        emb = self.embed(prev)  # (batch, emb)
        emb_gates = F.linear(emb, self.first_weight_ih[:, :self.emb_size], self.embed_bias)  # (batch, gates * hidden)
        h, c = self.cell_layers(emb_gates, state, self.products, dropout=_no_dropout, train=False)
        att, weights = attentional_vector(h[-1], memory, attend=attend_with(self.attention),
                                          project=getattr(self.attention, "query_proj", None),
                                          combine=self.combine, dropout=_no_dropout)  # (batch, hidden)
        new_state = DecoderState(h, c, att if self.input_feeding else None)
        return torch.log_softmax(self.output(att), dim=-1), new_state, weights


def _no_dropout(x: torch.Tensor) -> torch.Tensor:
    return x


def _frozen(t: torch.Tensor) -> nn.Parameter:
    """A parameter of decoding's own over `t`'s storage (a view stays a view: nothing is copied)."""
    return nn.Parameter(t.detach(), requires_grad=False)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An nn.Linear over `weight` (out, in) and `bias` (out,) as they are."""
    # Made on the meta device: initialising real weights would draw from the random generator
    # that training's dropout uses, and validation builds these during training.
    linear = nn.Linear(weight.size(1), weight.size(0), bias=bias is not None, device="meta")
    linear.weight = _frozen(weight)
    linear.bias = None if bias is None else _frozen(bias)
    return linear
