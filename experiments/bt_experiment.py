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
continues where it stopped. Each result.json holds the key of what made it: the run's resolved
config (parent path, steps, seed, corpora and their tags, subword sampling, every --set), a
checksum of the parent's checkpoint, config and tokenizers, checksums of the training,
validation and test files, and for a back-translation setting the key of its synthetic corpus
(the reverse run's key, the search: sampling, seed, --top-k or beam, and the monolingual text:
--mono-from, its line count and checksum). Before anything is trained or translated, every
result already in OUT is checked against the key this invocation would give it; if one differs
(another parent, --top-k, --mono-from, --steps, ...) the script stops, names the runs and the
inputs that differ, and leaves every run and result as it was: give another --out, or delete
those run directories to train them again. So results made from different inputs are never
reused, overwritten or reported together. (Left out of the key: --jobs, and the code's version.)
A back-translated corpus is made again unless OUT/data/bt_HOW_N.key.json holds its key.
Results: OUT/results.md and OUT/results.json (every scored run in OUT, with its key's checksum).
"""
from __future__ import annotations

import argparse
import hashlib
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

from finetune_experiment import run, score, subset  # noqa: E402
from seq2seq.config import RUN_CONFIG_FILE, dump_yaml, to_dict  # noqa: E402
from seq2seq.data import read_lines  # noqa: E402
from seq2seq.decoding.onnx_model import sha256  # noqa: E402  (a file's checksum, as export manifests use)
from seq2seq.training.begin import load_run_config  # noqa: E402

SETTINGS = ("alone", "bt_sample_tag", "bt_beam", "bt_topk_tag", "bt_sample", "bt_beam_tag", "bt_topk")
DEFAULT_SETTINGS = SETTINGS[:3]
REVERSE_CONFIG = ROOT / "configs" / "finetune_bt_reverse.yaml"
FORWARD_CONFIG = ROOT / "configs" / "finetune_bt_example.yaml"


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
    args.mono_from = args.mono_from or max(args.sizes) + 1
    if args.mono_from <= max(args.sizes):
        parser.error(f"--mono-from {args.mono_from} overlaps the first {max(args.sizes)} real pairs")

    plan = Plan(args)
    french, _ = read_lines(args.data / "train.fr")
    plan.data.mkdir(parents=True, exist_ok=True)
    (plan.data / "mono.fr").write_text("\n".join(french[args.mono_from - 1:]) + "\n", encoding="utf-8")
    threads = 1 if args.jobs > 1 else None

    # Every result already in OUT must have come from the inputs this invocation would give it;
    # checked before anything is trained or translated, so a refused invocation leaves them all.
    stored = stored_results(args.out)
    refused = [f"  {run_dir}: {reason}" for run_dir, record in stored.items()
               if (reason := plan.mismatch(run_dir, record)) is not None]
    if refused:
        sys.exit("bt_experiment.py: results in --out were made from other inputs; they are neither reused nor "
                 "reported with new ones:\n" + "\n".join(refused) +
                 "\nGive another --out, or delete those run directories to train them again.")
    results = {ident: record for run_dir, record in stored.items() if (ident := forward_ident(run_dir, args.out))}
    lock = threading.Lock()
    futures: dict[tuple, Future] = {}

    def reverse(n):
        run_dir = args.out / f"reverse_{n}"
        done = train_once(run_dir, REVERSE_CONFIG, plan.reverse_sets(n), threads,
                          SimpleNamespace(data=args.data, src="fr", tgt="en"), {"reverse": n}, plan.reverse_key(n))
        with lock:
            print(json.dumps({k: v for k, v in done.items() if k != "key"}), flush=True)
        return run_dir

    def back_translate(n, how):
        futures["reverse", n].result()
        prefix = plan.data / f"bt_{how}_{n}"
        marker = prefix.with_suffix(".key.json")
        key = plan.bt_key(how, n)
        # Complete (its French copied last) and made from these inputs (key written after that).
        if not (marker.exists() and json.loads(marker.read_text()) == key):
            marker.unlink(missing_ok=True)
            prefix.with_suffix(".fr").unlink(missing_ok=True)
            run("translate", "--model", str(args.out / f"reverse_{n}"), "--input", str(plan.data / "mono.fr"),
                "--output", str(prefix.with_suffix(".en")), "--quiet", *plan.search(how), threads=threads)
            shutil.copyfile(plan.data / "mono.fr", prefix.with_suffix(".fr"))
            marker.write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")
        return prefix

    def forward(setting, subword, n, seed):
        if setting != "alone":
            futures["bt", synthetic_kind(setting)[0], n].result()
        run_dir = args.out / f"seed{seed}" / f"{setting}_{subword}_{n}"
        head = {"setting": setting, "subword": subword, "pairs": n, "seed": seed}
        result = train_once(run_dir, FORWARD_CONFIG, plan.forward_sets(setting, subword, n, seed), threads,
                            SimpleNamespace(data=args.data, src="en", tgt="fr"), head,
                            plan.forward_key(setting, subword, n, seed))
        with lock:
            results[setting, subword, n, seed] = result
            print(json.dumps({k: v for k, v in result.items() if k != "key"}), flush=True)
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


class Plan:
    """What each run trains on, and its key: everything that changes its result."""

    def __init__(self, args):
        self.args = args
        self.data = args.out / "data"
        self._real: dict[int, Path] = {}
        self._sha: dict[Path, str] = {}
        self._lock = threading.Lock()

    def real(self, n: int) -> Path:
        with self._lock:
            if n not in self._real:
                self._real[n] = subset(self.args.data, self.data, n, ("en", "fr"))
            return self._real[n]

    def sha(self, path: Path) -> str:
        with self._lock:
            if path not in self._sha:
                self._sha[path] = sha256(path)
            return self._sha[path]

    def common_sets(self) -> list[str]:
        return [f"data.valid={self.args.data / 'val'}", f"data.test={self.args.data / 'test_2016_flickr'}",
                "training.max_minutes=null"]

    def reverse_sets(self, n: int) -> list[str]:
        return [f"init_from={self.args.reverse_parent}", f"data.train={self.real(n)}", *self.common_sets(),
                "data.src_lang=fr", "data.tgt_lang=en", f"training.max_steps={self.args.reverse_steps}",
                *self.args.set]

    def forward_sets(self, setting: str, subword: str, n: int, seed: int) -> list[str]:
        corpora = [{"path": str(self.real(n)), "weight": 1.0}]
        if setting != "alone":
            how, tagged = synthetic_kind(setting)
            synthetic = {"path": str(self.data / f"bt_{how}_{n}"), "weight": 1.0}
            corpora.append({**synthetic, "tag": "<bt>"} if tagged else synthetic)
        sets = [f"init_from={self.args.parent}", f"data.train={json.dumps(corpora)}", *self.common_sets(),
                "data.src_lang=en", "data.tgt_lang=fr", f"training.max_steps={self.args.steps}", *self.args.set,
                f"training.seed={seed}"]
        if subword == "on":
            # The parent's tokenizer type (inherited) decides which kind of sampling applies.
            unigram = load_run_config(FORWARD_CONFIG, sets).tokenizer.model_type == "unigram"
            sampling = {"alpha": self.args.alpha, "nbest_size": -1} if unigram else {"dropout": self.args.bpe_dropout}
            sets.append(f"tokenizer.sampling={json.dumps({**sampling, 'copies': self.args.copies})}")
        return sets

    def search(self, how: str) -> list[str]:
        return {"sample": ["--sample", "--seed", "1"], "beam": ["--beam-size", "5"],
                "topk": ["--sample", "--seed", "1", "--top-k", str(self.args.top_k)]}[how]

    def parent_identity(self, run_dir: Path, checkpoint: str) -> dict:
        """The parent run: where it is, and checksums of the checkpoint the child starts from,
        of its config and of its tokenizers."""
        files = [run_dir / checkpoint, run_dir / RUN_CONFIG_FILE, *sorted(run_dir.glob("spm.*.model"))]
        return {"path": str(run_dir.resolve()), "checkpoint": checkpoint,
                "sha256": {f.name: self.sha(f) for f in files if f.is_file()}}

    def training_key(self, config: Path, sets: list[str], real: Path, synthetic: dict | None) -> dict:
        cfg = load_run_config(config, sets)
        langs = (cfg.data.src_lang, cfg.data.tgt_lang)
        files = [Path(f"{prefix}.{lang}") for prefix in (real, self.args.data / "val",
                                                         self.args.data / "test_2016_flickr") for lang in langs]
        return {"config": json.loads(json.dumps(to_dict(cfg))),
                "parent": self.parent_identity(Path(cfg.init_from), cfg.finetune.checkpoint),
                "files": {str(f): self.sha(f) for f in files}, "synthetic": synthetic}

    def reverse_key(self, n: int) -> dict:
        return self.training_key(REVERSE_CONFIG, self.reverse_sets(n), self.real(n), None)

    def bt_key(self, how: str, n: int) -> dict:
        mono = self.data / "mono.fr"
        return {"reverse": self.reverse_key(n), "search": self.search(how),
                "mono": {"from_line": self.args.mono_from, "lines": len(mono.read_text(encoding="utf-8").splitlines()),
                         "sha256": self.sha(mono)}}

    def forward_key(self, setting: str, subword: str, n: int, seed: int) -> dict:
        synthetic = None if setting == "alone" else self.bt_key(synthetic_kind(setting)[0], n)
        return self.training_key(FORWARD_CONFIG, self.forward_sets(setting, subword, n, seed), self.real(n), synthetic)

    def mismatch(self, run_dir: Path, record: dict) -> str | None:
        """Why a stored result may not be used by this invocation; None if it may."""
        if "key" not in record:
            return "its result.json has no key (written before results were keyed), so what made it is unknown"
        n = reverse_size(run_dir, self.args.out)
        expected = self.reverse_key(n) if n is not None else self.forward_key(*forward_ident(run_dir, self.args.out))
        found = differences(record["key"], expected)
        return None if not found else "made with other inputs: " + "; ".join(found[:6]) + (
            f"; and {len(found) - 6} more" if len(found) > 6 else "")


def differences(stored, expected, where: str = "") -> list[str]:
    """'where: stored -> expected' for every leaf of two keys that differs."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        return [d for k in sorted(set(stored) | set(expected), key=str)
                for d in differences(stored.get(k), expected.get(k), f"{where}.{k}" if where else str(k))]
    return [] if stored == expected else [f"{where}: {json.dumps(stored)} -> {json.dumps(expected)}"]


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def stored_results(out: Path) -> dict[Path, dict]:
    """The scored runs in OUT (reverse_N and seedS/SETTING_SUBWORD_N), from their result.json."""
    runs = [done.parent for done in sorted(out.glob("*/result.json")) if reverse_size(done.parent, out)]
    runs += [done.parent for done in sorted(out.glob("seed*/*/result.json")) if forward_ident(done.parent, out)]
    return {run_dir: json.loads((run_dir / "result.json").read_text()) for run_dir in runs}


def reverse_size(run_dir: Path, out: Path) -> int | None:
    """OUT/reverse_5000 -> 5000; None for any other directory."""
    name = run_dir.name
    if run_dir.parent != out or not name.startswith("reverse_") or not name[len("reverse_"):].isdigit():
        return None
    return int(name[len("reverse_"):])


def forward_ident(run_dir: Path, out: Path) -> tuple | None:
    """OUT/seed2/bt_beam_off_5000 -> ("bt_beam", "off", 5000, 2); None for any other directory."""
    seed = run_dir.parent.name[len("seed"):]
    parts = run_dir.name.rsplit("_", 2)
    if (run_dir.parent.parent != out or not run_dir.parent.name.startswith("seed") or not seed.isdigit()
            or len(parts) != 3 or parts[0] not in SETTINGS or parts[1] not in ("off", "on") or not parts[2].isdigit()):
        return None
    return parts[0], parts[1], int(parts[2]), int(seed)


def train_once(run_dir: Path, config: Path, sets: list[str], threads, langs, head: dict, key: dict) -> dict:
    """Train and score a run unless run_dir/result.json holds its result under the same key."""
    done = run_dir / "result.json"
    if done.exists():
        record = json.loads(done.read_text())
        if record.get("key") != key:  # checked before training began; the files changed since
            raise RuntimeError(f"{done}: made with other inputs than this run's; delete {run_dir} to train it again")
        return record
    config_file = run_dir.parent / f"{run_dir.name}.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(dump_yaml(load_run_config(config, sets)), encoding="utf-8")
    run("train", "--config", str(config_file), "--run-dir", str(run_dir), "--overwrite", "--quiet", threads=threads)
    record = {**head, **score(langs, run_dir, threads), "key": key}
    done.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def write_results(args, results: list[dict]) -> None:
    order = {s: i for i, s in enumerate(SETTINGS)}
    results.sort(key=lambda r: (r["pairs"], r["subword"], order[r["setting"]], r["seed"]))
    # Each run's full key is in its result.json; here its checksum, equal for equal inputs.
    listed = [{**{k: v for k, v in r.items() if k != "key"}, "key_sha256": key_digest(r["key"])} for r in results]
    (args.out / "results.json").write_text(json.dumps(listed, indent=2) + "\n", encoding="utf-8")
    mono = len((args.out / "data" / "mono.fr").read_text(encoding="utf-8").splitlines())
    lines = [f"en->fr on Multi30k test_2016_flickr (sacreBLEU, beam 5); forward runs from {args.parent}, "
             f"{args.steps} updates each; reverse runs from {args.reverse_parent}, {args.reverse_steps} updates; "
             f"monolingual French: train.fr from line {args.mono_from} ({mono} sentences); "
             f"bt_topk: --top-k {args.top_k}.", "",
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
