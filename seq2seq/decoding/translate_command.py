"""The `translate` command behind its flags: the sampling flags checked and turned into a
`Sampling`, and the text streams: lines in from a file or standard input (line n out is always
line n in), translations out as plain text, or as TSV with scores or n-best lists, and attention
heatmaps beside them; a progress bar on a terminal."""
from __future__ import annotations

import io
import sys
from pathlib import Path

from tqdm import tqdm

from seq2seq.data import groups
from seq2seq.decoding.draws import Sampling
from seq2seq.decoding.translator import Translator
from seq2seq.errors import DataError, DecodingError


class EmptyOutputs:
    """Counts the translations that came out empty for a non-empty input line: a model that
    learned too little (a training run cut short, on a slow or busy machine) writes one empty
    line per input, and BLEU 0.00 would be the first sign of it."""

    def __init__(self):
        self.pending: list[bool] = []  # inputs read and not yet translated: was each non-empty?
        self.inputs = self.empty = 0   # non-empty inputs translated, and how many came out empty

    def reading(self, texts):
        for text in texts:
            self.pending.append(bool(text.strip()))
            yield text

    def wrote(self, translations: list[str]) -> None:
        for text in translations:
            if self.pending.pop(0):
                self.inputs += 1
                self.empty += not text.strip()

    def warn(self, output: str) -> None:
        if self.inputs and self.empty * 2 > self.inputs:
            print(f"warning: {self.empty:,} of {self.inputs:,} non-empty input lines got an empty translation "
                  f"in {output}: the model has learned too little (train longer; its train.log says how many "
                  f"updates it made)", file=sys.stderr)


def sampling_from_flags(*, sample: bool, top_k: int | None, temperature: float | None, seed: int | None,
                        beam_size: int | None, nbest: int | None) -> Sampling | None:
    """translate's --sample options as a Sampling, or None; a combination that would be
    ignored or is out of range is a DecodingError."""
    from seq2seq.config import SEED_MAX
    given = [flag for flag, value in (("--top-k", top_k), ("--temperature", temperature),
                                      ("--seed", seed)) if value is not None]
    if not sample:
        if given:
            raise DecodingError(f"{given[0]}: only used with --sample")
        return None
    if (beam_size is not None and beam_size > 1) or nbest is not None:
        raise DecodingError("--sample draws one translation per input; leave out --beam-size (or give 1) and --nbest")
    if top_k is not None and top_k < 1:
        raise DecodingError(f"--top-k: must be at least 1, got {top_k}")
    if temperature is not None and not 0 < temperature < float("inf"):
        raise DecodingError(f"--temperature: must be a number above 0, got {temperature}")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise DecodingError(f"--seed: must be from 0 to {SEED_MAX}, got {seed}")
    defaults = Sampling()
    return Sampling(seed=defaults.seed if seed is None else seed, top_k=top_k,
                    temperature=defaults.temperature if temperature is None else temperature)


def open_input(path: str | None):
    """The text stream of `path`, or standard input for None or "-"; DataError when it cannot be read."""
    # Split on \n only and keep undecodable bytes visible, so line n out is always line n in.
    if path is None or path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: " + ("is a directory, expected a text file" if p.is_dir() else "file not found"))
    try:
        return open(p, encoding="utf-8", errors="replace", newline="\n")
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None


def lines(stream):
    """The stream's lines without their newline."""
    for line in stream:
        yield line[:-1] if line.endswith("\n") else line


def count_lines(path: str | None) -> int | None:
    """How many lines the file holds (for the progress bar); None for standard input."""
    if path is None or path == "-":
        return None
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def translate_file(translator: Translator, *, input_path: str | None, output_path: str | None, options: dict,
                   nbest: int | None, scores: bool, attention: str | None, quiet: bool) -> None:
    """Translate `input_path` (a file, or standard input for None or "-") line by line into
    `output_path` (a file, or standard output for None). `options`: translate_stream's decoding options;
    `nbest`, `scores` and `attention` (a folder) ask for write_detailed's output."""
    detailed = nbest is not None or scores or attention is not None
    source = open_input(input_path)
    interactive = input_path in (None, "-") and sys.stdin.isatty()
    show_bar = not quiet and not interactive and sys.stderr.isatty()
    try:
        out = (open(output_path, "w", encoding="utf-8", newline="\n") if output_path
               else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n", line_buffering=True))
    except OSError as e:
        raise DataError(f"{output_path}: cannot write ({e.strerror})") from None
    bar = tqdm(total=count_lines(input_path) if show_bar else None, disable=not show_bar, unit="sent",
               desc="translating", dynamic_ncols=True, leave=False)
    empty = EmptyOutputs()
    try:
        with source:
            if not detailed:
                chunk = 1 if interactive else None
                for text in translator.translate_stream(empty.reading(lines(source)), chunk_lines=chunk, **options):
                    out.write(text + "\n")
                    empty.wrote([text])
                    bar.update(1)
            else:
                size = 1 if interactive else (options["batch_size"] or translator.config.decoding.batch_size) * 4
                index = 0
                for chunk in groups(empty.reading(lines(source)), size):
                    results = translator.translate_detailed(chunk, nbest=nbest or 1, return_attention=bool(attention),
                                                            first_line=index + 1, **options)
                    for hyps in results:
                        write_detailed(out, index, hyps, nbest=nbest, scores=scores, attention=attention)
                        empty.wrote([hyps[0].text])
                        index += 1
                        bar.update(1)
            out.flush()
        empty.warn(output_path or "standard output")
    finally:
        bar.close()
        if output_path:
            out.close()
        else:
            out.detach()


def write_detailed(out, index: int, hyps, *, nbest: int | None, scores: bool, attention: str | None) -> None:
    """One input's output: TSV for `nbest`/`scores`, plain text otherwise; a heatmap of the best
    translation's attention into the folder `attention` when given."""
    if nbest is not None:
        for rank, h in enumerate(hyps, 1):
            out.write(f"{index}\t{rank}\t{h.score:.4f}\t{h.text.replace(chr(9), ' ')}\n")
    elif scores:
        out.write(f"{hyps[0].text.replace(chr(9), ' ')}\t{hyps[0].score:.4f}\n")
    else:
        out.write(hyps[0].text + "\n")
    best = hyps[0]
    if attention and best.attention is not None:
        from seq2seq.run.plot import plot_attention
        plot_attention(best.attention, best.src_pieces, best.tgt_pieces + ["</s>"],
                       Path(attention) / f"{index:05d}.png")
