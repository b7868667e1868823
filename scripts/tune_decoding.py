#!/usr/bin/env python3
"""The length penalty (GNMT's alpha) chosen on validation data: a run's validation set (data.valid
of its config) decoded with each alpha, its BLEU per alpha, and the best. Test data is never read.

    python scripts/tune_decoding.py --model runs/multi30k_en_de --alphas 0.6,0.8,1.0,1.2,1.4 --beam-size 5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.errors import UserError  # noqa: E402
from seq2seq.metrics import score_all  # noqa: E402
from seq2seq.run.rundir import BEST  # noqa: E402
from seq2seq.training.validation import read_validation  # noqa: E402
from seq2seq.decoding.translator import Translator  # noqa: E402


def alphas(text: str) -> list[float]:
    try:
        values = [float(a) for a in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or any(not 0 <= a <= 100 for a in values):
        raise argparse.ArgumentTypeError(f"every alpha must be from 0 to 100, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="RUN_DIR")
    parser.add_argument("--checkpoint", default=BEST, help="checkpoint file inside RUN_DIR (default: best.pt)")
    parser.add_argument("--alphas", type=alphas, default=[0.6, 0.8, 1.0, 1.2, 1.4],
                        help="length penalties to try, comma-separated (default: 0.6,0.8,1.0,1.2,1.4)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    try:
        translator = Translator.load(args.model, device=args.device, checkpoint=args.checkpoint)
        sources, refs = read_validation(translator.config.data)
    except UserError as e:
        print(f"tune_decoding: error: {e}", file=sys.stderr)
        return 2
    rows = []
    for alpha in args.alphas:
        scores = score_all(translator.translate(sources, beam_size=args.beam_size, length_penalty=alpha), refs)
        rows.append((alpha, scores["bleu"], scores["chrf"]))
    best = max(rows, key=lambda r: r[1])  # the first of equals: the smaller alpha, as listed
    d = translator.config.data
    print(f"{len(sources)} validation sentences ({d.valid}.{d.src_lang}), beam {args.beam_size}, {args.model}")
    print("| alpha | BLEU | chrF | |\n|---:|---:|---:|---|")
    for alpha, bleu, chrf in rows:
        print(f"| {alpha:g} | {bleu:.2f} | {chrf:.2f} | {'best' if (alpha, bleu, chrf) == best else ''} |")
    print(f"best: alpha {best[0]:g} (validation BLEU {best[1]:.2f}); use it with decoding.length_penalty: {best[0]:g} "
          f"or translate --length-penalty {best[0]:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
