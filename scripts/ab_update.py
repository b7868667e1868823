"""Our training update against a plain-PyTorch one, side by side in one process: the same model,
the same batches, alternating rounds, so that machine noise hits both alike.

  current    seq2seq.update.token_loss (the hand-written label-smoothed cross-entropy) and the
             optimizer of seq2seq.trainer.build_optimizer (fused Adam)
  reference  torch's F.cross_entropy and the unfused (per-parameter loop) Adam

    python scripts/ab_update.py --config configs/bench_peer_lstm.yaml \
        --tokenizer runs/multi30k_en_de/spm.joint.model --batches 16 --rounds 3

Each round starts both from the same weights; prints target tok/s (EOS included) per round and
the median ratio. Only the update is timed, not data loading.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq import update as update_module  # noqa: E402
from seq2seq.config import load_config  # noqa: E402
from seq2seq.data import encode_parallel, epoch_batches, iterate_batches, read_parallel  # noqa: E402
from seq2seq.model import build_model  # noqa: E402
from seq2seq.tokenizer import PAD, Tokenizer  # noqa: E402
from seq2seq.trainer import build_optimizer  # noqa: E402

OURS = update_module.token_loss


def torch_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=PAD,
                           reduction="sum", label_smoothing=label_smoothing)


def run(variant: str, model: torch.nn.Module, start: dict, batches: list, cfg) -> float:
    """Target tokens per second of len(batches) updates from the weights `start`."""
    model.load_state_dict(start)
    t = cfg.training
    optimizer = build_optimizer(model, cfg)
    if variant == "reference":
        update_module.token_loss = torch_loss
        optimizer = type(optimizer)(optimizer.param_groups[0]["params"], lr=t.lr, betas=tuple(t.betas),
                                    weight_decay=t.weight_decay, foreach=False, fused=False)
    else:
        update_module.token_loss = OURS
    tokens, begin = 0, time.perf_counter()
    for batch in batches:
        update_module.forward_backward(model, batch, denominator=batch.num_tgt_tokens,
                                       label_smoothing=t.label_smoothing)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch.num_tgt_tokens
    update_module.token_loss = OURS
    return tokens / (time.perf_counter() - begin)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "bench_peer_lstm.yaml"))
    ap.add_argument("--tokenizer", required=True, help="joint SentencePiece model (.model)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    cfg = load_config(args.config)
    tok = Tokenizer(args.tokenizer)
    src, tgt = read_parallel(f"{args.data}/train.en", f"{args.data}/train.de")
    data = encode_parallel(src, tgt, tok, tok, max_src_len=cfg.data.max_src_len, max_tgt_len=cfg.data.max_tgt_len)
    model = build_model(cfg.model, src_vocab_size=len(tok), tgt_vocab_size=len(tok))
    model.train()
    t = cfg.training
    stream = iterate_batches(data, epoch_batches(data, batch_tokens=t.batch_tokens, batch_size=t.batch_size,
                                                 seed=1, epoch=1))
    batches = [next(stream) for _ in range(args.batches)]
    start = copy.deepcopy(model.state_dict())
    run("current", model, start, batches[:2], cfg)  # first-call costs out of the rounds
    run("reference", model, start, batches[:2], cfg)
    rates: dict[str, list[float]] = {"current": [], "reference": []}
    for r in range(args.rounds):
        order = ("current", "reference") if r % 2 == 0 else ("reference", "current")
        for variant in order:
            rates[variant].append(run(variant, model, start, batches, cfg))
        print(f"round {r + 1}: current {rates['current'][-1]:,.0f} tok/s, "
              f"reference {rates['reference'][-1]:,.0f} tok/s", flush=True)
    ratios = [c / ref for c, ref in zip(rates["current"], rates["reference"])]
    print(f"median: current {statistics.median(rates['current']):,.0f} tok/s, reference "
          f"{statistics.median(rates['reference']):,.0f} tok/s, ratio {statistics.median(ratios):.3f} "
          f"({args.batches} batches x {args.rounds} rounds, {args.threads} threads, EOS included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
