#!/usr/bin/env python3
"""Where a training step's time goes: torch.profiler over a few updates of a config's model on
Multi30k, summed by operator and by kind (matrix products, elementwise, the rest).

    python scripts/profile_training.py --config configs/bench_peer_lstm.yaml \
        --tokenizer runs/multi30k_en_de/spm.joint.model --steps 30

The tokenizer is any joint SentencePiece model of the config's vocabulary size (training one is
not what we want to time). Prints the top operators by own CPU time and writes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time

from torch.profiler import ProfilerActivity, profile

from update_loop import add_arguments, setup, update  # noqa: E402  (scripts/ is on sys.path)

from seq2seq.training.state import build_optimizer  # noqa: E402

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
          "quantized::linear_dynamic"}
ELEMENTWISE = ("aten::add", "aten::mul", "aten::sigmoid", "aten::tanh", "aten::lerp", "aten::sub", "aten::div",
               "aten::copy_", "aten::cat", "aten::masked_fill", "aten::softmax", "aten::_softmax",
               "aten::log_softmax", "aten::_log_softmax", "aten::dropout", "aten::native_dropout", "aten::where",
               "aten::sum", "aten::fill_", "aten::zero_", "aten::clone", "aten::_to_copy", "aten::neg",
               "aten::bernoulli_", "aten::empty_like", "aten::_foreach", "aten::exp", "aten::topk",
               "aten::argmax", "aten::max", "aten::gather", "aten::lt", "aten::ge", "aten::eq", "aten::isfinite",
               "aten::bitwise", "aten::logical", "aten::remainder", "aten::floor_divide")


def kind(name: str) -> str:
    if name in MATMUL:
        return "matrix products"
    if "rnn" in name.lower():
        return "fused RNN kernels (the encoder's)"
    if name.startswith(ELEMENTWISE) or ("backward" in name.lower() and "Mm" not in name):
        return "elementwise and reductions"
    return "other (framework, indexing, optimizer steps)"


def report(averages, *, top: int) -> int:
    """Print own CPU time by kind and the `top` operators (of torch.profiler's key_averages);
    returns the number of operator calls."""
    events = [e for e in averages if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    by_kind: dict[str, float] = {}
    for e in events:
        by_kind[kind(e.key)] = by_kind.get(kind(e.key), 0.0) + e.self_cpu_time_total
    print("\nown CPU time by kind:")
    for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * v / total:5.1f} %  {k}")
    print(f"\ntop {top} operators by own CPU time:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        shapes = f"  {e.input_shapes}" if e.input_shapes else ""
        print(f"  {100 * e.self_cpu_time_total / total:5.1f} %  {e.count:7d} calls  {e.key}{shapes}")
    return sum(e.count for e in events)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()

    cfg, model, stream = setup(args)
    optimizer = build_optimizer(model, cfg.training)

    for _ in range(args.warmup):
        update(model, optimizer, next(stream), cfg)
    tokens, start = 0, time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            tokens += update(model, optimizer, next(stream), cfg)
    seconds = time.perf_counter() - start
    print(f"{args.steps} updates, {tokens} target tokens (EOS included), {seconds:.1f} s under the profiler "
          f"({tokens / seconds:.0f} tok/s; the profiler itself slows small operators down)")
    calls = report(prof.key_averages(), top=args.top)
    print(f"\n{calls / args.steps:.0f} operator calls per update")
    return 0


if __name__ == "__main__":
    sys.exit(main())
