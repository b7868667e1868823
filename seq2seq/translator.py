"""Text in, text out: load a trained run and translate lines with batched search."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, ConfigError, config_from_dict
from .data import pad
from .model import Seq2Seq, build_model, resolve_device
from .search import Hypothesis, beam_search, greedy_search, max_output_lengths
from .tokenizer import Tokenizer, tokenizer_files

log = logging.getLogger(__name__)


def translate_ids(model: Seq2Seq, src_ids: Sequence[Sequence[int]], *, beam_size: int, batch_size: int,
                  alpha: float, max_len_ratio: float, max_len_offset: int, nbest: int = 1,
                  device: torch.device | None = None) -> list[list[Hypothesis]]:
    """Search every source; results come back in input order. Empty sources give an empty
    hypothesis without running the model."""
    device = device or next(model.parameters()).device
    results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in src_ids]
    # Sorting by length keeps padding (and wasted work) low inside a batch.
    order = sorted((i for i, s in enumerate(src_ids) if len(s) > 0), key=lambda i: len(src_ids[i]))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            src = pad([src_ids[i] for i in chunk]).to(device)
            lengths = torch.tensor([len(src_ids[i]) for i in chunk])
            max_lengths = max_output_lengths(lengths, max_len_ratio, max_len_offset)
            if beam_size == 1 and nbest == 1:
                hyps = greedy_search(model, src, lengths, max_lengths=max_lengths, alpha=alpha)
            else:
                hyps = beam_search(model, src, lengths, beam_size=beam_size, max_lengths=max_lengths,
                                   alpha=alpha, nbest=nbest)
            for i, h in zip(chunk, hyps):
                results[i] = h
    finally:
        model.train(was_training)
    return results


class Translator:
    """A trained model with its tokenizers and decoding settings."""

    def __init__(self, model: Seq2Seq, src_tok: Tokenizer, tgt_tok: Tokenizer, config: Config,
                 device: torch.device):
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tok, tgt_tok
        self.config, self.device = config, device

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "auto", checkpoint: str = "best.pt",
             quantize: str | None = None) -> "Translator":
        """With quantize="int8", linear and encoder RNN layers run int8 dynamic kernels (CPU only)."""
        run_dir = Path(run_dir)
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize: expected 'int8' or None, got {quantize!r}")
        if not run_dir.is_dir():
            raise CheckpointError(f"{run_dir}: not a run directory")
        path = run_dir / checkpoint
        if checkpoint == "best.pt" and not path.exists() and (run_dir / "last.pt").exists():
            path = run_dir / "last.pt"  # a run stopped before its first validation
        dev = resolve_device("cpu" if quantize and device == "auto" else device)
        if quantize and dev.type != "cpu":
            raise ValueError(f"device {dev.type}: int8 quantization runs on CPU only; use --device cpu")
        ckpt = load_checkpoint(path)
        try:
            config = config_from_dict(ckpt["config"])
        except ConfigError as e:
            raise CheckpointError(f"{path}: its stored config is not valid here: {e}") from None
        d = config.data
        src_file, tgt_file = tokenizer_files(run_dir, config.tokenizer.joint, d.src_lang, d.tgt_lang)
        for f in (src_file, tgt_file):
            if not f.is_file():
                raise CheckpointError(f"{run_dir}: run directory is missing its tokenizer {f.name}")
        src_tok, tgt_tok = Tokenizer(src_file), Tokenizer(tgt_file)
        model = build_model(config.model, src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok))
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"{path}: weights do not fit the model its config describes "
                                  f"({first[1].strip() if len(first) > 1 else first[0][:200]})") from None
        if quantize == "int8":
            from .quantize import quantize_int8
            model = quantize_int8(model)
        return cls(model.to(dev), src_tok, tgt_tok, config, dev)

    def encode_sources(self, lines: Sequence[str]) -> list[list[int]]:
        limit = self.config.data.max_src_len
        ids = self.src_tok.encode_batch([line.strip() for line in lines])
        for n, s in enumerate(ids):
            if len(s) > limit:
                log.warning("input line %d has %d pieces; truncated to the model's limit of %d",
                            n + 1, len(s), limit)
                ids[n] = s[:limit]
        return ids

    def search(self, lines: Sequence[str], *, beam_size: int | None = None, batch_size: int | None = None,
               length_penalty: float | None = None, max_len_ratio: float | None = None,
               nbest: int = 1) -> list[list[Hypothesis]]:
        dc = self.config.decoding
        beam = beam_size or dc.beam_size
        return translate_ids(
            self.model, self.encode_sources(lines), beam_size=max(beam, nbest), batch_size=batch_size or dc.batch_size,
            alpha=dc.length_penalty if length_penalty is None else length_penalty,
            max_len_ratio=dc.max_len_ratio if max_len_ratio is None else max_len_ratio,
            max_len_offset=dc.max_len_offset, nbest=nbest, device=self.device)

    def detokenize(self, hyp: Hypothesis) -> str:
        # A translation is one line, whatever pieces the model produced.
        return " ".join(self.tgt_tok.decode(hyp.tokens).split("\n")).replace("\r", " ")

    def translate(self, lines: Sequence[str], **options) -> list[str]:
        """Translate raw sentences; exactly one output string per input, in order."""
        return [self.detokenize(h[0]) for h in self.search(lines, **options)]

    def translate_stream(self, lines: Iterable[str], *, chunk_lines: int | None = None,
                         **options) -> Iterator[str]:
        """Translate a stream of lines chunk by chunk, so memory stays bounded and output
        appears as chunks finish (for pipes)."""
        size = chunk_lines or (options.get("batch_size") or self.config.decoding.batch_size) * 4
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= size:
                yield from self.translate(chunk, **options)
                chunk = []
        if chunk:
            yield from self.translate(chunk, **options)
