"""Beam search with the block-wise candidate selection (search.best_candidates) against the
plain topk over every beam's extension sum it replaced, alternating rounds in one process.

    python docs/measurements/2026-11-30/block_topk_probe.py RUN_DIR [--quantize int8] [--rounds 4]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from seq2seq import search  # noqa: E402
from seq2seq.translator import Translator  # noqa: E402

blockwise = search.best_candidates


def sum_topk(scores, lp, count):
    """What beam_search did before: form every extension's score and rank them all."""
    n, k, vocab = lp.shape
    top, ids = (scores.unsqueeze(-1) + lp).view(n, k * vocab).topk(count, dim=-1)
    return top, ids // vocab, ids % vocab


ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("--quantize", choices=["int8"])
ap.add_argument("--beam", type=int, default=5)
ap.add_argument("--rounds", type=int, default=4)
ap.add_argument("--input", default=str(ROOT.parent / "shared/data/multi30k/test_2016_flickr.en"))
args = ap.parse_args()
torch.set_num_threads(2)
translator = Translator.load(args.run, device="cpu", quantize=args.quantize)
lines = Path(args.input).read_text(encoding="utf-8").splitlines()
translator.translate(lines[:64], beam_size=args.beam)
times = {"sum_topk": [], "blockwise": []}
outputs = {}
for r in range(args.rounds):
    for name, fn in ((("sum_topk", sum_topk), ("blockwise", blockwise)) if r % 2 == 0
                     else (("blockwise", blockwise), ("sum_topk", sum_topk))):
        search.best_candidates = fn
        start = time.perf_counter()
        outputs[name] = translator.translate(lines, beam_size=args.beam)
        times[name].append(time.perf_counter() - start)
    print(f"round {r + 1}: sum_topk {times['sum_topk'][-1]:.2f} s, blockwise {times['blockwise'][-1]:.2f} s", flush=True)
same = sum(a == b for a, b in zip(outputs["sum_topk"], outputs["blockwise"]))
ratios = [a / b for a, b in zip(times["sum_topk"], times["blockwise"])]
print(f"{args.run}, beam {args.beam}, {args.quantize or 'float32'}, {len(lines)} sentences: "
      f"median sum_topk {statistics.median(times['sum_topk']):.2f} s, blockwise {statistics.median(times['blockwise']):.2f} s, "
      f"median ratio {statistics.median(ratios):.3f} (rounds: {', '.join(f'{x:.3f}' for x in ratios)}); "
      f"identical outputs: {same}/{len(lines)}")
