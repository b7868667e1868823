"""The `seq2seq` command: thin subcommands over the library."""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError, load_config
from .data import DataError, read_lines

log = logging.getLogger("seq2seq")


def _open_input(path: str | None):
    # Split on \n only and keep undecodable bytes visible, so line n out is always line n in.
    if path is None or path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: " + ("is a directory, expected a text file" if p.is_dir() else "file not found"))
    return open(p, encoding="utf-8", errors="replace", newline="\n")


def _lines(stream):
    for line in stream:
        yield line[:-1] if line.endswith("\n") else line


def cmd_train(args) -> int:
    from .trainer import train
    if args.config is None and not args.resume:
        raise ConfigError("--config: a config file is needed (or --resume with --run-dir)")
    if args.run_dir is None:
        if args.config is None:
            raise ConfigError("--run-dir: needed with --resume when no --config is given")
        args.run_dir = str(Path("runs") / Path(args.config).stem)
    cfg = load_config(args.config, args.set)
    train(cfg, args.run_dir, resume=args.resume, quiet=args.quiet)
    return 0


def cmd_translate(args) -> int:
    from .translator import Translator
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    translator = Translator.load(args.model, device=args.device, checkpoint=args.checkpoint,
                                 quantize=args.quantize)
    options = dict(beam_size=args.beam_size, batch_size=args.batch_size, length_penalty=args.length_penalty,
                   max_len_ratio=args.max_len_ratio)
    source = _open_input(args.input)
    interactive = args.input in (None, "-") and sys.stdin.isatty()
    out = (open(args.output, "w", encoding="utf-8", newline="\n") if args.output
           else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n", line_buffering=True))
    try:
        with source:
            chunk = 1 if interactive else None
            for text in translator.translate_stream(_lines(source), chunk_lines=chunk, **options):
                out.write(text + "\n")
            out.flush()
    finally:
        if args.output:
            out.close()
        else:
            out.detach()
    return 0


def cmd_evaluate(args) -> int:
    from .metrics import score_all
    hyps, _ = read_lines(args.hyp)
    refs, _ = read_lines(args.ref)
    if len(hyps) != len(refs):
        raise DataError(f"{args.hyp} has {len(hyps)} lines but {args.ref} has {len(refs)}")
    scores = score_all(hyps, refs)
    if args.json:
        print(json.dumps({k: v for k, v in scores.items() if not k.endswith("_text")}, indent=2))
    else:
        print(f"BLEU            {scores['bleu']:.2f}  {scores['bleu_signature']}")
        print(f"BLEU lowercased {scores['bleu_lowercase']:.2f}  {scores['bleu_lowercase_signature']}")
        print(f"chrF            {scores['chrf']:.2f}  {scores['chrf_signature']}")
        print(scores["bleu_text"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seq2seq", description="Recurrent neural machine translation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", help="YAML experiment config")
    p.add_argument("--run-dir", help="where checkpoints, tokenizers and logs go (default: runs/CONFIG_NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set training.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt exactly where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bar or console log (train.log is still written)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("translate", help="translate raw text, one sentence per line")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="a run directory written by train")
    p.add_argument("--input", help="input file (default: standard input)")
    p.add_argument("--output", help="output file (default: standard output)")
    p.add_argument("--beam-size", type=int, help="beam width; 1 is greedy (default: the run's decoding.beam_size)")
    p.add_argument("--batch-size", type=int, help="sentences per batch (default: decoding.batch_size)")
    p.add_argument("--length-penalty", type=float, help="GNMT length-penalty alpha")
    p.add_argument("--max-len-ratio", type=float, help="output at most this times the source length (+ offset)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file inside RUN_DIR (default: best.pt)")
    p.add_argument("--quantize", choices=["int8"],
                   help="int8 dynamic quantization of the linear and encoder RNN layers (CPU only)")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("evaluate", help="score hypotheses against references with sacreBLEU")
    p.add_argument("--hyp", required=True, help="hypotheses, one per line")
    p.add_argument("--ref", required=True, help="references, one per line")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("beam_size", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            print(f"seq2seq {args.command}: error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    from .trainer import Interrupted, TrainingError
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError, TrainingError) as e:
        print(f"seq2seq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. --device cuda without a GPU
        if "device" in str(e):
            print(f"seq2seq {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise
    except Interrupted:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
