"""Peak memory (RSS) of `seq2seq translate` on inputs of growing length, with a tiny model
on the synthetic task: streamed translation should use the same memory for 10k or 1M lines.

    PYTHONPATH=$PWD python docs/measurements/2026-11-22/stream_memory.py [--lines 10000 100000 1000000] [--run-dir DIR]

Each size runs in a fresh process (peak RSS is per process), reading a file and writing to
/dev/null. The first row (0 lines) is the cost of loading the model and starting up.
"""
from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # docs/measurements/2026-11-22/ -> the checkout

# A toy task: each source word has one target word, and the order is reversed.
LEXICON = {"ka": "ALPHA", "lo": "BETA", "mi": "GAMMA", "nu": "DELTA", "pe": "EPS", "ri": "ZETA",
           "su": "ETA", "ta": "THETA", "vo": "IOTA", "ze": "KAPPA"}


def source_line(rng: random.Random) -> str:
    return " ".join(rng.choice(list(LEXICON)) for _ in range(rng.randint(2, 7)))


def build_model(work: Path) -> Path:
    """A tiny model trained briefly on the toy task (quality does not matter here)."""
    from seq2seq.config import config_from_dict
    from seq2seq.trainer import train
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for split, n in (("train", 1000), ("valid", 20)):
        sources = [source_line(rng) for _ in range(n)]
        (data / f"{split}.src").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
        (data / f"{split}.tgt").write_text("".join(" ".join(LEXICON[w] for w in reversed(s.split())) + "\n"
                                                   for s in sources), encoding="utf-8")
    raw = {"data": {"src_lang": "src", "tgt_lang": "tgt", "train": str(data / "train"), "valid": str(data / "valid"),
                    "test": None, "max_src_len": 20, "max_tgt_len": 20},
           "tokenizer": {"vocab_size": 64},
           "model": {"encoder": {"cell": "gru", "emb_size": 32, "hidden_size": 32, "dropout": 0.0},
                     "decoder": {"cell": "gru", "emb_size": 32, "hidden_size": 64, "dropout": 0.0}},
           "training": {"device": "cpu", "lr": 0.005, "max_steps": 150, "num_threads": 1, "valid_every": 10_000,
                        "patience": None},
           "decoding": {"batch_size": 50}}
    run_dir = work / "run"
    train(config_from_dict(raw), run_dir, quiet=True)
    return run_dir


def write_input(path: Path, n: int) -> None:
    rng = random.Random(n)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(source_line(rng) + "\n")


def child(run_dir: str, input_path: str) -> None:
    """Translate in this process, then report its own peak RSS (KiB on Linux) and seconds."""
    import torch
    torch.set_num_threads(1)
    from seq2seq.cli import main
    start = time.perf_counter()
    code = main(["translate", "--model", run_dir, "--input", input_path, "--output", "/dev/null",
                 "--beam-size", "1", "--device", "cpu"])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - start, code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--run-dir", help="use this trained run instead of training a tiny one")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = Path(args.run_dir) if args.run_dir else build_model(work)
        print("| input lines | input size | peak RSS | wall time | lines/s |")
        print("|---:|---:|---:|---:|---:|")
        for n in [0] + args.lines:
            source = work / f"in.{n}.txt"
            write_input(source, n)
            out = subprocess.run([sys.executable, __file__, "--child", str(run_dir), str(source)],
                                 capture_output=True, text=True, check=True)
            rss_kib, seconds, _ = out.stdout.split()
            seconds = float(seconds)
            rate = f"{n / seconds:,.0f}" if n else "-"
            print(f"| {n:,} | {source.stat().st_size / 1e6:.1f} MB | {int(rss_kib) / 1024:.0f} MiB "
                  f"| {seconds:.1f} s | {rate} |", flush=True)
            source.unlink()


if __name__ == "__main__":
    main()
