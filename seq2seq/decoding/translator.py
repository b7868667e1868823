"""Text in, text out: load a trained run and translate lines with batched search."""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from seq2seq.config import Config
from seq2seq.data import corpus_tags, detokenize, encode_sources, tag_piece
from seq2seq.model.step import DecodingModel
from seq2seq.decoding.ensemble import Ensemble
from seq2seq.errors import CheckpointError, DecodingError, DeviceError
from seq2seq.model.model import Seq2Seq, resolve_device
from seq2seq.model.precision import DTYPES, resolve as resolve_precision
from seq2seq.decoding.onnx_model import Export, is_export
from seq2seq.run.rundir import BEST, Run, open_run
from seq2seq.decoding.search import Hypothesis, Sampling, StepModel, Stop, translate_ids
from seq2seq.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Translation:
    """One hypothesis for one input sentence, with what is needed to inspect it."""
    text: str
    score: float                     # log-probability / length penalty (what the beam ranks by)
    log_prob: float                  # summed log-probability, EOS included
    src_pieces: list[str]            # the source as the model saw it
    tgt_pieces: list[str]            # the output pieces, without EOS
    attention: torch.Tensor | None   # (len(tgt_pieces) + 1, len(src_pieces)), last row is EOS


class Translator:
    """A trained model with its tokenizers and decoding settings.

    >>> translator = Translator.load("runs/multi30k", device="cpu")
    >>> translator.translate(["A man rides a bike."], beam_size=5)
    >>> translator.translate_detailed(["A man rides a bike."], nbest=3, return_attention=True)
    """

    def __init__(self, model: StepModel, src_tok: Tokenizer, tgt_tok: Tokenizer, config: Config,
                 device: torch.device, precision: str = "fp32"):
        # `model` is what search steps through: a decoding object (Seq2Seq.for_decoding) or an Ensemble.
        banned = tag_pieces(tgt_tok, [tag_piece(tag) for tag in corpus_tags(config.data)])
        if banned:
            model = WithoutPieces(model, banned)
        self.model, self.src_tok, self.tgt_tok = model, src_tok, tgt_tok
        self.config, self.device, self.precision = config, device, precision
        self.run_dirs: list[Path] = []  # where the model(s) came from, when loaded from runs

    @classmethod
    def load(cls, run_dir: str | Path | Sequence[str | Path], *, device: str = "auto", checkpoint: str = BEST,
             quantize: str | None = None, precision: str | None = None) -> "Translator":
        """Load RUN_DIR/checkpoint (best.pt by default) with the run's tokenizers and config.
        A list of run directories is an ensemble (ensemble.py): the members must share their
        tokenizers; the first member's config gives the decoding settings.
        With quantize="int8", linear and encoder RNN layers run int8 dynamic kernels (CPU only).
        `precision` (fp32, bf16, fp16 or auto; default: the run's decoding.precision) is the float
        type of the products (precision.py); weights stay float32."""
        if quantize not in (None, "int8"):
            raise DecodingError(f"quantize: expected 'int8' or None, got {quantize!r}")
        dev = resolve_device("cpu" if quantize and device == "auto" else device)
        if quantize and dev.type != "cpu":
            raise DeviceError(f"device {dev.type}: int8 quantization runs on CPU only; use --device cpu")
        run_dirs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
        if any(is_export(d) for d in run_dirs):
            return cls.load_export(run_dirs, device=device, quantize=quantize, precision=precision)
        runs = [open_run(d, checkpoint) for d in run_dirs]
        for run in runs[1:]:
            check_member(run, runs[0])
        first = runs[0]
        chosen, why = resolve_precision(precision or first.config.decoding.precision, dev)
        if quantize and chosen != "fp32":
            if precision not in (None, "auto"):
                raise DecodingError(f"precision {chosen}: int8 quantization runs the products in int8; "
                                    f"leave --precision out (or fp32) with --quantize int8")
            chosen, why = "fp32", "int8 quantization"
        log.info("decoding precision %s (%s)", chosen, why)
        models = [decoding_model(run.model, chosen, quantize).to(dev) for run in runs]
        model = models[0] if len(models) == 1 else Ensemble(models)
        translator = cls(model, first.src_tok, first.tgt_tok, first.config, dev, chosen)
        translator.run_dirs = [run.dir.path for run in runs]
        return translator

    @classmethod
    def load_export(cls, folders: Sequence[str | Path], *, device: str = "auto", quantize: str | None = None,
                    precision: str | None = None) -> "Translator":
        """Export folders (seq2seq export) decoded by onnxruntime on the CPU, through the same
        search as a PyTorch model; several are an ensemble, as runs are."""
        from seq2seq.decoding.onnx_model import open_export
        if not all(is_export(f) for f in folders):
            raise CheckpointError("--model: give either run directories or export folders, not both")
        if quantize:
            raise DecodingError("--quantize: an export folder is quantized when it is exported "
                                "(seq2seq export --quantize int8); leave --quantize out")
        if precision not in (None, "auto", "fp32"):
            raise DecodingError(f"--precision {precision}: an export folder runs in the precision it was exported in")
        if device not in ("auto", "cpu"):
            raise DeviceError(f"device {device}: export folders run on the CPU with onnxruntime; use --device cpu")
        exports = [open_export(f) for f in folders]
        first = exports[0]
        for member in exports[1:]:
            check_member(member, first)
        model = first.model if len(exports) == 1 else Ensemble([e.model for e in exports])
        translator = cls(model, first.src_tok, first.tgt_tok, first.config, torch.device("cpu"), "fp32")
        translator.run_dirs = [e.folder for e in exports]
        return translator

    def encode_sources(self, lines: Sequence[str], first_line: int = 1) -> list[list[int]]:
        d = self.config.data
        ids, cut = encode_sources(lines, self.src_tok, max_len=d.max_src_len,
                                  tgt_lang=d.tgt_lang if d.src_prefix_tag else None)
        for n, length in cut:
            log.warning("input line %d has %d pieces; truncated to the model's limit of %d",
                        first_line + n, length, d.max_src_len)
        return ids

    def search(self, lines: Sequence[str], *, beam_size: int | None = None, batch_size: int | None = None,
               length_penalty: float | None = None, max_len_ratio: float | None = None,
               nbest: int = 1, return_attention: bool = False, sampling: Sampling | None = None,
               first_line: int = 1) -> list[list[Hypothesis]]:
        """Hypotheses for `lines`, the first of which is line `first_line` (from 1) of the input:
        warnings name it, and with `sampling` a line's number seeds its draw."""
        return self._search(self.encode_sources(lines, first_line), beam_size=beam_size, batch_size=batch_size,
                            length_penalty=length_penalty, max_len_ratio=max_len_ratio, nbest=nbest,
                            return_attention=return_attention, sampling=sampling, first_line=first_line)

    def _search(self, src_ids: list[list[int]], *, beam_size: int | None, batch_size: int | None,
                length_penalty: float | None, max_len_ratio: float | None, nbest: int,
                return_attention: bool, sampling: Sampling | None = None,
                first_line: int = 1, cancelled: Stop = None) -> list[list[Hypothesis]]:
        dc = self.config.decoding
        beam = beam_size or dc.beam_size
        if sampling is not None:
            if (beam_size or 1) > 1 or nbest > 1:
                raise DecodingError("sampling draws one translation per input: it takes no beam size above 1 "
                                    "and no n-best list")
            beam = 1  # the run's decoding.beam_size is for search, not for sampling
        return translate_ids(
            self.model, src_ids, beam_size=max(beam, nbest), batch_size=batch_size or dc.batch_size,
            alpha=dc.length_penalty if length_penalty is None else length_penalty,
            max_len_ratio=dc.max_len_ratio if max_len_ratio is None else max_len_ratio,
            max_len_offset=dc.max_len_offset, nbest=nbest, return_attention=return_attention,
            precision=self.precision, sampling=sampling, cancelled=cancelled,
            line_ids=range(first_line - 1, first_line - 1 + len(src_ids)))

    def detokenize(self, hyp: Hypothesis) -> str:
        return detokenize(self.tgt_tok, hyp.tokens)

    def translate(self, lines: Sequence[str], *, nbest: int = 1, **options) -> list[str] | list[list[str]]:
        """Translate raw sentences, in order: one string per input, or with nbest > 1 a list of
        the nbest best strings per input (best first). Options: beam_size, batch_size,
        length_penalty, max_len_ratio (default: the run's decoding section); sampling (a
        search.Sampling: draw each translation instead) and first_line (the number, from 1, of
        lines[0] in the whole input, which seeds the draws)."""
        results = self.search(lines, nbest=nbest, **options)
        if nbest == 1:
            return [self.detokenize(h[0]) for h in results]
        return [[self.detokenize(h) for h in hyps] for hyps in results]

    def translate_detailed(self, lines: Sequence[str], *, nbest: int = 1, return_attention: bool = False,
                           first_line: int = 1, **options) -> list[list[Translation]]:
        """Like translate, but per input a list of up to nbest Translations (best first) with
        scores, pieces and, with return_attention, the attention weights of each hypothesis.
        Option `cancelled` (search.Stop): a service's way to cut short work nobody waits for."""
        src_ids = self.encode_sources(lines, first_line)
        results = self._search(src_ids, nbest=nbest, return_attention=return_attention, first_line=first_line,
                               beam_size=options.pop("beam_size", None), batch_size=options.pop("batch_size", None),
                               length_penalty=options.pop("length_penalty", None),
                               max_len_ratio=options.pop("max_len_ratio", None), **options)
        out = []
        for ids, hyps in zip(src_ids, results):
            src_pieces = self.src_tok.pieces(ids)
            out.append([Translation(self.detokenize(h), h.score, h.log_prob, src_pieces,
                                    self.tgt_tok.pieces(h.tokens), h.attention) for h in hyps])
        return out

    def translate_stream(self, lines: Iterable[str], *, chunk_lines: int | None = None,
                         **options) -> Iterator[str]:
        """Translate a stream of lines chunk by chunk, so memory stays bounded. A chunk is the
        lines that have arrived, up to `chunk_lines`: in a pipe, output does not wait for input
        that has not been written yet."""
        size = chunk_lines or (options.get("batch_size") or self.config.decoding.batch_size) * 4
        waiting: queue.Queue = queue.Queue(maxsize=2 * size)
        threading.Thread(target=_read_into, args=(lines, waiting), daemon=True).start()
        first_line, done = 1, False
        while not done:
            chunk = []
            item = waiting.get()  # block for the first line only
            while True:
                if item is _END:
                    done = True
                    break
                if isinstance(item, _Failure):
                    raise item.error
                chunk.append(item)
                if len(chunk) >= size:
                    break
                try:
                    item = waiting.get_nowait()
                except queue.Empty:
                    break
            if chunk:
                yield from self.translate(chunk, first_line=first_line, **options)
                first_line += len(chunk)


class WithoutPieces:
    """A step model whose outputs never contain `pieces`: the corpus tags (data.train[].tag)
    of a joint vocabulary, which belong before training sources and never in a translation."""

    def __init__(self, model: StepModel, pieces: Sequence[int]):
        self.inner = model
        self.pieces = torch.tensor(list(pieces), dtype=torch.long, device=model.device)

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor):
        return self.inner.start(src, src_lengths)

    def step(self, prev: torch.Tensor, state, memory):
        log_probs, state, attention = self.inner.step(prev, state, memory)
        return log_probs.index_fill(1, self.pieces, float("-inf")), state, attention


def tag_pieces(tok: Tokenizer, pieces: Sequence[str]) -> list[int]:
    """The ids of those of `pieces` that `tok`'s vocabulary holds."""
    return [i for piece in pieces if tok.id_to_piece(i := tok.piece_to_id(piece)) == piece]


def decoding_model(model: Seq2Seq, precision: str, quantize: str | None) -> DecodingModel:
    """The decoding object of a loaded model, in `precision`, int8 with quantize="int8"."""
    decoding = model.eval().for_decoding()
    if precision != "fp32":
        # The per-step products are decoding's own: cast once here, not at every step. (A layer
        # norm's gain and shift stay float32: the normalization runs in float32 under autocast.)
        for product in decoding.products.modules():
            if isinstance(product, torch.nn.Linear):
                product.to(DTYPES[precision])
    if quantize == "int8" and model.encoder.layer_norm:
        raise DecodingError("--quantize int8: a layer-normalized encoder (model.encoder.layer_norm) runs its "
                            "recurrence written out, which int8 quantization does not cover; decode in float")
    if quantize == "int8":
        from seq2seq.decoding.quantize import quantize_int8
        decoding = quantize_int8(decoding)
    return decoding


def check_member(run: Run | Export, first: Run | Export) -> None:
    """An ensemble member reads and writes text exactly as the first member does, or a
    CheckpointError names it."""
    def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
        return a.sp.serialized_model_proto() == b.sp.serialized_model_proto() and a.kept == b.kept

    def origin(member: Run | Export) -> Path:
        return member.folder if isinstance(member, Export) else member.dir.path

    for side, mine, theirs in (("source", run.src_tok, first.src_tok), ("target", run.tgt_tok, first.tgt_tok)):
        if not same_tokenizer(mine, theirs):
            raise CheckpointError(f"{origin(run)}: its {side} tokenizer (or kept-piece list) differs from that of "
                                  f"{origin(first)}; ensemble members must share both tokenizers (train them from "
                                  f"one tokenizer, e.g. fine-tune with finetune.vocabulary: keep)")
    for key in ("src_lang", "tgt_lang", "src_prefix_tag"):
        if getattr(run.config.data, key) != getattr(first.config.data, key):
            raise CheckpointError(f"{origin(run)}: data.{key} is {getattr(run.config.data, key)!r}, but "
                                  f"{getattr(first.config.data, key)!r} in {origin(first)}; ensemble members must "
                                  f"translate the same way")


_END = object()


@dataclass
class _Failure:
    error: BaseException


def _read_into(lines: Iterable[str], waiting: queue.Queue) -> None:
    """Feed `lines` into a bounded queue (runs in a thread), then an end marker."""
    try:
        for line in lines:
            waiting.put(line)
    except BaseException as e:  # handed to the consumer, which raises it
        waiting.put(_Failure(e))
    waiting.put(_END)
