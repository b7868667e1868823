"""The encoder-decoder, and `build_model`: the only place that reads the model config."""
from __future__ import annotations

import torch
from torch import nn

from seq2seq.config import ModelConfig
from seq2seq.errors import DeviceError
from seq2seq.model.decoder import Decoder
from seq2seq.model.step import DecodingModel
from seq2seq.model.encoder import Encoder


class Seq2Seq(nn.Module):
    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (batch, tgt_len, vocab)."""
        enc = self.encoder.train_pass(src, src_lengths)
        memory, state = self.decoder.make_memory(enc), self.decoder.init_state(enc)
        return self.decoder(tgt_in, state, memory)

    def for_decoding(self) -> DecodingModel:
        """The object that decodes with these weights, one step at a time (decoding.py). The model
        must be in eval mode; build a new one after the weights change."""
        return DecodingModel(self.encoder, self.decoder)


def init_weights(model: nn.Module, *, init: str, rnn_init: str) -> None:
    for name, p in model.named_parameters():
        if "gains" in name:  # a layer norm starts as plain normalization
            nn.init.ones_(p)
        elif p.dim() == 1:
            nn.init.zeros_(p)
        elif rnn_init == "orthogonal" and "weight_hh" in name:
            gates = p.size(0) // p.size(1)  # one orthogonal block per gate
            for chunk in p.data.chunk(gates, dim=0):
                nn.init.orthogonal_(chunk)
        elif init == "uniform":
            nn.init.uniform_(p, -0.1, 0.1)
        else:
            nn.init.xavier_uniform_(p)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


def build_model(cfg: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    e, d = cfg.encoder, cfg.decoder
    # An embedding or output dropout left null is the side's `dropout`.
    encoder = Encoder(vocab_size=src_vocab_size, emb_size=e.emb_size, hidden_size=e.hidden_size,
                      num_layers=e.num_layers, cell=e.cell, bidirectional=e.bidirectional, dropout=e.dropout,
                      emb_dropout=_or(e.emb_dropout, e.dropout), output_dropout=_or(e.output_dropout, e.dropout),
                      word_dropout=e.word_dropout, layer_norm=e.layer_norm)
    decoder = Decoder(vocab_size=tgt_vocab_size, emb_size=d.emb_size, hidden_size=d.hidden_size,
                      num_layers=d.num_layers, cell=d.cell, attention=d.attention,
                      memory_size=encoder.output_size, input_feeding=d.input_feeding, init=d.init,
                      dropout=d.dropout, emb_dropout=_or(d.emb_dropout, d.dropout),
                      output_dropout=_or(d.output_dropout, d.dropout), word_dropout=d.word_dropout,
                      layer_norm=d.layer_norm)
    model = Seq2Seq(encoder, decoder)
    init_weights(model, init=cfg.init, rnn_init=cfg.rnn_init)
    if cfg.share_embeddings:
        if src_vocab_size != tgt_vocab_size:
            raise ValueError("share_embeddings needs one joint vocabulary")
        decoder.embed = encoder.embed
    if cfg.tie_embeddings:
        decoder.output.weight = decoder.embed.weight
    return model


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    # Tied weights appear once in parameters(), so they are counted once.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)
