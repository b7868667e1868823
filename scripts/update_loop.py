"""What scripts/profile_training.py, profile_decoding.py and experiments/ab_configs.py share (and the A/B
helpers kept beside their write-ups under docs/measurements/ import): a config's model on
Multi30k en->de batches, and one training update through seq2seq.training.update.update, the function
the trainer calls. Not a script of its own.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.config import Config, load_config  # noqa: E402
from seq2seq.data import Batch, encode_parallel, epoch_batches, iterate_batches, read_parallel  # noqa: E402
from seq2seq.model.model import build_model  # noqa: E402
from seq2seq.data.tokenizer import Tokenizer, side_lists  # noqa: E402
from seq2seq.training.update import update as train_update  # noqa: E402


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", default=str(ROOT / "configs" / "bench_peer_lstm.yaml"))
    ap.add_argument("--tokenizer", required=True, help="joint SentencePiece model (.model) of the config's "
                    "vocabulary size (training one is not what we want to time)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    ap.add_argument("--threads", type=int, default=2)


def setup(args: argparse.Namespace, overrides: Sequence[str] = ()) -> tuple[Config, torch.nn.Module, Iterator[Batch]]:
    """The config (with --set style `overrides`), its freshly initialised model in training mode,
    and a stream of epoch-1 batches."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    cfg = load_config(args.config, overrides)
    src, tgt = read_parallel(f"{args.data}/train.en", f"{args.data}/train.de")
    src_tok = tgt_tok = full = Tokenizer(args.tokenizer)
    if cfg.tokenizer.drop_unseen:
        src_list, tgt_list = side_lists(full, full, src, tgt, shared=cfg.model.share_embeddings)
        src_tok, tgt_tok = Tokenizer(full.path, src_list), Tokenizer(full.path, tgt_list)
    data = encode_parallel(src, tgt, src_tok, tgt_tok, max_src_len=cfg.data.max_src_len,
                           max_tgt_len=cfg.data.max_tgt_len)
    model = build_model(cfg.model, src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok))
    model.train()
    t = cfg.training
    batches = epoch_batches(data, batch_tokens=t.batch_tokens, batch_size=t.batch_size, seed=1, epoch=1)
    return cfg, model, iterate_batches(data, batches)


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, cfg: Config,
           precision: str = "fp32") -> int:
    """One training update on `batch`, as the trainer makes it; returns its target tokens (EOS included)."""
    t = cfg.training
    return train_update(model, optimizer, [batch], clip_norm=t.clip_norm, label_smoothing=t.label_smoothing,
                        loss_normalization=t.loss_normalization, precision=precision).tokens


def alternate(run: Callable[[str], float], first: str, second: str, *, rounds: int) -> float:
    """`run(name)` for both variants over `rounds` rounds, the order flipped every round (so that
    machine drift hits both alike), each round and the medians printed; returns the median of
    the per-round ratios first / second."""
    rates: dict[str, list[float]] = {first: [], second: []}
    for r in range(rounds):
        for name in ((first, second) if r % 2 == 0 else (second, first)):
            rates[name].append(run(name))
        print(f"round {r + 1}: {first} {rates[first][-1]:,.0f} tok/s, {second} {rates[second][-1]:,.0f} tok/s",
              flush=True)
    print(f"median: {first} {statistics.median(rates[first]):,.0f} tok/s, {second} "
          f"{statistics.median(rates[second]):,.0f} tok/s", end="")
    return statistics.median(a / b for a, b in zip(rates[first], rates[second]))
