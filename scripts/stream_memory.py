"""Peak memory (RSS) of `seq2seq translate` on inputs of growing length, with a tiny model
on the synthetic task: streamed translation should use the same memory for 10k or 1M lines.

    PYTHONPATH=$PWD python scripts/stream_memory.py [--lines 10000 100000 1000000] [--run-dir DIR]

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def build_model(work: Path) -> Path:
    """A tiny model trained briefly on the synthetic task (quality does not matter here)."""
    from conftest import tiny_config_dict, write_synthetic
    from seq2seq.config import config_from_dict
    from seq2seq.trainer import train
    data = write_synthetic(work / "data", train=1000, valid=20, test=20)
    run_dir = work / "run"
    train(config_from_dict(tiny_config_dict(data, training={"max_steps": 150, "num_threads": 1})), run_dir,
          quiet=True)
    return run_dir


def write_input(path: Path, n: int) -> None:
    from conftest import synthetic_pair
    rng = random.Random(n)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(synthetic_pair(rng)[0] + "\n")


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
