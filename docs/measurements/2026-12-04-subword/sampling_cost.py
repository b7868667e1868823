"""What tokenizer.sampling costs on Multi30k en->de: seconds to prepare the store, pieces per
sentence, store size, and training speed with the default recipe's model, against the same
tokenizer without sampling.

    python docs/measurements/2026-12-04-subword/sampling_cost.py ../shared/data/multi30k OUT_DIR

The machine is shared: other trainings may run beside this one. So the two sides of each
comparison are measured alternately in one process: preparing the store with and without
random segmentations in turns (the fastest of three each), and training updates on batches of
the deterministic store and of the first random copy in turns (the same model, one update
each), so that whatever else runs slows both alike. Waits while /work/bench/BUSY exists."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from seq2seq.data import epoch_batches, iterate_batches
from seq2seq.data.encode import Segmenting
from seq2seq.data.prepare import open_or_prepare
from seq2seq.rundir import RunDir
from seq2seq.start import begin, load_run_config
from seq2seq.update import update

ROOT = Path(__file__).resolve().parents[3]
BUSY = Path("/work/bench/BUSY")
SETTINGS = {
    "bpe_dropout_0.1": {"model_type": "bpe", "sampling": {"dropout": 0.1, "copies": 4}},
    "unigram_alpha_0.1": {"model_type": "unigram", "sampling": {"alpha": 0.1, "copies": 4}},
}
UPDATES, WARMUP, PREPARES = 120, 10, 3


def wait_idle() -> None:
    while BUSY.exists():
        time.sleep(20)


def timed_prepare(cfg, run: RunDir, segmenting, directory: Path):
    src_tok, tgt_tok = run.open_tokenizers(cfg)
    files = [*run.tokenizer_files(cfg), *run.kept_files()]
    shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    store = open_or_prepare(cfg.data, directory, src_tok, tgt_tok, files, prepare=True, segmenting=segmenting,
                            quiet=True)
    return time.perf_counter() - start, store


def measure(name: str, tokenizer: dict, data: Path, out: Path) -> dict:
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [f"data.train={data}/train", f"data.valid={data}/val", f"data.test={data}/test_2016_flickr",
            f"tokenizer={json.dumps({'joint': True, 'vocab_size': 8000, **tokenizer})}", "training.num_threads=2"]
    cfg = load_run_config(ROOT / "configs" / "multi30k_en_de.yaml", sets)
    s = begin(cfg, run_dir, quiet=True)  # tokenizer, the store with its random copies, the model
    run, segmenting = RunDir(run_dir), Segmenting.from_config(cfg.tokenizer.sampling, cfg.training.seed)
    seconds = {"deterministic": [], "sampled": []}
    for _ in range(PREPARES):
        for kind, seg in (("deterministic", None), ("sampled", segmenting)):
            took, store = timed_prepare(cfg, run, seg, out / f"{name}.{kind}.store")
            seconds[kind].append(took)
            if kind == "sampled":
                sampled_bytes = sum(f.stat().st_size for f in store.directory.rglob("*") if f.is_file())
            else:
                plain_bytes = sum(f.stat().st_size for f in store.directory.rglob("*") if f.is_file())

    t = cfg.training
    sides = {"deterministic": s.train_data, "sampled": s.train_data.for_epoch(1)}
    plans = {kind: iter(iterate_batches(d, epoch_batches(d, batch_tokens=t.batch_tokens, batch_size=t.batch_size,
                                                          seed=t.seed, epoch=1)))
             for kind, d in sides.items()}
    speed = {kind: {"seconds": 0.0, "tokens": 0, "sentences": 0} for kind in sides}
    for n in range(WARMUP + UPDATES):
        for kind in sides:
            batch = next(plans[kind])  # cut and padded before the clock starts, as the prefetcher does
            start = time.perf_counter()
            result = update(s.train_model, s.optimizer, [batch.to(s.device)], clip_norm=t.clip_norm,
                            label_smoothing=t.label_smoothing, loss_normalization=t.loss_normalization,
                            accum_steps=1, precision=s.precision, scaler=s.scaler)
            float(result.loss_sum)
            if n >= WARMUP:
                speed[kind]["seconds"] += time.perf_counter() - start
                speed[kind]["tokens"] += batch.num_tgt_tokens
                speed[kind]["sentences"] += len(batch.indices)
    lengths = {kind: [round(float(x.float().mean()), 2) for x in d.lengths()] for kind, d in sides.items()}
    return {"setting": name, "tokenizer": tokenizer, "pairs": len(s.train_data), "updates_each": UPDATES,
            "prepare_seconds_min_of_3": {k: round(min(v), 2) for k, v in seconds.items()},
            "store_bytes": {"deterministic": plain_bytes, "sampled": sampled_bytes},
            "pieces_per_sentence_src_tgt": lengths,
            "target_tokens_per_second": {k: round(v["tokens"] / v["seconds"], 1) for k, v in speed.items()},
            "sentences_per_second": {k: round(v["sentences"] / v["seconds"], 1) for k, v in speed.items()}}


def main() -> None:
    data, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    results = []
    for name, tokenizer in SETTINGS.items():
        wait_idle()
        row = measure(name, tokenizer, data, out)
        print(json.dumps(row), flush=True)
        results.append(row)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
