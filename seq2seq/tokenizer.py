"""SentencePiece tokenizers: training once per run, and the one encode/decode path used
by training, validation and translation alike."""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

log = logging.getLogger(__name__)

# Fixed ids shared by every model: padding must be 0 so that zero-filled tensors are padding.
PAD, UNK, BOS, EOS = 0, 1, 2, 3


class Tokenizer:
    """Raw text <-> piece ids with one SentencePiece model."""

    def __init__(self, model_file: str | Path):
        self.path = Path(model_file)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: SentencePiece model not found")
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        if (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (PAD, UNK, BOS, EOS):
            raise ValueError(f"{self.path}: special ids differ from pad=0 unk=1 bos=2 eos=3")

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        # Ids past EOS or special ids never reach the text.
        return self.sp.decode([i for i in ids if i > EOS])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def piece_to_id(self, piece: str) -> int:
        return self.sp.piece_to_id(piece)


def train_tokenizer(lines: Iterable[str], model_file: str | Path, *, vocab_size: int, model_type: str,
                    character_coverage: float, user_defined_symbols: Sequence[str] = ()) -> Tokenizer:
    """Train a SentencePiece model on `lines` and write it to `model_file`. Each of
    `user_defined_symbols` (e.g. language tags) becomes one piece wherever it occurs."""
    model_file = Path(model_file)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
        # Small corpora cannot always fill the requested vocabulary; take what they give.
        hard_vocab_limit=False,
        user_defined_symbols=list(user_defined_symbols),
        num_threads=2,
        minloglevel=2,
    )
    tmp = model_file.with_suffix(model_file.suffix + ".tmp")
    tmp.write_bytes(model.getvalue())
    tmp.replace(model_file)
    tok = Tokenizer(model_file)
    log.info("trained SentencePiece %s (%d pieces) -> %s", model_type, len(tok), model_file)
    return tok


def tokenizer_files(run_dir: str | Path, joint: bool, src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
    """Where a run keeps its source and target SentencePiece models."""
    run_dir = Path(run_dir)
    if joint:
        return run_dir / "spm.joint.model", run_dir / "spm.joint.model"
    return run_dir / f"spm.{src_lang}.model", run_dir / f"spm.{tgt_lang}.model"
