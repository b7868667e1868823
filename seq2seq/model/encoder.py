"""Recurrent encoder over source pieces: torch's packed RNN modules (cuDNN's fused kernels on a GPU),
and the same recurrence written out for training on the CPU. A layer-normalized encoder (Ba et
al. 2016) always runs the written-out recurrence, on a GPU too: torch's RNN modules and cuDNN
have no normalization inside the cell. (So it cannot be exported to ONNX, whose encoder graph is
torch's RNN operator.)"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seq2seq.model.precision import rnn_dtype
from seq2seq.model.recurrence import StepLinear, gru_step, lstm_step, normalize
from seq2seq.data.tokenizer import PAD
from seq2seq.model.word_dropout import WordDropout


@dataclass
class EncoderOutput:
    states: torch.Tensor            # (batch, src_len, directions * hidden) top-layer outputs, zero at padding
    final_h: torch.Tensor           # (batch, directions * hidden) top layer's last hidden state
    final_c: Optional[torch.Tensor]  # (batch, directions * hidden) LSTM cell state; None for GRU
    mask: torch.Tensor              # (batch, src_len) True at real tokens


class Encoder(nn.Module):
    """Embeds the source and runs a (bi)directional LSTM or GRU over it.

    `hidden_size` is per direction: a bidirectional encoder's outputs have 2 * hidden_size units.
    `dropout` acts between layers, `emb_dropout` on the embeddings, `output_dropout` on the outputs
    (the memory the decoder attends to), `word_dropout` on whole source positions. With
    `layer_norm` every layer and direction has gains for its input and recurrent products (its
    biases are the normalization's shifts).
    """

    def __init__(self, *, vocab_size: int, emb_size: int, hidden_size: int, num_layers: int, cell: str,
                 bidirectional: bool, dropout: float, emb_dropout: float, output_dropout: float,
                 word_dropout: float = 0.0, layer_norm: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_size, padding_idx=PAD)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(emb_size, hidden_size, num_layers=num_layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.word_dropout = WordDropout(word_dropout)
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.output_dropout = nn.Dropout(output_dropout)
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions
        self.layer_norm = layer_norm
        self.gains = None
        if layer_norm:
            gates = (4 if cell == "lstm" else 3) * hidden_size
            names = [f"{kind}_l{layer}{suffix}" for layer in range(num_layers)
                     for suffix in ("", "_reverse")[:self.num_directions] for kind in ("input", "hidden")]
            self.gains = nn.ParameterDict({name: nn.Parameter(torch.ones(gates)) for name in names})

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """src: (batch, src_len) ids; src_lengths: (batch,) on CPU. Runs torch's RNN module (cuDNN
        on a GPU): what decoding, an export and int8 quantization run. Layer-normalized: written out."""
        return self._encode(src, src_lengths, written_out=self.layer_norm)

    def train_pass(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """forward's result, computed for a training pass. On the CPU, where torch runs a packed
        RNN operator by operator under autograd, the recurrence is written out with
        recurrence.StepLinear and the cells' one-node backward passes (`written_out_rnn`): about a
        third of the operator calls. On a GPU cuDNN's fused kernel, as forward."""
        return self._encode(src, src_lengths, written_out=self.layer_norm or not src.is_cuda)

    def _encode(self, src: torch.Tensor, src_lengths: torch.Tensor, *, written_out: bool) -> EncoderOutput:
        emb = self.emb_dropout(self.word_dropout(self.embed(src), src))  # (batch, src_len, emb)
        # Sorted by length here rather than by pack_padded_sequence, whose blocking copy of the
        # order to the GPU would wait for all work queued before it.
        lengths, order = torch.sort(src_lengths, descending=True)
        order = order.to(src.device, non_blocking=True)
        restore = order.argsort()  # (batch,) back to the batch's order
        dtype = rnn_dtype(emb.device)
        with nullcontext() if dtype is None else torch.autocast(emb.device.type, enabled=False):
            packed = pack_padded_sequence((emb if dtype is None else emb.to(dtype)).index_select(0, order), lengths,
                                          batch_first=True)
            out, final = written_out_rnn(self.rnn, packed, self.gains) if written_out else self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        states = self.output_dropout(states.index_select(0, restore))  # (batch, src_len, directions * hidden)
        h, c = final if isinstance(final, tuple) else (final, None)
        return EncoderOutput(states=states, final_h=self._top_layer(h.index_select(1, restore)),
                             final_c=None if c is None else self._top_layer(c.index_select(1, restore)),
                             mask=src != PAD)

    def _top_layer(self, state: torch.Tensor) -> torch.Tensor:
        # (layers * directions, batch, hidden) -> (batch, directions * hidden) of the top layer
        top = state[-self.num_directions:]
        return torch.cat(list(top), dim=-1)


def written_out_rnn(rnn: nn.RNNBase, packed: PackedSequence, gains: Optional[nn.ParameterDict] = None):
    """rnn(packed) for an nn.LSTM or nn.GRU and a PackedSequence sorted by length, computed step
    by step: every step's input share at once, the recurrent product through StepLinear, the
    cells through recurrence.lstm_cell / gru_cell. Returns what the module returns: the output
    PackedSequence and h_n (layers * directions, batch, hidden), with c_n for an LSTM. With
    `gains` (Encoder.gains) the input and recurrent products are layer-normalized, with the
    module's biases as the shifts."""
    lstm = rnn.mode == "LSTM"
    sizes = packed.batch_sizes.tolist()  # rows still running at each step (on the CPU: no sync)
    data = packed.data  # (sum(sizes), input), time-major
    final_h, final_c = [], []
    for layer in range(rnn.num_layers):
        outputs = []
        for suffix in ("", "_reverse")[:2 if rnn.bidirectional else 1]:
            w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{name}_l{layer}{suffix}")
                                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            if gains is None:
                # The input's share of every step's gates in one product; an LSTM adds both biases there.
                shares = F.linear(data, w_ih, b_ih + b_hh if lstm else b_ih).split(sizes)
                recurrent, norm = StepLinear(w_hh, None if lstm else b_hh), None
            else:
                # Normalized per row: all steps' input shares at once still.
                shares = normalize(F.linear(data, w_ih), gains[f"input_l{layer}{suffix}"], b_ih).split(sizes)
                recurrent, norm = StepLinear(w_hh), partial(normalize, gain=gains[f"hidden_l{layer}{suffix}"],
                                                            bias=b_hh)
            out, h, c = _direction(shares, recurrent, norm, hidden=rnn.hidden_size, lstm=lstm, reverse=bool(suffix))
            outputs.append(out)
            final_h.append(h)
            final_c.append(c)
        data = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        if layer < rnn.num_layers - 1 and rnn.training and rnn.dropout > 0:
            data = F.dropout(data, rnn.dropout)  # between layers, as the module applies it
    h_n = torch.stack(final_h)
    out = PackedSequence(data, packed.batch_sizes)
    return (out, (h_n, torch.stack(final_c))) if lstm else (out, h_n)


def _direction(shares: Sequence[torch.Tensor], recurrent: StepLinear, norm: Optional[Callable], *, hidden: int,
               lstm: bool, reverse: bool):
    """One direction of one layer over the steps' input shares (rows, gates * hidden), the rows
    of a step a prefix of the previous step's: outputs (sum of rows, hidden) in time order, and
    the final h and c (c None for a GRU), (batch, hidden), each row's from its own last step."""
    steps = range(len(shares) - 1, -1, -1) if reverse else range(len(shares))
    rows = 0 if reverse else shares[0].size(0)
    h = shares[0].new_zeros(rows, hidden)
    c = h if lstm else None
    outputs, done = [], []  # done: the final states of rows that ended, last rows first
    for t in steps:
        n = shares[t].size(0)
        if n < h.size(0):  # (forward) rows that ended keep their state
            done.append((h[n:], c[n:] if lstm else None))
            h, c = h[:n], c[:n] if lstm else None
        elif n > h.size(0):  # (reverse) rows that begin here start from zeros
            zeros = h.new_zeros(n - h.size(0), hidden)
            h, c = torch.cat([h, zeros]), torch.cat([c, zeros]) if lstm else None
        if lstm:
            h, c = lstm_step(recurrent, shares[t], h, c, norm)
        else:
            h = gru_step(recurrent, shares[t], h, norm)
        outputs.append(h)
    done.append((h, c))
    if reverse:
        outputs.reverse()
    final_h = torch.cat([d[0] for d in reversed(done)]) if len(done) > 1 else h
    final_c = (torch.cat([d[1] for d in reversed(done)]) if len(done) > 1 else c) if lstm else None
    return torch.cat(outputs), final_h, final_c
