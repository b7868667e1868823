#!/usr/bin/env python3
"""Training speed with batches read from the prepared store against batches built from Python
lists in memory (the data path before the store), side by side in one process: the same
config, the same batches, the same start weights, alternating rounds.

    python docs/measurements/2026-12-01/ab_data.py --config configs/multi30k_en_de.yaml --work /tmp/ab_data --rounds 5

Prints target tok/s (EOS included) of each round, counting the time to build each batch and
the update, and the median ratio store / lists.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]  # docs/measurements/2026-12-01/ -> the checkout
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from update_loop import alternate  # noqa: E402

from seq2seq.config import load_config  # noqa: E402
from seq2seq.data import ParallelData, epoch_batches, make_batch  # noqa: E402
from seq2seq.model import build_model  # noqa: E402
from seq2seq.rundir import RunDir  # noqa: E402
from seq2seq.start import build_optimizer, prepare  # noqa: E402
from seq2seq.update import update  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "multi30k_en_de.yaml"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--work", required=True, help="run directory for the tokenizer and the store")
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [f"data.train={args.data}/train", f"data.valid={args.data}/val"])
    store = prepare(cfg, args.work, quiet=True)
    pairs = [store.pair(i) for i in range(len(store))]
    lists = ParallelData([s for s, _ in pairs], [t for _, t in pairs])
    t = cfg.training
    plan = epoch_batches(store, batch_tokens=t.batch_tokens, batch_size=t.batch_size, seed=1, epoch=1)
    indices = [plan[k] for k in range(args.batches)]
    torch.manual_seed(1)
    src_tok, tgt_tok = RunDir(args.work).open_tokenizers(cfg)
    model = build_model(cfg.model, src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok))
    start = copy.deepcopy(model.state_dict())
    sources = {"store": store, "lists": lists}

    def run(name: str) -> float:
        model.load_state_dict(start)
        model.train()
        optimizer = build_optimizer(model, cfg)
        tokens, begin = 0, time.perf_counter()
        for idx in indices:
            batch = make_batch(sources[name], idx)
            tokens += update(model, optimizer, [batch], clip_norm=t.clip_norm, label_smoothing=t.label_smoothing,
                             loss_normalization=t.loss_normalization).tokens
        return tokens / (time.perf_counter() - begin)

    for name in sources:
        run(name)  # first-call costs out of the rounds
    ratio = alternate(run, "store", "lists", rounds=args.rounds)
    print(f", store/lists ratio {ratio:.3f} ({args.batches} batches x {args.rounds} rounds, {args.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
