#!/usr/bin/env python3
"""float32 against bf16 (or fp16) side by side in one process: training updates of a config's
model on the same Multi30k batches from the same weights, then (with --run) decoding a trained
run's test set, greedy and beam 5, in alternating rounds so that machine drift hits both alike.

    python docs/measurements/2026-12-01/precision/ab_precision.py --config configs/bench_peer_lstm.yaml \
        --tokenizer runs/multi30k_en_de/spm.joint.model --run runs/multi30k_en_de --rounds 3

Prints per round and the medians: training target tok/s (EOS included) and decoding sentences/s,
the BLEU of each precision's translations, and the first call of each precision (oneDNN builds
kernels for new shapes on their first use).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "scripts"))  # docs/measurements/DATE/precision/ -> scripts/
from update_loop import add_arguments, alternate, setup, update  # noqa: E402

from seq2seq.data import read_lines  # noqa: E402
from seq2seq.metrics import score_all  # noqa: E402
from seq2seq.precision import cpu_flags  # noqa: E402
from seq2seq.start import build_optimizer  # noqa: E402


def training(args, low: str) -> None:
    cfg, model, stream = setup(args)
    batches = [next(stream) for _ in range(args.batches)]
    start = copy.deepcopy(model.state_dict())

    def run(precision: str, part=batches) -> float:
        model.load_state_dict(start)
        optimizer = build_optimizer(model, cfg)
        tokens, begin = 0, time.perf_counter()
        for batch in part:
            tokens += update(model, optimizer, batch, cfg, precision)
        return tokens / (time.perf_counter() - begin)

    for precision in ("fp32", low):  # first calls: new shapes build new kernels
        t = time.perf_counter()
        run(precision, batches[:1])
        print(f"first update in {precision}: {time.perf_counter() - t:.2f} s", flush=True)
    ratio = alternate(run, low, "fp32", rounds=args.rounds)
    print(f", {low}/fp32 training ratio {ratio:.3f} ({args.batches} batches x {args.rounds} rounds)", flush=True)


def decoding(args, low: str) -> None:
    from seq2seq.translator import Translator
    sources, _ = read_lines(args.data / "test_2016_flickr.en")
    refs, _ = read_lines(args.data / "test_2016_flickr.de")
    translators = {p: Translator.load(args.run, device="cpu", precision=p) for p in ("fp32", low)}
    for beam in (1, 5):
        texts = {}

        def run(precision: str) -> float:
            begin = time.perf_counter()
            texts[precision] = translators[precision].translate(sources, beam_size=beam, batch_size=64)
            return len(sources) / (time.perf_counter() - begin)

        for precision in ("fp32", low):
            t = time.perf_counter()
            translators[precision].translate(sources[:64], beam_size=beam, batch_size=64)
            print(f"first batch, beam {beam}, {precision}: {time.perf_counter() - t:.2f} s", flush=True)
        rates = {"fp32": [], low: []}
        for r in range(args.rounds):
            for precision in (("fp32", low) if r % 2 == 0 else (low, "fp32")):
                rates[precision].append(run(precision))
        bleu = {p: score_all(texts[p], refs)["bleu"] for p in texts}
        same = sum(a == b for a, b in zip(texts["fp32"], texts[low]))
        print(f"beam {beam}: median sent/s fp32 {statistics.median(rates['fp32']):.1f}, {low} "
              f"{statistics.median(rates[low]):.1f} (ratio {statistics.median(rates[low]) / statistics.median(rates['fp32']):.2f}); "
              f"BLEU fp32 {bleu['fp32']:.2f}, {low} {bleu[low]:.2f}; {same} of {len(sources)} outputs identical",
              flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    ap.add_argument("--low", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--run", help="a trained run to decode test_2016_flickr with (skip decoding without)")
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args()
    from pathlib import Path
    args.data = Path(args.data)
    flags = cpu_flags()
    print(f"CPU flags: {' '.join(sorted(f for f in flags if f.startswith(('amx', 'avx512_bf16', 'avx512f'))))}; "
          f"torch {torch.__version__}, {args.threads} threads", flush=True)
    if not args.no_train:
        training(args, args.low)
    if args.run:
        decoding(args, args.low)
    return 0


if __name__ == "__main__":
    sys.exit(main())
