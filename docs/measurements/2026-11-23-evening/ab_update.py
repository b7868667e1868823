"""Our training update against a plain-PyTorch one, side by side in one process: the same model,
the same batches, alternating rounds, so that machine noise hits both alike.

  current    seq2seq.update.update, as the trainer calls it: the hand-written label-smoothed
             cross-entropy and the optimizer of seq2seq.start.build_optimizer (fused Adam)
  reference  the same update in plain PyTorch: F.cross_entropy and the unfused (per-parameter
             loop) Adam

    python docs/measurements/2026-11-23-evening/ab_update.py --config configs/bench_peer_lstm.yaml \
        --tokenizer runs/multi30k_en_de/spm.joint.model --batches 16 --rounds 3

Each round starts both from the same weights; prints target tok/s (EOS included) per round and
the median ratio. Only the update is timed, not data loading.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))  # docs/measurements/DATE/ -> scripts/
from update_loop import add_arguments, alternate, setup, update  # noqa: E402

from seq2seq.start import build_optimizer  # noqa: E402
from seq2seq.tokenizer import PAD  # noqa: E402


def reference_update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch, cfg) -> int:
    """The update written in plain PyTorch; returns its target tokens (EOS included)."""
    t = cfg.training
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch.tgt_out.reshape(-1), ignore_index=PAD,
                           reduction="sum", label_smoothing=t.label_smoothing)
    (loss / batch.num_tgt_tokens).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm or float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return batch.num_tgt_tokens


def run(variant: str, model: torch.nn.Module, start: dict, batches: list, cfg) -> float:
    """Target tokens per second of len(batches) updates from the weights `start`."""
    model.load_state_dict(start)
    t = cfg.training
    if variant == "reference":
        step = reference_update
        optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, betas=tuple(t.betas),
                                     weight_decay=t.weight_decay, foreach=False, fused=False)
    else:
        step = update
        optimizer = build_optimizer(model, cfg)
    tokens, begin = 0, time.perf_counter()
    for batch in batches:
        tokens += step(model, optimizer, batch, cfg)
    return tokens / (time.perf_counter() - begin)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    cfg, model, stream = setup(args)
    if cfg.training.optimizer != "adam":
        sys.exit(f"{args.config}: training.optimizer is {cfg.training.optimizer}; this compares Adam")
    batches = [next(stream) for _ in range(args.batches)]
    start = copy.deepcopy(model.state_dict())
    run("current", model, start, batches[:2], cfg)  # first-call costs out of the rounds
    run("reference", model, start, batches[:2], cfg)
    ratio = alternate(lambda variant: run(variant, model, start, batches, cfg), "current", "reference",
                         rounds=args.rounds)
    print(f", ratio {ratio:.3f} ({args.batches} batches x {args.rounds} rounds, {args.threads} threads, "
          f"EOS included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
