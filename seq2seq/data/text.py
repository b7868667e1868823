"""Text files: read and check them (whole, or streamed pair by pair), the files of each training
corpus, language tags, and the source encoding and detokenizing that validation and `translate`
share."""
from __future__ import annotations

import logging
import re
from itertools import zip_longest
from pathlib import Path
from typing import Iterator, Sequence

from seq2seq.config import CORPUS_TAG, DataConfig, TrainCorpus
from seq2seq.errors import DataError
from seq2seq.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def read_lines(path: str | Path, *, skip_invalid_utf8: bool = False) -> tuple[list[str], list[int]]:
    """Lines of a UTF-8 text file without their line ends, and the 1-based numbers of
    lines that were not UTF-8 (only when skipping them; otherwise that is an error)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    lines, bad = [], []
    # Split on \n only: a stray \r or U+2028 inside a line must not shift the pairing.
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            if not skip_invalid_utf8:
                raise DataError(f"{path}:{number}: not valid UTF-8 (byte {e.start}); "
                                "fix the file or set data.skip_invalid_utf8: true") from None
            bad.append(number)
            text = None
        lines.append(text.rstrip("\r") if text is not None else None)
    if raw.endswith(b"\n"):
        lines.pop()  # the empty string after the final newline is not a line
    return lines, bad


def read_parallel(src_path: str | Path, tgt_path: str | Path, *,
                  skip_invalid_utf8: bool = False) -> tuple[list[str], list[str]]:
    """Read two line-aligned files; different line counts are an error."""
    src, src_bad = read_lines(src_path, skip_invalid_utf8=skip_invalid_utf8)
    tgt, tgt_bad = read_lines(tgt_path, skip_invalid_utf8=skip_invalid_utf8)
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
                        "parallel files must have one line per sentence pair")
    if src_bad or tgt_bad:
        log.warning("skipped %d pairs with invalid UTF-8 (%s: %d lines, %s: %d lines)",
                    len(set(src_bad) | set(tgt_bad)), src_path, len(src_bad), tgt_path, len(tgt_bad))
        keep = [i for i in range(len(src)) if src[i] is not None and tgt[i] is not None]
        src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    return src, tgt


class SkippedLines:
    """Counts pairs skipped for invalid UTF-8 while streaming (data.skip_invalid_utf8)."""

    def __init__(self):
        self.src = self.tgt = self.pairs = 0


def _decode(raw: bytes, path: Path, number: int, skip: bool) -> str | None:
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as e:
        if not skip:
            raise DataError(f"{path}:{number}: not valid UTF-8 (byte {e.start}); "
                            "fix the file or set data.skip_invalid_utf8: true") from None
        return None


def _open(path: Path):
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a text file")
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def stream_pairs(src_path: str | Path, tgt_path: str | Path, *, skip_invalid_utf8: bool = False,
                 skipped: SkippedLines | None = None) -> Iterator[tuple[str, str]]:
    """The pairs of two line-aligned files, one at a time, in bounded memory. Lines are split on
    \\n only (a stray \\r or U+2028 inside a line must not shift the pairing). Different line
    counts and invalid UTF-8 are errors naming the file (and line) when they are reached; with
    `skip_invalid_utf8` such pairs are left out and counted in `skipped`."""
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    skipped = skipped if skipped is not None else SkippedLines()
    with _open(src_path) as src_file, _open(tgt_path) as tgt_file:
        for number, (src_raw, tgt_raw) in enumerate(zip_longest(src_file, tgt_file), start=1):
            if src_raw is None or tgt_raw is None:
                src_count = number - 1 + (src_raw is not None) + sum(1 for _ in src_file)
                tgt_count = number - 1 + (tgt_raw is not None) + sum(1 for _ in tgt_file)
                raise DataError(f"{src_path} has {src_count} lines but {tgt_path} has {tgt_count}: "
                                "parallel files must have one line per sentence pair")
            src = _decode(src_raw.removesuffix(b"\n"), src_path, number, skip_invalid_utf8)
            tgt = _decode(tgt_raw.removesuffix(b"\n"), tgt_path, number, skip_invalid_utf8)
            if src is None or tgt is None:
                skipped.src += src is None
                skipped.tgt += tgt is None
                skipped.pairs += 1
                continue
            yield src, tgt


def corpus_files(data: DataConfig, corpus: TrainCorpus) -> tuple[str, str]:
    """The source and target files of a training corpus: PREFIX.SRC_LANG and PREFIX.TGT_LANG."""
    return f"{corpus.path}.{data.src_lang}", f"{corpus.path}.{data.tgt_lang}"


def check_files_exist(data: DataConfig) -> None:
    """Every training and validation file is there, or a DataError naming the first missing one,
    its config key, and for Multi30k's paths the script that downloads it."""
    wanted = [(f"data.train[{i}]", name) for i, c in enumerate(data.train) for name in corpus_files(data, c)]
    wanted += [("data.valid", f"{data.valid}.{lang}") for lang in (data.src_lang, data.tgt_lang)]
    for key, name in wanted:
        if not Path(name).exists():
            hint = (" (get Multi30k, which the shipped configs read from data/multi30k, with scripts/get_multi30k.sh "
                    "from the seq2seq repository)" if "multi30k" in name.lower() else "")
            raise DataError(f"{name}: file not found ({key} in the config){hint}")


def corpus_name(data: DataConfig, corpus: TrainCorpus) -> str:
    """A training corpus as logs and errors name it: PREFIX.{SRC_LANG,TGT_LANG}."""
    return f"{corpus.path}.{{{data.src_lang},{data.tgt_lang}}}"


def describe_train(data: DataConfig) -> str:
    """data.train for people: each corpus's files, with its weight when there are several."""
    if len(data.train) == 1:
        return corpus_name(data, data.train[0])
    return ", ".join(f"{corpus_name(data, c)} (weight {c.weight:g})" for c in data.train)


def stream_corpus(data: DataConfig, corpus: TrainCorpus,
                  skipped: SkippedLines | None = None) -> Iterator[tuple[str, str]]:
    """The pairs of one training corpus, streamed (see stream_pairs)."""
    src, tgt = corpus_files(data, corpus)
    return stream_pairs(src, tgt, skip_invalid_utf8=data.skip_invalid_utf8, skipped=skipped)


TAG_PATTERN = re.compile(r"<2[^<>\s]+>")


def target_tag(lang: str) -> str:
    """The source prefix that asks a multilingual model for target language `lang`."""
    return f"<2{lang}>"


def tag_sources(lines: Sequence[str], tgt_lang: str) -> list[str]:
    """Prefix every source with <2TGT_LANG>, except those that already start with a tag
    (and empty ones, which stay empty)."""
    tag = target_tag(tgt_lang)
    return [line if TAG_PATTERN.match(line) or not line.strip() else f"{tag} {line}" for line in lines]


def tag_training_sources(lines: Sequence[str], *, lang: str | None, corpus_tag: str | None) -> list[str]:
    """Sources of a training corpus as the model reads them: the target-language tag <2LANG>
    (data.src_prefix_tag) and, in front of it, the corpus's own tag (data.train[].tag); empty
    sources stay empty. Translation never adds a corpus tag."""
    lines = tag_sources(lines, lang) if lang is not None else list(lines)
    return [f"{corpus_tag} {line}" if line.strip() else line for line in lines] if corpus_tag else lines


def corpus_tags(data: DataConfig) -> list[str]:
    """The distinct tags of data.train's corpora, in order (each must be one source piece)."""
    return list(dict.fromkeys(c.tag for c in data.train if c.tag))


def tag_piece(tag: str) -> str:
    """The SentencePiece piece of a corpus tag: with the word-start mark, so that a source's
    tag is its first piece (a bare <bt> is matched after a lone word-start piece)."""
    return "\u2581" + tag


def leading_tags(line: str) -> tuple[list[str], str]:
    """The tags a training source starts with (a corpus tag, then a language tag; either may be
    missing) and the text after them."""
    tags = []
    for pattern in (CORPUS_TAG, TAG_PATTERN):
        m = pattern.match(line)
        if m is not None:
            tags.append(m.group(0))
            line = line[m.end():].lstrip(" ")
    return tags, line


def tags_in(lines: Sequence[str]) -> list[str]:
    """The distinct language tags that start lines (after a corpus tag), sorted (they must
    become single pieces)."""
    return sorted({tag for line in lines for tag in leading_tags(line)[0] if TAG_PATTERN.fullmatch(tag)})


def encode_sources(lines: Sequence[str], src_tok: Tokenizer, *, max_len: int,
                   tgt_lang: str | None = None) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Source lines as the model reads them, for validation and `translate` alike: stripped,
    tagged with <2TGT_LANG> when `tgt_lang` is given (data.src_prefix_tag), encoded and cut to
    `max_len` pieces. Returns the ids and (index, pieces) of each line that was cut."""
    lines = [line.strip() for line in lines]
    if tgt_lang is not None:
        lines = tag_sources(lines, tgt_lang)
    ids = src_tok.encode_batch(lines)
    cut = [(n, len(s)) for n, s in enumerate(ids) if len(s) > max_len]
    for n, _ in cut:
        ids[n] = ids[n][:max_len]
    return ids, cut


def detokenize(tgt_tok: Tokenizer, ids: Sequence[int]) -> str:
    """Output ids as text. A translation is one line, whatever pieces the model produced (no
    \\r, U+2028, ... either), so line n of the output is always line n of the input."""
    return " ".join(tgt_tok.decode(ids).splitlines())
