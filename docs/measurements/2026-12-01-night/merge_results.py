#!/usr/bin/env python3
"""Merge the results.json of several finetune_experiment.py output directories (runs of one
protocol split over two queues, one per core) into one results.md/results.json.

    python merge_results.py OUT IN1 IN2 ... --parent P --steps 800 --cap-steps 2000 [--src de --tgt fr]
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "experiments"))
import finetune_experiment as fe  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("inputs", type=Path, nargs="+")
parser.add_argument("--parent", required=True)
parser.add_argument("--steps", type=int, required=True)
parser.add_argument("--cap-steps", type=int)
parser.add_argument("--patience", type=int, default=5)
parser.add_argument("--src", default="en")
parser.add_argument("--tgt", default="fr")
args = parser.parse_args()
args.minutes, args.converge = None, args.cap_steps is not None
results = {}
for d in args.inputs:
    for r in json.loads((d / "results.json").read_text()):
        results[r["budget"], r["seed"], r["pairs"], r["mode"]] = r
args.out.mkdir(parents=True, exist_ok=True)
fe.write_results(args, sorted(results.values(), key=lambda r: (r["budget"] != "budget", r["seed"], r["pairs"],
                                                                fe.MODES.index(r["mode"]))))
