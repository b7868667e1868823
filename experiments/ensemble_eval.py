#!/usr/bin/env python3
"""Each run alone and all of them as an ensemble on one test set: BLEU (cased and lowercased),
chrF, and decoding speed, with the same beam.

    python experiments/ensemble_eval.py runs/s1 runs/s2 runs/s3 --src data/multi30k/test_2016_flickr.en \
        --ref data/multi30k/test_2016_flickr.de --out ensemble
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.data import read_lines  # noqa: E402
from seq2seq.metrics import score_all  # noqa: E402
from seq2seq.decoding.translator import Translator  # noqa: E402


def decode(models: list[str], lines: list[str], refs: list[str], beam: int, out: Path, name: str) -> dict:
    translator = Translator.load(models[0] if len(models) == 1 else models, device="cpu")
    translator.translate(lines[:64], beam_size=beam)  # first-call costs out of the timing
    start = time.perf_counter()
    hyps = translator.translate(lines, beam_size=beam)
    seconds = time.perf_counter() - start
    (out / f"{name}.hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    s = score_all(hyps, refs)
    return {"name": name, "models": models, "bleu": round(s["bleu"], 2), "bleu_lowercase": round(s["bleu_lowercase"], 2),
            "chrf": round(s["chrf"], 2), "seconds": round(seconds, 2), "sent_per_s": round(len(lines) / seconds, 1),
            "signature": s["bleu_signature"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="run directories sharing their tokenizers")
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for hypotheses and results.{json,md}")
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines, _ = read_lines(args.src)
    refs, _ = read_lines(args.ref)
    rows = [decode([m], lines, refs, args.beam_size, args.out, f"member{i + 1}") for i, m in enumerate(args.models)]
    rows.append(decode(args.models, lines, refs, args.beam_size, args.out, "ensemble"))
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    best = max(rows[:-1], key=lambda r: r["bleu"])
    table = [f"{len(lines)} sentences of {args.src.name}, beam {args.beam_size}, one process, CPU.", "",
             "| decoded by | BLEU | BLEU lowercased | chrF | sent/s |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['name']} ({', '.join(r['models'])}) | {r['bleu']:.2f} | {r['bleu_lowercase']:.2f} | "
                     f"{r['chrf']:.2f} | {r['sent_per_s']} |")
    table += ["", f"Ensemble against the best member: {rows[-1]['bleu'] - best['bleu']:+.2f} BLEU "
                  f"({rows[-1]['bleu_lowercase'] - best['bleu_lowercase']:+.2f} lowercased).",
              f"sacreBLEU: {rows[-1]['signature']}"]
    (args.out / "results.md").write_text("\n".join(table) + "\n", encoding="utf-8")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
