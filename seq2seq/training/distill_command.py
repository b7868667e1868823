"""The `seq2seq distill` command: its flags, and the one line it prints when done. Kept out of
cli.py (which only registers it) so that the command line stays one screen per command; the
work is distill.py's. Importing this module costs nothing beyond argparse: the library is
imported when the command runs."""
from __future__ import annotations

import argparse
import logging
import sys

from seq2seq.run.rundir import BEST


def add_distill(sub: argparse._SubParsersAction) -> None:
    """Register `distill` among the subcommands."""
    p = sub.add_parser("distill", help="translate the training corpora of a student's config with trained teachers "
                                       "(sequence-level knowledge distillation) and write the student's config")
    p.add_argument("--model", required=True, action="append", metavar="RUN_DIR",
                   help="a teacher run directory (or export folder); give it several times for an ensemble, "
                        "as translate takes it")
    p.add_argument("--config", required=True, metavar="STUDENT.yaml",
                   help="the student's config: the source side of each corpus in its data.train is translated")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where the distilled corpora and DIR/config.yaml go (new, empty, or a distillation to "
                        "continue)")
    p.add_argument("--beam-size", type=int, help="beam width (default: the first teacher's decoding.beam_size)")
    p.add_argument("--batch-size", type=int, help="sentences per batch (default: the first teacher's "
                                                  "decoding.batch_size)")
    p.add_argument("--chunk-lines", type=int, metavar="N",
                   help="lines made durable at a time, where a killed run resumes (default: 4 batches)")
    p.add_argument("--references", type=float, metavar="WEIGHT",
                   help="also train on the original corpora, each at WEIGHT times its own weight (default: the "
                        "distilled corpora only)")
    p.add_argument("--checkpoint", default=BEST, help="checkpoint file inside each RUN_DIR (default: best.pt)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the teachers decode (default: auto)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="float type of the teachers' products (default: the first teacher's decoding.precision)")
    p.add_argument("--quantize", choices=["int8"], help="int8 dynamic quantization of the teachers (CPU only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.set_defaults(func=cmd_distill)


def cmd_distill(args) -> int:
    from seq2seq.errors import DecodingError
    from seq2seq.training.distill import Teachers, distill
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.chunk_lines is not None and args.chunk_lines < 1:
        raise DecodingError("--chunk-lines: must be at least 1")
    teachers = Teachers(tuple(args.model), checkpoint=args.checkpoint, device=args.device, precision=args.precision,
                        quantize=args.quantize)
    done = distill(teachers, student_config=args.config, out=args.out, beam_size=args.beam_size,
                   batch_size=args.batch_size, chunk_lines=args.chunk_lines, references=args.references,
                   quiet=args.quiet)
    if not args.quiet:
        speed = f" ({done.new_lines / done.seconds:,.1f} sentences/s)" if done.new_lines and done.seconds > 0 else ""
        print(f"distilled {done.lines:,} lines ({done.new_lines:,} now, in {done.seconds:,.1f} s{speed}); "
              f"train the student: seq2seq train {done.config} --run-dir runs/STUDENT_NAME")
    return 0
