#!/usr/bin/env python3
"""What one training update and one decoding step ask of the device: operator calls and host
syncs per update (torch.profiler, seq2seq.profiling), target tokens per second, and host syncs
per greedy and beam-search step, for a config's model on random batches of Multi30k-like lengths.

    python experiments/step_ops.py --config configs/bench_peer_lstm.yaml --batch-size 16
    python experiments/step_ops.py --config configs/tiny.yaml --batch-size 4 --updates 2 --timed 2

No data or tokenizer needed: the vocabulary sizes are given (the peer protocol's kept pieces by
default) and the batches are drawn from a fixed seed, so two versions of the code count the same
work. Prints the figures and, with --json, writes them. Timings are only meaningful on an idle
machine; the counts do not depend on it.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.config import load_config  # noqa: E402
from seq2seq.data import Batch, ParallelData, make_batch  # noqa: E402
from seq2seq.model.model import build_model, resolve_device  # noqa: E402
from seq2seq.profiling import count_ops  # noqa: E402
from seq2seq.decoding.search import beam_search, greedy_search, max_output_lengths  # noqa: E402
from seq2seq.training.state import build_optimizer  # noqa: E402
from seq2seq.data.tokenizer import EOS  # noqa: E402
from seq2seq.training.update import update  # noqa: E402


def random_batches(count: int, size: int, *, src_vocab: int, tgt_vocab: int, seed: int) -> list[Batch]:
    """`count` batches of `size` pairs, lengths about those of Multi30k's pieces (mean 14 and 16)."""
    rng = random.Random(seed)

    def sentence(vocab: int, mean: int) -> list[int]:
        return [rng.randrange(4, vocab) for _ in range(max(1, min(60, int(rng.gauss(mean, 4)))))]
    pairs = [(sentence(src_vocab, 14), sentence(tgt_vocab, 16)) for _ in range(count * size)]
    data = ParallelData([s for s, _ in pairs], [t for _, t in pairs])
    return [make_batch(data, range(k * size, (k + 1) * size)) for k in range(count)]


def measure_training(model, optimizer, batches: list[Batch], cfg, *, precision: str, updates: int,
                     timed: int) -> dict:
    t = cfg.training

    def one(batch: Batch) -> None:
        update(model, optimizer, [batch], clip_norm=t.clip_norm, label_smoothing=t.label_smoothing,
               loss_normalization=t.loss_normalization, precision=precision)

    one(batches[0])  # the optimizer's state is made on the first step
    with count_ops() as counts:
        for batch in batches[1:updates + 1]:
            one(batch)
    device = batches[0].src.device
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = 0
    for k in range(timed):
        batch = batches[k % len(batches)]
        one(batch)
        tokens += batch.num_tgt_tokens
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"operator_calls_per_update": counts.ops / updates, "syncs_per_update": counts.syncs / updates,
            "sync_sites": dict(counts.sites), "tgt_tok_s": tokens / seconds if timed else None}


def measure_decoding(model, batch: Batch, *, beam_size: int) -> dict:
    with torch.no_grad():  # an untrained model would end every sentence at once: EOS made unlikely
        model.decoder.output.bias[EOS] = -5.0
    decoding = model.eval().for_decoding()
    steps = {"n": 0}
    step = decoding.step

    def counted(*args):
        steps["n"] += 1
        return step(*args)
    decoding.step = counted
    max_lengths = max_output_lengths(batch.src_lengths.to(batch.src.device), 1.5, 5)  # on the device, as translate_ids
    with count_ops() as counts, torch.no_grad():
        if beam_size == 1:
            greedy_search(decoding, batch.src, batch.src_lengths, max_lengths=max_lengths)
        else:
            beam_search(decoding, batch.src, batch.src_lengths, beam_size=beam_size, max_lengths=max_lengths)
    return {"steps": steps["n"], "syncs": counts.syncs, "syncs_per_step": counts.syncs / max(steps["n"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "bench_peer_lstm.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--vocab", type=int, nargs=2, default=[4295, 5486], metavar=("SRC", "TGT"),
                    help="vocabulary sizes (default: the peer protocol's kept pieces)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--updates", type=int, default=3, help="updates counted under the profiler")
    ap.add_argument("--timed", type=int, default=20, help="updates timed without the profiler (0: none)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    cfg = load_config(args.config, args.set)
    device = resolve_device(args.device)
    model = build_model(cfg.model, src_vocab_size=args.vocab[0], tgt_vocab_size=args.vocab[1]).to(device).train()
    optimizer = build_optimizer(model, cfg.training)
    batches = [b.to(device) for b in random_batches(max(args.updates + 1, 4), args.batch_size,
                                                    src_vocab=args.vocab[0], tgt_vocab=args.vocab[1], seed=1)]
    result = {"config": args.config, "overrides": args.set, "batch_size": args.batch_size, "device": str(device),
              "precision": args.precision, "torch": torch.__version__,
              "training": measure_training(model, optimizer, batches, cfg, precision=args.precision,
                                           updates=args.updates, timed=args.timed),
              "greedy": measure_decoding(model, batches[0], beam_size=1),
              "beam5": measure_decoding(model, batches[0], beam_size=5)}
    tr = result["training"]
    print(f"{cfg.model.encoder.cell}/{cfg.model.decoder.cell} model, batch {args.batch_size}, {device}, "
          f"{args.precision}, torch {torch.__version__}")
    print(f"training update: {tr['operator_calls_per_update']:.0f} operator calls, "
          f"{tr['syncs_per_update']:g} host syncs"
          + (f", {tr['tgt_tok_s']:,.0f} target tok/s" if tr["tgt_tok_s"] else ""))
    for site, n in tr["sync_sites"].items():
        print(f"  {n / args.updates:g} per update: {site}")
    for name in ("greedy", "beam5"):
        d = result[name]
        print(f"{name}: {d['syncs']} host syncs over {d['steps']} steps ({d['syncs_per_step']:.2f} a step)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
