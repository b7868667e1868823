#!/usr/bin/env python3
"""Fine-tuning versus training from scratch on small English->French data.

For each training size (default: the first 2,000 and 5,000 pairs of DATA/train.{en,fr}) it
trains one run per mode of the parent's architecture under the same wall-clock budget
(training.max_minutes; validation time is not counted):
  transfer     fine-tuned from PARENT_DIR with a new vocabulary (configs/finetune_en_fr.yaml)
  keep         fine-tuned from PARENT_DIR with the parent's vocabulary (unknown characters allowed)
  keep_source  fine-tuned from PARENT_DIR; English keeps the parent's tokenizer, French is transferred
  scratch      the same config without init_from (fresh weights, vocabulary trained on the new data)
then translates DATA/test_2016_flickr.en with beam 5 and scores it with sacreBLEU against
test_2016_flickr.fr. With several --seeds, every run is repeated with each training seed
(OUT/seedS/MODE_N). Results go to OUT/results.md (every run, then each fine-tuned mode's gain
over scratch per seed and on average) and OUT/results.json.

    python scripts/finetune_experiment.py runs/multi30k_en_de 20
    python scripts/finetune_experiment.py runs/multi30k_en_de 4 --sizes 2000 --modes transfer scratch --seeds 1 2 3
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.config import FinetuneConfig, dump_yaml  # noqa: E402
from seq2seq.data import read_lines  # noqa: E402
from seq2seq.metrics import score_all  # noqa: E402
from seq2seq.start import load_run_config  # noqa: E402

MODES = ("transfer", "keep", "keep_source", "scratch")


def run(*args: str) -> None:
    cmd = [sys.executable, "-m", "seq2seq", *args]
    print("+", " ".join(cmd), flush=True)
    # The seq2seq of this checkout, wherever the script is started from.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run(cmd, check=True, env=env)


def subset(data: Path, out: Path, n: int) -> Path:
    """The first n training pairs, as OUT/data/train{n}.{en,fr}; returns the path prefix."""
    out.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "fr"):
        lines, _ = read_lines(data / f"train.{lang}")
        if len(lines) < n:
            sys.exit(f"{data}/train.{lang} has only {len(lines)} lines, fewer than {n}")
        (out / f"train{n}.{lang}").write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
    return out / f"train{n}"


def run_summary(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    finetune = run_dir / "finetune.json"  # written by a fine-tuned run only
    carried = {side: f"{n}/{size}" for side, (n, size, _) in
               json.loads(finetune.read_text())["pieces_carried_over"].items()} if finetune.exists() else {}
    return {"steps": records[-1]["step"], "train_minutes": round(records[-1]["elapsed"] / 60, 1),
            "best_valid_bleu": max(r["bleu"] for r in records), "carried": carried}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parent", type=Path, help="the en->de run to fine-tune from (e.g. runs/multi30k_en_de)")
    parser.add_argument("minutes", type=float, help="training budget per run in minutes (training.max_minutes)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k",
                        help="directory with train/val/test_2016_flickr .en/.fr (default: ../shared/data/multi30k)")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_en_fr"), help="where runs and results go")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "finetune_en_fr.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000], help="training pairs per run")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="training seeds (default: 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="extra config override for every run (repeatable)")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("minutes must be positive")

    train_prefixes = {n: subset(args.data, args.out / "data", n) for n in args.sizes}
    results = []
    for seed in args.seeds:
        for n in args.sizes:
            for mode in args.modes:
                results.append(one_run(args, seed, n, mode, train_prefixes[n]))
                print(json.dumps(results[-1]), flush=True)
                write_results(args, results)
    return 0


def one_run(args, seed: int, n: int, mode: str, train_prefix: Path) -> dict:
    """Train (unless OUT/seedS/MODE_N already holds a best.pt) and score one run."""
    out = args.out / f"seed{seed}"
    run_dir = out / f"{mode}_{n}"
    sets = [f"init_from={args.parent}", f"data.train={train_prefix}", f"data.valid={args.data / 'val'}",
            f"data.test={args.data / 'test_2016_flickr'}", f"training.max_minutes={args.minutes}",
            *args.set, f"training.seed={seed}"]
    if mode == "keep":
        # Characters the parent's tokenizer lacks become unknown: part of what keep costs.
        sets += ["finetune.vocabulary=keep", "finetune.max_unknown_chars=1000"]
    else:
        # scratch resolves as transfer does: one joint tokenizer, like the parent's.
        sets += [f"finetune.vocabulary={'transfer' if mode == 'scratch' else mode}"]
    # Resolve the config here (architecture inherited from the parent) so that scratch
    # trains exactly the same model and settings, only without the parent.
    cfg = load_run_config(args.config, sets)
    if mode == "scratch":
        cfg = dataclasses.replace(cfg, init_from=None, finetune=FinetuneConfig())
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / f"{mode}_{n}.yaml"
    config_file.write_text(dump_yaml(cfg), encoding="utf-8")
    if not (run_dir / "best.pt").exists():
        run("train", "--config", str(config_file), "--run-dir", str(run_dir), "--quiet")
    hyp = run_dir / "test_2016_flickr.hyp.fr"
    run("translate", "--model", str(run_dir), "--input", str(args.data / "test_2016_flickr.en"),
        "--output", str(hyp), "--beam-size", "5")
    hyps, _ = read_lines(hyp)
    refs, _ = read_lines(args.data / "test_2016_flickr.fr")
    scores = score_all(hyps, refs)
    return {"seed": seed, "pairs": n, "mode": mode, **run_summary(run_dir), "test_bleu": round(scores["bleu"], 2),
            "test_chrf": round(scores["chrf"], 2), "bleu_signature": scores["bleu_signature"]}


def gains(results: list[dict]) -> dict:
    """{(pairs, mode): {seed: test BLEU minus scratch's of the same seed and size}} for the
    fine-tuned modes whose scratch run is done."""
    scratch = {(r["seed"], r["pairs"]): r["test_bleu"] for r in results if r["mode"] == "scratch"}
    table: dict = {}
    for r in results:
        if r["mode"] != "scratch" and (r["seed"], r["pairs"]) in scratch:
            table.setdefault((r["pairs"], r["mode"]), {})[r["seed"]] = round(
                r["test_bleu"] - scratch[r["seed"], r["pairs"]], 2)
    return table


def write_results(args, results: list[dict]) -> None:
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    lines = [f"English->French on Multi30k test_2016_flickr, beam 5; parent {args.parent}; "
             f"{args.minutes:g} minutes of training per run (validation not counted).", "",
             "| seed | pairs | start | steps | train min | best valid BLEU | test BLEU | test chrF "
             "| pieces carried (src, tgt) |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        carried = ", ".join(r["carried"].get(s, "-") for s in ("source", "target")) if r["carried"] else "-"
        lines.append(f"| {r['seed']} | {r['pairs']} | {r['mode']} | {r['steps']} | {r['train_minutes']} | "
                     f"{r['best_valid_bleu']:.2f} | {r['test_bleu']:.2f} | {r['test_chrf']:.2f} | {carried} |")
    table = gains(results)
    if table:
        lines += ["", "Gain over scratch (test BLEU, same seed and pairs):", "",
                  "| pairs | start | per seed | mean |", "|---:|---|---|---:|"]
        for (n, mode), by_seed in sorted(table.items()):
            per_seed = ", ".join(f"{seed}: {g:+.2f}" for seed, g in sorted(by_seed.items()))
            mean = sum(by_seed.values()) / len(by_seed)
            lines.append(f"| {n} | {mode} | {per_seed} | **{mean:+.2f}** |")
    lines += ["", f"sacreBLEU: {results[-1]['bleu_signature']}"]
    (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
