#!/usr/bin/env python3
"""Back-translation and subword regularisation on a simulated low-resource pair (issue #30).

English->French from the first N pairs of Multi30k (--sizes, default 2,000 and 5,000), with the
French side of the pairs from --mono-from on (default: after the largest size) as monolingual
text whose English is never read. For each size it
  1. fine-tunes a French->English reverse model from REVERSE_PARENT (a de->en run; English,
     its target, carries over) with configs/finetune_bt_reverse.yaml, --reverse-steps updates;
  2. back-translates the monolingual French with it in the ways the settings name: by sampling
     from the whole distribution (--sample, seed 1), by sampling among the --top-k most likely
     pieces (seed 1), by beam search (beam 5);
  3. fine-tunes PARENT (an en->de run) with configs/finetune_bt_example.yaml for --steps updates
     in each setting, with every --seeds training seed:
       alone          the N real pairs only
       bt_sample_tag  + the sampled back-translations, tagged <bt>
       bt_beam        + the beam back-translations, untagged
       bt_topk_tag    + the top-k sampled back-translations, tagged <bt>
     (bt_sample, bt_beam_tag and bt_topk: the same corpora, the tag the other way round; the
     default is the first three), and, with --subword on, each again with BPE-dropout or
     unigram sampling (tokenizer.sampling) on the training pairs;
  4. translates test_2016_flickr with beam 5 and scores it with sacreBLEU.
Every run keeps its best.pt by validation BLEU (greedy); the report gives test BLEU and the best
validation BLEU per setting (mean of seeds) and each setting's gain over `alone` per seed.

    python experiments/bt_experiment.py runs/multi30k_en_de runs/multi30k_de_en --steps 800 \\
        --seeds 1 2 3 --jobs 2 --set training.num_threads=1

Runs already scored (OUT/.../result.json) are not trained again, so an interrupted experiment
continues where it stopped (another --mono-from, --top-k, parent or --steps needs another --out). Results: OUT/results.md and OUT/results.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))  # finetune_experiment, beside this file

from finetune_experiment import run, run_summary, score, subset  # noqa: E402
from seq2seq.config import dump_yaml  # noqa: E402
from seq2seq.data import read_lines  # noqa: E402
from seq2seq.training.begin import load_run_config  # noqa: E402

SETTINGS = ("alone", "bt_sample_tag", "bt_beam", "bt_topk_tag", "bt_sample", "bt_beam_tag", "bt_topk")
DEFAULT_SETTINGS = SETTINGS[:3]


def synthetic_kind(setting: str) -> tuple[str, bool]:
    """bt_topk_tag -> ("topk", True): how the corpus was back-translated, and whether it is tagged."""
    _, how, *tag = setting.split("_")
    return how, bool(tag)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parent", type=Path, help="the en->de run the forward models start from")
    parser.add_argument("reverse_parent", type=Path, help="the de->en run the reverse models start from")
    parser.add_argument("--steps", type=int, required=True, help="updates per forward run")
    parser.add_argument("--reverse-steps", type=int, help="updates per reverse run (default: --steps)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k",
                        help="Multi30k's train/val/test_2016_flickr files (default: ../shared/data/multi30k)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000], help="real training pairs")
    parser.add_argument("--mono-from", type=int,
                        help="first line (from 1) of train.fr used as monolingual text (default: largest size + 1)")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(DEFAULT_SETTINGS))
    parser.add_argument("--subword", nargs="+", choices=("off", "on"), default=["off"],
                        help="train each setting without and/or with subword regularisation")
    parser.add_argument("--bpe-dropout", type=float, default=0.1,
                        help="--subword on, BPE tokenizers: tokenizer.sampling.dropout (default 0.1)")
    parser.add_argument("--alpha", type=float, default=0.1,
                        help="--subword on, unigram tokenizers: tokenizer.sampling.alpha (nbest_size -1; default 0.1)")
    parser.add_argument("--copies", type=int, default=4, help="--subword on: tokenizer.sampling.copies")
    parser.add_argument("--top-k", type=int, default=10, help="the bt_topk settings: sample among this many pieces (default 10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="training seeds of the forward runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (give --set training.num_threads=1)")
    parser.add_argument("--out", type=Path, default=Path("runs/bt_en_fr"), help="where runs and results go")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="extra config override for every run, reverse ones included (repeatable)")
    args = parser.parse_args()
    args.reverse_steps = args.reverse_steps or args.steps
    mono_from = args.mono_from or max(args.sizes) + 1
    if mono_from <= max(args.sizes):
        parser.error(f"--mono-from {mono_from} overlaps the first {max(args.sizes)} real pairs")

    data = args.out / "data"
    real = {n: subset(args.data, data, n, ("en", "fr")) for n in args.sizes}
    french, _ = read_lines(args.data / "train.fr")
    (data / "mono.fr").write_text("\n".join(french[mono_from - 1:]) + "\n", encoding="utf-8")
    threads = 1 if args.jobs > 1 else None

    earlier = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else []
    results = {(r["setting"], r["subword"], r["pairs"], r["seed"]): r for r in earlier}
    lock = threading.Lock()
    futures: dict[tuple, Future] = {}

    def reverse(n):
        run_dir = args.out / f"reverse_{n}"
        sets = [f"init_from={args.reverse_parent}", f"data.train={real[n]}", *common_sets(args),
                "data.src_lang=fr", "data.tgt_lang=en", f"training.max_steps={args.reverse_steps}", *args.set]
        done = train_once(run_dir, ROOT / "configs" / "finetune_bt_reverse.yaml", sets, threads,
                          SimpleNamespace(data=args.data, src="fr", tgt="en"))
        with lock:
            print(json.dumps({"reverse": n, **done}), flush=True)
        return run_dir

    def back_translate(n, how):
        futures["reverse", n].result()
        prefix = data / f"bt_{how}_{n}"
        done = prefix.with_suffix(".fr")
        # Its French equals the monolingual text only once complete, and only for this --mono-from.
        if not (done.exists() and done.read_bytes() == (data / "mono.fr").read_bytes()):
            search = {"sample": ["--sample", "--seed", "1"], "beam": ["--beam-size", "5"],
                      "topk": ["--sample", "--seed", "1", "--top-k", str(args.top_k)]}[how]
            run("translate", "--model", str(args.out / f"reverse_{n}"), "--input", str(data / "mono.fr"),
                "--output", str(prefix.with_suffix(".en")), "--quiet", *search, threads=threads)
            shutil.copyfile(data / "mono.fr", prefix.with_suffix(".fr"))  # last: it marks the corpus complete
        return prefix

    def forward(setting, subword, n, seed):
        corpora = [{"path": str(real[n]), "weight": 1.0}]
        if setting != "alone":
            how, tagged = synthetic_kind(setting)
            synthetic = {"path": str(futures["bt", how, n].result()), "weight": 1.0}
            corpora.append({**synthetic, "tag": "<bt>"} if tagged else synthetic)
        sets = [f"init_from={args.parent}", f"data.train={json.dumps(corpora)}", *common_sets(args),
                "data.src_lang=en", "data.tgt_lang=fr", f"training.max_steps={args.steps}", *args.set,
                f"training.seed={seed}"]
        if subword == "on":
            # The parent's tokenizer type (inherited) decides which kind of sampling applies.
            unigram = load_run_config(ROOT / "configs" / "finetune_bt_example.yaml", sets).tokenizer.model_type == "unigram"
            sampling = {"alpha": args.alpha, "nbest_size": -1} if unigram else {"dropout": args.bpe_dropout}
            sets.append(f"tokenizer.sampling={json.dumps({**sampling, 'copies': args.copies})}")
        run_dir = args.out / f"seed{seed}" / f"{setting}_{subword}_{n}"
        done = train_once(run_dir, ROOT / "configs" / "finetune_bt_example.yaml", sets, threads,
                          SimpleNamespace(data=args.data, src="en", tgt="fr"))
        result = {"setting": setting, "subword": subword, "pairs": n, "seed": seed, **done}
        with lock:
            results[setting, subword, n, seed] = result
            print(json.dumps(result), flush=True)
            write_results(args, list(results.values()))

    # Submitted in an order where every task's prerequisites come before it, so a task that
    # waits for one waits for a task already running or done (no deadlock with --jobs workers).
    with ThreadPoolExecutor(args.jobs) as pool:
        kinds = sorted({synthetic_kind(setting)[0] for setting in args.settings if setting != "alone"})
        for n in args.sizes:
            if kinds:
                futures["reverse", n] = pool.submit(reverse, n)
        for how in kinds:
            for n in args.sizes:
                futures["bt", how, n] = pool.submit(back_translate, n, how)
        runs = [pool.submit(forward, setting, subword, n, seed) for subword in args.subword for seed in args.seeds
                for n in args.sizes for setting in args.settings]
        for job in [*futures.values(), *runs]:
            job.result()  # raises the first failure
    return 0


def common_sets(args) -> list[str]:
    return [f"data.valid={args.data / 'val'}", f"data.test={args.data / 'test_2016_flickr'}",
            "training.max_minutes=null"]


def train_once(run_dir: Path, config: Path, sets: list[str], threads, langs) -> dict:
    """Train and score a run unless run_dir/result.json says it was done."""
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    config_file = run_dir.parent / f"{run_dir.name}.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(dump_yaml(load_run_config(config, sets)), encoding="utf-8")
    run("train", "--config", str(config_file), "--run-dir", str(run_dir), "--overwrite", "--quiet", threads=threads)
    result = score(langs, run_dir, threads)
    done.write_text(json.dumps(result) + "\n", encoding="utf-8")
    return result


def write_results(args, results: list[dict]) -> None:
    order = {s: i for i, s in enumerate(SETTINGS)}
    results.sort(key=lambda r: (r["pairs"], r["subword"], order[r["setting"]], r["seed"]))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    lines = [f"en->fr on Multi30k test_2016_flickr (sacreBLEU, beam 5); forward runs from {args.parent}, "
             f"{args.steps} updates each; reverse runs from {args.reverse_parent}, {args.reverse_steps} updates.", "",
             "| pairs | subword | setting | seed | steps | train min | best valid BLEU | test BLEU | test chrF |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['pairs']} | {r['subword']} | {r['setting']} | {r['seed']} | {r['steps']} | {r['train_minutes']} "
              f"| {r['best_valid_bleu']:.2f} | {r['test_bleu']:.2f} | {r['test_chrf']:.2f} |" for r in results]
    groups: dict = {}
    for r in results:
        groups.setdefault((r["pairs"], r["subword"], r["setting"]), []).append(r)
    lines += ["", "Per setting (mean over seeds; gain: test BLEU minus `alone` without subword regularisation, "
              "same seed and size):", "",
              "| pairs | subword | setting | seeds | valid BLEU | test BLEU | gain per seed | mean gain |",
              "|---:|---|---|---:|---:|---:|---|---:|"]
    base = {(r["pairs"], r["seed"]): r["test_bleu"] for r in results if (r["setting"], r["subword"]) == ("alone", "off")}
    for (n, subword, setting), rs in groups.items():
        valid = sum(r["best_valid_bleu"] for r in rs) / len(rs)
        test = sum(r["test_bleu"] for r in rs) / len(rs)
        gain = {r["seed"]: r["test_bleu"] - base[n, r["seed"]] for r in rs if (n, r["seed"]) in base}
        per_seed = ", ".join(f"{s}: {g:+.2f}" for s, g in sorted(gain.items())) if gain else "-"
        mean = f"**{sum(gain.values()) / len(gain):+.2f}**" if gain else "-"
        lines.append(f"| {n} | {subword} | {setting} | {len(rs)} | {valid:.2f} | {test:.2f} | {per_seed} | {mean} |")
    lines += ["", f"sacreBLEU: {results[-1]['bleu_signature']}"]
    (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
