#!/usr/bin/env python3
"""Fine-tuning versus training from scratch on small English->French (or --src/--tgt) data.

For each training size (default: the first 2,000 and 5,000 pairs of DATA/train.{en,fr}) it
trains one run per mode of the parent's architecture under the same budget: MINUTES of training
(training.max_minutes; validation not counted) or, with --steps, that many updates (a budget in
updates does not depend on what else the machine runs, so --jobs can run several at once):
  transfer        fine-tuned from PARENT_DIR with a new vocabulary, new pieces fresh
  keep            fine-tuned from PARENT_DIR with the parent's vocabulary (unknown characters allowed)
  keep_source     fine-tuned from PARENT_DIR; the source side keeps the parent's tokenizer, the
                  target side is transferred, new pieces fresh (the setting before finetune.new_pieces)
  spelled         keep_source, new pieces started from their spelling (finetune.new_pieces: spelled)
  spelled_warmup  spelled, and only embeddings and output layer train for the first
                  --warmup-steps updates (finetune.warmup_steps)
  scratch         the same config without init_from (fresh weights, vocabulary trained on the new data)
then translates DATA/test_2016_flickr.SRC with beam 5 and scores it with sacreBLEU against
test_2016_flickr.TGT (--src en --tgt fr by default; another pair of Multi30k's languages, e.g.
--src de --tgt fr, gives a child whose source side the parent's encoder never read). With
--converge, each run then continues (resumed exactly where the budget ended) until validation
BLEU has not improved for --patience validations or --cap-steps updates, and is scored again. With several --seeds, every run is repeated with each training seed
(OUT/seedS/MODE_N). Results go to OUT/results.md (every run, then each fine-tuned mode's gain
over scratch per seed and on average, per budget) and OUT/results.json.

    python experiments/finetune_experiment.py runs/multi30k_en_de 4
    python experiments/finetune_experiment.py runs/multi30k_en_de --steps 800 --converge --sizes 2000 \
        --modes keep_source spelled_warmup scratch --seeds 1 2 3 --jobs 2 --set training.num_threads=1
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.config import FinetuneConfig, dump_yaml  # noqa: E402
from seq2seq.data import read_lines  # noqa: E402
from seq2seq.metrics import score_all  # noqa: E402
from seq2seq.training.begin import load_run_config  # noqa: E402

MODES = ("transfer", "keep", "keep_source", "spelled", "spelled_warmup", "scratch")


def run(*args: str, threads: int | None = None) -> None:
    cmd = [sys.executable, "-m", "seq2seq", *args]
    print("+", " ".join(cmd), flush=True)
    # The seq2seq of this checkout, wherever the script is started from.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def subset(data: Path, out: Path, n: int, langs: tuple[str, str]) -> Path:
    """The first n training pairs, as OUT/data/train{n}.{src,tgt}; returns the path prefix."""
    out.mkdir(parents=True, exist_ok=True)
    for lang in langs:
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
    parser.add_argument("minutes", type=float, nargs="?",
                        help="training budget per run in minutes (training.max_minutes); or give --steps")
    parser.add_argument("--steps", type=int, help="training budget per run in updates (training.max_steps)")
    parser.add_argument("--converge", action="store_true",
                        help="after the budget, continue each run to early stopping and score it again")
    parser.add_argument("--patience", type=int, default=5, help="--converge: validations without improvement")
    parser.add_argument("--cap-steps", type=int, default=None, help="--converge: stop at this many updates at most")
    parser.add_argument("--warmup-steps", type=int, default=200, help="spelled_warmup: finetune.warmup_steps")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k",
                        help="directory with train/val/test_2016_flickr files per language (default: ../shared/data/multi30k)")
    parser.add_argument("--src", default="en", help="source language of the child (file suffix; default en)")
    parser.add_argument("--tgt", default="fr", help="target language of the child (file suffix; default fr)")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_en_fr"), help="where runs and results go")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "finetune_en_fr.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000], help="training pairs per run")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["transfer", "keep", "keep_source", "scratch"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="training seeds (default: 1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once (each translation then uses one thread; give the runs "
                             "--set training.num_threads=1 and a --steps budget)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="extra config override for every run (repeatable)")
    args = parser.parse_args()
    if (args.minutes is None) == (args.steps is None):
        parser.error("give a budget: MINUTES or --steps N (one of them)")
    if (args.minutes is not None and args.minutes <= 0) or (args.steps is not None and args.steps <= 0):
        parser.error("the budget must be positive")

    train_prefixes = {n: subset(args.data, args.out / "data", n, (args.src, args.tgt)) for n in args.sizes}
    tasks = [(seed, n, mode) for seed in args.seeds for n in args.sizes for mode in args.modes]
    # Results of other runs in OUT (earlier invocations with other seeds, sizes or modes) stay.
    earlier = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else []
    results = [r for r in earlier if (r["seed"], r["pairs"], r["mode"]) not in set(tasks)]
    lock = threading.Lock()

    def one(task):
        for result in one_run(args, *task, train_prefixes[task[1]]):
            with lock:
                results.append(result)
                print(json.dumps(result), flush=True)
                write_results(args, sorted(results, key=lambda r: (r["budget"] != "budget", r["seed"], r["pairs"],
                                                               MODES.index(r["mode"]))))

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, tasks))
    return 0


def mode_settings(mode: str, warmup_steps: int) -> list[str]:
    if mode == "keep":
        # Characters the parent's tokenizer lacks become unknown: part of what keep costs.
        return ["finetune.vocabulary=keep", "finetune.max_unknown_chars=1000"]
    if mode in ("transfer", "keep_source", "scratch"):
        # scratch resolves as transfer does: one joint tokenizer, like the parent's.
        return [f"finetune.vocabulary={'transfer' if mode == 'scratch' else mode}",
                "finetune.new_pieces=fresh", "finetune.warmup_steps=0"]
    return ["finetune.vocabulary=keep_source", "finetune.new_pieces=spelled",
            f"finetune.warmup_steps={warmup_steps if mode == 'spelled_warmup' else 0}"]


def score(args, run_dir: Path, threads: int | None) -> dict:
    hyp = run_dir / f"test_2016_flickr.hyp.{args.tgt}"
    run("translate", "--model", str(run_dir), "--input", str(args.data / f"test_2016_flickr.{args.src}"),
        "--output", str(hyp), "--beam-size", "5", threads=threads)
    hyps, _ = read_lines(hyp)
    refs, _ = read_lines(args.data / f"test_2016_flickr.{args.tgt}")
    scores = score_all(hyps, refs)
    return {**run_summary(run_dir), "test_bleu": round(scores["bleu"], 2), "test_chrf": round(scores["chrf"], 2),
            "bleu_signature": scores["bleu_signature"]}


def one_run(args, seed: int, n: int, mode: str, train_prefix: Path):
    """Train (unless OUT/seedS/MODE_N already holds a best.pt) and score one run; with
    --converge, continue it and score it again. Yields one result per budget."""
    out = args.out / f"seed{seed}"
    run_dir = out / f"{mode}_{n}"
    threads = 1 if args.jobs > 1 else None
    limit = f"training.max_minutes={args.minutes}" if args.steps is None else f"training.max_steps={args.steps}"
    sets = [f"init_from={args.parent}", f"data.train={train_prefix}", f"data.valid={args.data / 'val'}",
            f"data.test={args.data / 'test_2016_flickr'}", f"data.src_lang={args.src}", f"data.tgt_lang={args.tgt}",
            limit, *mode_settings(mode, args.warmup_steps), *args.set, f"training.seed={seed}"]
    # Resolve the config here (architecture inherited from the parent) so that scratch
    # trains exactly the same model and settings, only without the parent.
    cfg = load_run_config(args.config, sets)
    if mode == "scratch":
        cfg = dataclasses.replace(cfg, init_from=None, finetune=FinetuneConfig())
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / f"{mode}_{n}.yaml"
    config_file.write_text(dump_yaml(cfg), encoding="utf-8")
    head = {"seed": seed, "pairs": n, "mode": mode}
    budget = f"{args.minutes:g} min" if args.steps is None else f"{args.steps} updates"
    done = json.loads((run_dir / "budget.json").read_text()) if (run_dir / "budget.json").exists() else None
    if done is None:
        # No budget.json: a run that did not finish, started over.
        run("train", "--config", str(config_file), "--run-dir", str(run_dir), "--overwrite", "--quiet")
        done = score(args, run_dir, threads)
        (run_dir / "budget.json").write_text(json.dumps(done) + "\n", encoding="utf-8")
    yield {**head, "budget": "budget", "budget_text": budget, **done}
    if args.converge:
        cap = [f"training.max_steps={args.cap_steps}" if args.cap_steps else "training.max_steps=null"]
        run("train", "--run-dir", str(run_dir), "--resume", "--quiet", "--set", "training.max_minutes=null",
            "--set", f"training.patience={args.patience}", *(x for c in cap for x in ("--set", c)))
        result = {**head, "budget": "converged",
                  "budget_text": f"patience {args.patience}" + (f", cap {args.cap_steps} updates" if args.cap_steps else ""),
                  **score(args, run_dir, threads)}
        # A run that reached the cap stopped before early stopping could: it did not converge.
        result["capped"] = bool(args.cap_steps) and result["steps"] >= args.cap_steps
        yield result


def gains(results: list[dict]) -> dict:
    """{(budget, pairs, mode): {seed: test BLEU minus scratch's of the same seed, size and budget}}
    for the fine-tuned modes whose scratch run is done."""
    scratch = {(r["budget"], r["seed"], r["pairs"]): r["test_bleu"] for r in results if r["mode"] == "scratch"}
    table: dict = {}
    for r in results:
        if r["mode"] != "scratch" and (r["budget"], r["seed"], r["pairs"]) in scratch:
            table.setdefault((r["budget"], r["pairs"], r["mode"]), {})[r["seed"]] = round(
                r["test_bleu"] - scratch[r["budget"], r["seed"], r["pairs"]], 2)
    return table


def means(results: list[dict]) -> dict:
    """{(budget, pairs, mode): [test BLEU of each seed]}"""
    table: dict = {}
    for r in results:
        table.setdefault((r["budget"], r["pairs"], r["mode"]), []).append(r["test_bleu"])
    return table


def write_results(args, results: list[dict]) -> None:
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    budget = f"{args.minutes:g} minutes of training" if args.steps is None else f"{args.steps} updates"
    lines = [f"{args.src}->{args.tgt} on Multi30k test_2016_flickr, beam 5; parent {args.parent}; "
             f"budget: {budget} per run (validation not counted)"
             + (f", then to convergence (patience {args.patience}"
                + (f", at most {args.cap_steps} updates)" if args.cap_steps else ")") if args.converge else "") + ".",
             "", "(cap): the run reached --cap-steps before early stopping, so it had not converged.",
             "", "| budget | seed | pairs | start | steps | train min | best valid BLEU | test BLEU | test chrF "
             "| pieces carried (src, tgt) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        carried = ", ".join(r["carried"].get(s, "-") for s in ("source", "target")) if r["carried"] else "-"
        steps = f"{r['steps']} (cap)" if r.get("capped") else r["steps"]
        lines.append(f"| {r['budget']} | {r['seed']} | {r['pairs']} | {r['mode']} | {steps} | "
                     f"{r['train_minutes']} | {r['best_valid_bleu']:.2f} | {r['test_bleu']:.2f} | "
                     f"{r['test_chrf']:.2f} | {carried} |")
    lines += ["", "Test BLEU per setting (mean over seeds, min-max):", "",
              "| budget | pairs | start | seeds | mean | min-max |", "|---|---:|---|---:|---:|---|"]
    for (b, n, mode), scores in sorted(means(results).items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                 MODES.index(kv[0][2]))):
        lines.append(f"| {b} | {n} | {mode} | {len(scores)} | {sum(scores) / len(scores):.2f} | "
                     f"{min(scores):.2f}-{max(scores):.2f} |")
    table = gains(results)
    if table:
        lines += ["", "Gain over scratch (test BLEU, same seed, pairs and budget):", "",
                  "| budget | pairs | start | per seed | mean |", "|---|---:|---|---|---:|"]
        for (b, n, mode), by_seed in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                           MODES.index(kv[0][2]))):
            per_seed = ", ".join(f"{seed}: {g:+.2f}" for seed, g in sorted(by_seed.items()))
            mean = sum(by_seed.values()) / len(by_seed)
            lines.append(f"| {b} | {n} | {mode} | {per_seed} | **{mean:+.2f}** |")
    lines += ["", f"sacreBLEU: {results[-1]['bleu_signature']}"]
    (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
