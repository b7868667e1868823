"""Validation during training: loss on the reference targets, and BLEU/chrF of decoding the
sources exactly as `seq2seq translate` would (same encoding, search and detokenization), so
the validation BLEU of a checkpoint is what `translate` + `evaluate` print for it."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from seq2seq.config import DataConfig, DecodingConfig
from seq2seq.data import (ParallelData, batch_indices, detokenize, encode_parallel, encode_sources, make_batch,
                          stream_pairs, tag_sources)
from seq2seq.metrics import score_all
from seq2seq.model.model import Seq2Seq
from seq2seq.model import precision
from seq2seq.decoding.search import translate_ids
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.training.update import token_loss

log = logging.getLogger("seq2seq")


@dataclass
class ValidationSet:
    pairs: ParallelData           # encoded pairs for the loss (empty pairs dropped)
    src_ids: list[list[int]]      # every source as translate encodes it
    refs: list[str]               # the raw references, one per source


def read_validation(d: DataConfig) -> tuple[list[str], list[str]]:
    """The validation sources and references, read with the same checks as the training corpora
    (a validation set is small enough to hold)."""
    pairs = list(stream_pairs(f"{d.valid}.{d.src_lang}", f"{d.valid}.{d.tgt_lang}",
                              skip_invalid_utf8=d.skip_invalid_utf8))
    return [s for s, _ in pairs], [t for _, t in pairs]


def validation_set(d: DataConfig, valid_src: list[str], valid_tgt: list[str], src_tok: Tokenizer,
                   tgt_tok: Tokenizer) -> ValidationSet:
    """The validation pairs for the loss, and the sources encoded exactly as translate encodes them."""
    tagged = tag_sources(valid_src, d.tgt_lang) if d.src_prefix_tag else valid_src
    pairs = encode_parallel(tagged, valid_tgt, src_tok, tgt_tok, name=f"{d.valid}")
    src_ids, cut = encode_sources(valid_src, src_tok, max_len=d.max_src_len,
                                  tgt_lang=d.tgt_lang if d.src_prefix_tag else None)
    if cut:
        log.info("%s.%s: %d sources have more than data.max_src_len=%d pieces; validation cuts them, as "
                 "translate does", d.valid, d.src_lang, len(cut), d.max_src_len)
    return ValidationSet(pairs, src_ids, valid_tgt)


@torch.no_grad()
def validation_loss(model: Seq2Seq, data: ParallelData, device: torch.device, batch_size: int = 64) -> float:
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for indices in batch_indices([len(s) for s in data.src], [len(t) + 1 for t in data.tgt],
                                 batch_tokens=None, batch_size=batch_size, shuffle=False):
        batch = make_batch(data, indices).to(device)
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        total += float(token_loss(logits, batch.tgt_out, 0.0))
        tokens += batch.num_tgt_tokens
    model.train(was_training)
    return total / max(tokens, 1)


def validate(model: Seq2Seq, valid: ValidationSet, decoding: DecodingConfig, tgt_tok: Tokenizer,
             device: torch.device) -> dict[str, Any]:
    """Loss, perplexity, BLEU and chrF (greedy or decoding.valid_beam_size) and the hypotheses."""
    loss = validation_loss(model, valid.pairs, device)
    dc = decoding
    was_training = model.training
    model.eval()
    try:
        # Built from the current weights at every validation: it shares them, so this is cheap.
        hyps = translate_ids(model.for_decoding(), valid.src_ids, beam_size=dc.valid_beam_size,
                             batch_size=dc.batch_size, alpha=dc.length_penalty, max_len_ratio=dc.max_len_ratio,
                             max_len_offset=dc.max_len_offset, precision=precision.resolve(dc.precision, device)[0])
    finally:
        model.train(was_training)
    texts = [detokenize(tgt_tok, h[0].tokens) for h in hyps]
    scores = score_all(texts, valid.refs)
    return {"valid_loss": loss, "valid_ppl": math.exp(min(loss, 50.0)), "bleu": scores["bleu"],
            "chrf": scores["chrf"], "hypotheses": texts}
