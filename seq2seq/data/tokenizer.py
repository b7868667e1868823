"""SentencePiece tokenizers: training once per run, and the one encode/decode path used
by training, validation and translation alike."""
from __future__ import annotations

import io
import logging
import re
import struct
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

from seq2seq.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

# Fixed ids shared by every model: padding must be 0 so that zero-filled tensors are padding.
PAD, UNK, BOS, EOS = 0, 1, 2, 3


class Tokenizer:
    """Raw text <-> piece ids with one SentencePiece model.

    With `kept` (SentencePiece ids, specials first), the ids are positions in that list: a
    side's vocabulary can then leave out the pieces its training text never used (a joint
    model's German-only pieces on the English side). A piece outside the list is spelled out
    in its single characters, which seen_pieces always keeps, so new text still round-trips."""

    def __init__(self, model_file: str | Path, kept: Sequence[int] | None = None):
        self.path = Path(model_file)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: SentencePiece model not found")
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        if (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (PAD, UNK, BOS, EOS):
            raise CheckpointError(f"{self.path}: special ids differ from pad=0 unk=1 bos=2 eos=3")
        self.kept: list[int] | None = None
        if kept is not None:
            kept = list(kept)
            size = self.sp.get_piece_size()
            if kept[:4] != [PAD, UNK, BOS, EOS] or len(set(kept)) != len(kept) \
                    or not all(0 <= i < size for i in kept):
                raise CheckpointError(f"{self.path}: kept pieces must start with 0 1 2 3, be distinct and below {size}")
            self.kept = kept
            own = {i: n for n, i in enumerate(kept)}
            self._own = [own.get(i, UNK) for i in range(size)]  # SentencePiece id -> our id, UNK if left out
            # SentencePiece id -> our ids: itself where kept, else its characters (UNK if unknown).
            self._spelled = [[own[i]] if i in own else
                             [own.get(self.sp.piece_to_id(c), UNK) for c in self.sp.id_to_piece(i)]
                             for i in range(size)]

    def __len__(self) -> int:
        return len(self.kept) if self.kept is not None else self.sp.get_piece_size()

    def _to_own(self, ids: list[int]) -> list[int]:
        return ids if self.kept is None else [j for i in ids for j in self._spelled[i]]

    def _to_sp(self, ids: Sequence[int]) -> list[int]:
        return list(ids) if self.kept is None else [self.kept[i] for i in ids]

    def encode(self, text: str) -> list[int]:
        return self._to_own(self.sp.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._to_own(ids) for ids in self.sp.encode(list(texts))]

    def sample_batch(self, texts: Sequence[str], *, alpha: float, nbest_size: int, seed: int) -> list[list[int]]:
        """Random segmentations of `texts` (subword regularisation): a unigram model draws among
        its `nbest_size` best segmentations (-1: all) smoothed by `alpha`; a BPE model skips each
        merge with probability `alpha` (BPE-dropout). Within one process the same seed gives the
        same segmentations (sentencepiece 0.2 does not repeat them in another process)."""
        spm.set_random_generator_seed(seed)
        ids = self.sp.encode(list(texts), enable_sampling=True, alpha=alpha, nbest_size=nbest_size, num_threads=1)
        return [self._to_own(i) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        # Ids past EOS or special ids never reach the text.
        return self.sp.decode(self._to_sp([i for i in ids if i > EOS]))

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.id_to_piece(i) for i in ids]

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i if self.kept is None else self.kept[i])

    def piece_to_id(self, piece: str) -> int:
        i = self.sp.piece_to_id(piece)
        return i if self.kept is None else self._own[i]


def seen_pieces(tok: Tokenizer, *texts: Sequence[str]) -> list[int]:
    """A side's kept list: the specials, then the SentencePiece ids that encoding `texts` uses and
    every single-character piece (so that pieces left out can be spelled out)."""
    sp = tok.sp
    seen = {i for i in range(sp.get_piece_size()) if len(sp.id_to_piece(i)) == 1}
    for lines in texts:
        for start in range(0, len(lines), 10_000):  # a million lines of id lists would take gigabytes
            for ids in sp.encode(list(lines[start:start + 10_000])):
                seen.update(ids)
    return [PAD, UNK, BOS, EOS] + sorted(seen - {PAD, UNK, BOS, EOS})


def side_lists(src_tok: Tokenizer, tgt_tok: Tokenizer, train_src: Sequence[str], train_tgt: Sequence[str], *,
               shared: bool) -> tuple[list[int], list[int]]:
    """The source and target kept lists of tokenizer.drop_unseen. With `shared` (one embedding
    matrix serves both sides) both keep what either side uses."""
    if shared:
        kept = seen_pieces(src_tok, train_src, train_tgt)
        return kept, kept
    return seen_pieces(src_tok, train_src), seen_pieces(tgt_tok, train_tgt)


def write_kept(path: str | Path, kept: Sequence[int]) -> None:
    """One SentencePiece id per line, written atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(f"{i}\n" for i in kept))
    tmp.replace(path)


def read_kept(path: str | Path) -> list[int] | None:
    """A kept list written by write_kept, or None where the run keeps every piece (no file)."""
    path = Path(path)
    if not path.is_file():
        return None
    kept = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            kept.append(int(line))
        except ValueError:
            raise CheckpointError(f"{path}:{n}: expected a SentencePiece id, got {line[:40]!r}") from None
    return kept


def train_tokenizer(lines: Iterable[str], model_file: str | Path, *, vocab_size: int, model_type: str,
                    character_coverage: float, user_defined_symbols: Sequence[str] = ()) -> Tokenizer:
    """Train a SentencePiece model on `lines` and write it to `model_file`. Each of
    `user_defined_symbols` (e.g. language tags) becomes one piece wherever it occurs."""
    model_file = Path(model_file)
    model = io.BytesIO()
    try:
        _train(lines, model, vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
               user_defined_symbols=user_defined_symbols)
    except RuntimeError as e:
        raise ConfigError(_trainer_message(str(e), vocab_size)) from None
    tmp = model_file.with_suffix(model_file.suffix + ".tmp")
    tmp.write_bytes(model.getvalue())
    tmp.replace(model_file)
    tok = Tokenizer(model_file)
    log.info("trained SentencePiece %s (%d pieces) -> %s", model_type, len(tok), model_file)
    return tok


def add_pieces(model_file: str | Path, pieces: Sequence[str]) -> None:
    """Append `pieces` to a SentencePiece model file as user-defined pieces (each matched whole
    wherever it occurs); every other piece keeps its id and segments text as before."""
    # A model file is a serialized ModelProto, whose field 1 repeats one SentencePiece message
    # per piece (piece: field 1, score: field 2, type: field 3, USER_DEFINED = 4). A repeated
    # field may continue anywhere in a message, so appending records appends pieces.
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def record(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    path = Path(model_file)
    extra = b"".join(record(1, record(1, p.encode("utf-8")) + b"\x15" + struct.pack("<f", 0.0) + b"\x18\x04")
                     for p in pieces)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(path.read_bytes() + extra)
    tmp.replace(path)


def _trainer_message(error: str, vocab_size: int) -> str:
    """SentencePiece's complaint about the settings as one line naming the key to change."""
    found = re.search(r"required_chars\. (\d+) vs (\d+)", error)
    if found:
        return (f"tokenizer.vocab_size: {vocab_size} is too small for the {found.group(2)} characters and special "
                f"pieces of the training text; raise it or lower tokenizer.character_coverage")
    first = error.strip().splitlines()[0] if error.strip() else "no reason given"
    return f"tokenizer: SentencePiece cannot train with these settings ({first[:200]})"


def _train(lines: Iterable[str], model, *, vocab_size: int, model_type: str, character_coverage: float,
           user_defined_symbols: Sequence[str]) -> None:
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
