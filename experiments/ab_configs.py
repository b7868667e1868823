#!/usr/bin/env python3
"""Training-update speed of a config against the same config with --set overrides, side by side
in one process: the same sentences, alternating rounds, so that machine noise hits both alike.

    python experiments/ab_configs.py --config configs/bench_peer_lstm.yaml \\
        --tokenizer runs/multi30k_en_de/spm.joint.model --set tokenizer.drop_unseen=false

Each round starts both models from their initial weights; prints target tok/s (EOS included) per
round and the median ratio of the config's rate to the overridden one's. Only updates are timed.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

# update_loop stays in scripts/: the profilers there share it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from update_loop import add_arguments, alternate, setup, update  # noqa: E402

from seq2seq.training.state import build_optimizer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    ap.add_argument("--set", dest="overrides", action="append", required=True, metavar="KEY.PATH=VALUE",
                    help="what the other variant changes (repeatable)")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    variants = {}
    for name, overrides in (("config", []), ("overridden", args.overrides)):
        cfg, model, stream = setup(args, overrides)
        batches = [next(stream) for _ in range(args.batches)]
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params:,} parameters, {sum(b.num_tgt_tokens for b in batches):,} target tokens", flush=True)
        variants[name] = (cfg, model, batches, copy.deepcopy(model.state_dict()))

    def run(name: str) -> float:
        cfg, model, batches, start = variants[name]
        model.load_state_dict(start)
        optimizer = build_optimizer(model, cfg.training)
        tokens, begin = 0, time.perf_counter()
        for batch in batches:
            tokens += update(model, optimizer, batch, cfg)
        return tokens / (time.perf_counter() - begin)

    for name in variants:
        run(name)  # first-call costs out of the rounds
    ratio = alternate(run, "config", "overridden", rounds=args.rounds)
    print(f" ({' '.join(args.overrides)}), ratio {ratio:.3f} ({args.batches} batches x {args.rounds} rounds, "
          f"{args.threads} threads, EOS included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
