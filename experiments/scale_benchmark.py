#!/usr/bin/env python3
"""Large corpora: how preparing and training scale from 0.1M to 10M pairs.

    python experiments/scale_benchmark.py --work /tmp/scale --sizes 100000 1000000 10000000 \
        --out docs/measurements/DATE/scale

For each size N it writes a synthetic corpus of N unique pairs into --work (each line two
Multi30k training sentences glued together, the same on both sides), then, each command in a
fresh process, one after the other:
  - `seq2seq prepare` with configs/multi30k_en_de.yaml's tokenizer and filters: wall time and
    peak RSS;
  - `seq2seq train` from that prepared store for --steps updates of the same config's model:
    start-up (process start to the end of the first update, from train.jsonl's clock), peak RSS,
    the median per-update target tok/s after the first 20 updates, and the proportional set size
    (PSS) of the training process sampled every 0.5 s;
  - with --ddp, the same training on the largest size as 2 processes under torchrun (1 thread
    each) next to 1 process with 1 thread: their summed PSS against the one process's.
Writes RESULT.json and RESULT.md into --out. Nothing here is a timed test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "multi30k_en_de.yaml"


def make_corpus(multi30k: Path, prefix: Path, n: int) -> None:
    """N unique pairs: pair i glues sentences a(i) and b(i), with (a, b) distinct for every i."""
    if Path(f"{prefix}.de").exists():
        return
    en = (multi30k / "train.en").read_text(encoding="utf-8").splitlines()
    de = (multi30k / "train.de").read_text(encoding="utf-8").splitlines()
    m = len(en)
    if n > m * m:
        sys.exit(f"at most {m * m} unique pairs")
    rng = random.Random(0)
    first, second = list(range(m)), list(range(m))
    rng.shuffle(first)
    rng.shuffle(second)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{prefix}.en.tmp", "w", encoding="utf-8") as fe, open(f"{prefix}.de.tmp", "w", encoding="utf-8") as fd:
        for i in range(n):
            a, b = first[i % m], second[(i // m + i) % m]
            fe.write(f"{en[a]} {en[b]}\n")
            fd.write(f"{de[a]} {de[b]}\n")
    os.replace(f"{prefix}.en.tmp", f"{prefix}.en")
    os.replace(f"{prefix}.de.tmp", f"{prefix}.de")


def pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def workers() -> list[int]:
    """Processes running `seq2seq train` (not the torchrun launcher, not /usr/bin/time)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"seq2seq" in cmd and b"train" in cmd and not any(b"distributed.run" in c or c.endswith(b"time")
                                                             for c in cmd):
            found.append(int(entry.name))
    return found


def run(cmd: list[str], *, env: dict | None = None, sample_pss: bool = False) -> dict:
    """Run `cmd` under /usr/bin/time: wall seconds, peak RSS (MB), and the largest summed PSS of
    its training processes when `sample_pss`."""
    print("+", " ".join(cmd), flush=True)
    start = time.time()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "TIME %e %M", *cmd], env=env, stderr=subprocess.PIPE, text=True)
    peak = {"pss": 0.0}

    def sample():
        while proc.poll() is None:
            peak["pss"] = max(peak["pss"], pss_mb(workers()))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    if sample_pss:
        sampler.start()
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{err[-3000:]}")
    line = [x for x in err.splitlines() if x.startswith("TIME ")][-1].split()
    out = {"wall_s": float(line[1]), "peak_rss_mb": int(line[2]) / 1024, "launched": start}
    if sample_pss:
        sampler.join()
        out["peak_pss_mb"] = peak["pss"]
    return out


def training_figures(run_dir: Path, launched: float) -> dict:
    records = [json.loads(x) for x in (run_dir / "train.jsonl").read_text().splitlines()]
    return {"startup_s": records[0]["time"] - launched,
            "median_tgt_tok_s": statistics.median(r["tokens_per_second"] for r in records[20:]),
            "updates": records[-1]["step"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="scratch directory for corpora and runs")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000, 10_000_000],
                    help="corpus sizes in pairs; 0 is Multi30k's own training set")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "multi30k")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2, help="data.num_workers for prepare")
    ap.add_argument("--ddp", action="store_true", help="also 2 processes against 1 on the largest size")
    ap.add_argument("--ddp-steps", type=int, default=100)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    seq2seq = [sys.executable, "-m", "seq2seq"]
    common = [f"data.valid={args.data / 'val'}", f"data.test={args.data / 'test_2016_flickr'}",
              f"data.num_workers={args.workers}"]
    train_sets = [f"training.max_steps={args.steps}", "training.log_every=1", "training.valid_every=1000000000",
                  "training.valid_at_epoch_end=false", "training.max_minutes=null", "training.save_every_minutes=null"]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor(),
              "command": " ".join(sys.argv), "sizes": []}
    for n in args.sizes:
        # size 0: Multi30k itself, the reference for memory
        prefix = args.work / f"corpus{n}" / "train" if n else args.data / "train"
        t = time.time()
        if n:
            make_corpus(args.data, prefix, n)
        print(f"corpus of {n:,} pairs ready ({time.time() - t:.0f} s)", flush=True)
        run_dir = args.work / f"run{n}"
        if run_dir.exists():  # a run of an earlier invocation: prepare and train are measured from scratch
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        sets = [f"data.train={prefix}", *common]
        prep = run([*seq2seq, "prepare", "--config", str(CONFIG), "--run-dir", str(run_dir), "--quiet",
                    *[f"--set={s}" for s in sets]], env=env)
        train = run([*seq2seq, "train", "--config", str(CONFIG), "--run-dir", str(run_dir), "--quiet",
                     *[f"--set={s}" for s in sets + train_sets]], env=env, sample_pss=True)
        row = {"pairs": n, "prepare": prep, "train": {**train, **training_figures(run_dir, train["launched"])},
               "store_pairs": json.loads((run_dir / "prepared" / "meta.json").read_text())["pairs"]}
        result["sizes"].append(row)
        print(json.dumps(row), flush=True)
    if args.ddp:
        n = args.sizes[-1]
        prefix, run_dir = args.work / f"corpus{n}" / "train", args.work / f"run{n}"
        ddp_env = {**env, "OMP_NUM_THREADS": "1"}
        sets = [f"data.train={prefix}", *common, *train_sets, "training.num_threads=1",
                f"training.max_steps={args.ddp_steps}"]
        for procs in (1, 2):
            target = args.work / f"ddp{procs}"
            if target.exists():
                subprocess.run(["rm", "-rf", str(target)], check=True)
            target.mkdir(parents=True)
            for f in run_dir.glob("spm.*"):  # the same tokenizer ...
                (target / f.name).write_bytes(f.read_bytes())
            # ... and the same store (hard links): its fingerprint matches, nothing is prepared again
            subprocess.run(["cp", "-al", str(run_dir / "prepared"), str(target / "prepared")], check=True)
            launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                        if procs == 2 else [sys.executable])
            measured = run([*launcher, "-m", "seq2seq", "train", "--config", str(CONFIG), "--run-dir", str(target),
                            "--quiet", *[f"--set={s}" for s in sets]], env=ddp_env, sample_pss=True)
            result[f"ddp_{procs}_process"] = measured
            print(json.dumps({f"ddp_{procs}": measured}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RESULT.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Scale benchmark, {result['date']}", "", f"`{result['command']}`", "",
             "| pairs | prepare s | prepare peak RSS MB | train start-up s | train peak RSS MB | train peak PSS MB "
             "| median tgt tok/s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["sizes"]:
        p, t = r["prepare"], r["train"]
        lines.append(f"| {r['pairs']:,} | {p['wall_s']:.0f} | {p['peak_rss_mb']:,.0f} | {t['startup_s']:.1f} | "
                     f"{t['peak_rss_mb']:,.0f} | {t['peak_pss_mb']:,.0f} | {t['median_tgt_tok_s']:,.0f} |")
    if "ddp_2_process" in result:
        one, two = result["ddp_1_process"], result["ddp_2_process"]
        lines += ["", f"DDP on {args.sizes[-1]:,} pairs, 1 thread per process: summed PSS of 2 processes "
                  f"{two['peak_pss_mb']:,.0f} MB against {one['peak_pss_mb']:,.0f} MB for 1 "
                  f"({two['peak_pss_mb'] / one['peak_pss_mb']:.2f}x)"]
    (args.out / "RESULT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
