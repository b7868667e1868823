#!/usr/bin/env python3
"""Where each run's validation stopped improving: for every OUT/seedS/MODE_N/metrics.jsonl,
the update of the best validation BLEU (greedy) and of the lowest validation loss, and the
BLEU at the last validation. Tells whether a run capped at --cap-steps was still learning.

    python curves.py /work/exp/ft2000 /work/exp/ft5000 ...
"""
import json
import sys
from pathlib import Path

print("| run | last update | best valid BLEU (update) | lowest valid loss (update) | last valid BLEU |")
print("|---|---:|---:|---:|---:|")
for out in map(Path, sys.argv[1:]):
    for metrics in sorted(out.glob("seed*/*/metrics.jsonl")):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        bleu = max(rows, key=lambda r: r["bleu"])
        loss = min(rows, key=lambda r: r["valid_loss"])
        print(f"| {out.name}/{metrics.parent.parent.name}/{metrics.parent.name} | {rows[-1]['step']} | "
              f"{bleu['bleu']:.2f} ({bleu['step']}) | {loss['valid_loss']:.3f} ({loss['step']}) | {rows[-1]['bleu']:.2f} |")
