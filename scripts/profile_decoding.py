#!/usr/bin/env python3
"""Where decoding's time goes: torch.profiler over `translate` of a trained run on a test set,
summed by operator and by kind (matrix products, elementwise, the rest), with the shapes of the
top operators so that each layer's product can be told apart.

    python scripts/profile_decoding.py --model RUN_DIR --beam 5 [--quantize int8]

Prints what it measured and writes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from profile_training import report  # noqa: E402  (scripts/ is on sys.path)
from update_loop import ROOT  # noqa: E402  (which also puts the checkout on sys.path)

from seq2seq.decoding.translator import Translator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="run directory")
    ap.add_argument("--input", default=str(ROOT.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.en"))
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--quantize", choices=["int8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    translator = Translator.load(args.model, device="cpu", quantize=args.quantize)
    lines = Path(args.input).read_text(encoding="utf-8").splitlines()[:args.sentences]
    options = dict(beam_size=args.beam, batch_size=args.batch_size)
    translator.translate(lines[:args.batch_size], **options)  # first-call costs out of the profile

    start = time.perf_counter()
    plain = translator.translate(lines, **options)
    unprofiled = time.perf_counter() - start
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        hyps = translator.translate(lines, **options)
    seconds = time.perf_counter() - start
    assert hyps == plain
    print(f"{len(lines)} sentences, beam {args.beam}, batches of {args.batch_size}, {args.threads} threads, "
          f"{args.quantize or 'float32'}: {unprofiled:.2f} s without the profiler, {seconds:.2f} s under it")
    calls = report(prof.key_averages(), top=args.top)
    print("\nthe same, operators split by input shapes:", end="")
    report(prof.key_averages(group_by_input_shape=True), top=args.top)
    print(f"\n{calls / len(lines):.0f} operator calls per sentence")
    return 0


if __name__ == "__main__":
    sys.exit(main())
