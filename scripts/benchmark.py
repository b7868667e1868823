#!/usr/bin/env python
"""Speed, memory and quality of one config on Multi30k en->de (the protocol of ../shared/peers).

Measures, in one process and with the thread count stated:
  - training: target tokens/s (EOS excluded, as the peers' table; and included, as their logs),
    source+target tokens/s, median over the steps after warm-up, from a run trained from scratch
    for --steps updates, each timed: seq2seq.training.begin.begin builds the run as `seq2seq train` does,
    and every update is seq2seq.training.update.update, the function the trainer calls;
  - FLOPs per update counted from the layer sizes and the batch's lengths, and the model FLOP
    utilisation against the float32 matmul peak measured with torch.mm in the same run;
  - peak memory: resident set (VmHWM, reset before each phase) on CPU, max_memory_allocated on GPU;
  - decoding test_2016_flickr with greedy and beam 5: sentences/s, target pieces/s and sacreBLEU;
    with --quantize int8 the same for the int8 model; with --ddp N the N-process CPU throughput
    (torchrun, gloo) next to one process.
Writes RESULT.json and RESULT.md into --out; --peers PATH/peers.json (from run_peers.sh) adds the
peers' figures to the table. `peer_compatible` in the JSON uses the keys and units of peers.json.

  python scripts/benchmark.py --steps 300 --out bench/            # the full protocol
  python scripts/benchmark.py --config configs/tiny.yaml --steps 30 --warmup 5 --decode-limit 100 --out /tmp/b
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's package, installed or not

import torch  # noqa: E402

from seq2seq.config import Config, dump_yaml, load_config  # noqa: E402
from seq2seq.metrics import score_all  # noqa: E402
from seq2seq.data.tokenizer import PAD  # noqa: E402

log = logging.getLogger("benchmark")


# ---------------------------------------------------------------------------------------
# Counting work


def forward_macs(cfg: Config, *, src_vocab: int, tgt_vocab: int, src_lens: list[int], tgt_lens: list[int]) -> int:
    """Multiply-adds of one teacher-forced forward pass over a batch, from the layer sizes.

    `src_lens` are source lengths, `tgt_lens` decoder steps per sentence (target + EOS). Only real
    tokens count (the encoder is packed; padded decoder positions are wasted work, not model work).
    Embedding look-ups, softmax and elementwise gate math are left out (small next to the products).
    """
    e, d = cfg.model.encoder, cfg.model.decoder
    enc_gates = 4 if e.cell == "lstm" else 3
    dec_gates = 4 if d.cell == "lstm" else 3
    dirs = 2 if e.bidirectional else 1
    mem = dirs * e.hidden_size
    hd = d.hidden_size

    per_src_token = 0
    for layer in range(e.num_layers):
        inp = e.emb_size if layer == 0 else mem
        per_src_token += dirs * (inp + e.hidden_size) * enc_gates * e.hidden_size
    attn = d.attention
    if attn == "additive":
        per_src_token += mem * hd          # keys projected once per sentence
        per_query = hd * hd                # query projection
        per_pair = hd + mem                # v . tanh(...) score, then the weighted sum of values
    elif attn == "general":
        per_src_token += mem * hd
        per_query, per_pair = 0, hd + mem
    else:
        per_query, per_pair = 0, 2 * mem

    first_in = d.emb_size + (hd if d.input_feeding else 0)
    per_tgt_token = (first_in + hd) * dec_gates * hd
    per_tgt_token += (d.num_layers - 1) * 2 * hd * dec_gates * hd
    per_tgt_token += per_query + (hd + mem) * hd + hd * tgt_vocab  # attention query, combine, output
    per_sentence = 0
    if d.init == "bridge":
        per_sentence = mem * d.num_layers * hd * (2 if d.cell == "lstm" else 1)

    pairs = sum(s * t for s, t in zip(src_lens, tgt_lens))
    return (per_src_token * sum(src_lens) + per_tgt_token * sum(tgt_lens) + per_pair * pairs
            + per_sentence * len(src_lens))


def matmul_peak(device: torch.device, *, n: int = 2048, reps: int = 5) -> dict:
    """float32 GFLOP/s of torch.mm on n x n matrices at the current thread count."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        sync()
        rates.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return {"n": n, "reps": reps, "median_gflops": statistics.median(rates), "best_gflops": max(rates)}


# ---------------------------------------------------------------------------------------
# Memory


def reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    try:  # hand freed heap back, so the next phase's peak is its own
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    out = {}
    try:
        status = Path("/proc/self/status").read_text()
        out["peak_rss_mb"] = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
        out["rss_source"] = "VmHWM since phase start"
    except (OSError, AttributeError):
        scale = 1 if platform.system() == "Darwin" else 1024
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20
        out["rss_source"] = "ru_maxrss since process start"
    if device.type == "cuda":
        out["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


# ---------------------------------------------------------------------------------------
# Phases


def window_rates(seconds: list[float], tokens: list[int], size: int) -> list[float]:
    """Tokens/s over consecutive windows of `size` updates, as a training log line reports them."""
    return [sum(tokens[i:i + size]) / sum(seconds[i:i + size])
            for i in range(0, len(seconds) - size + 1, size)]


def bench_training(cfg: Config, run_dir: Path, *, warmup: int, device: torch.device) -> dict:
    from seq2seq.data import epoch_batches, groups, iterate_batches
    from seq2seq.training.begin import begin
    from seq2seq.training.checkpoints import validate_and_save
    from seq2seq.training.log import TrainLog
    from seq2seq.training.update import update

    records: list[dict] = []
    reset_peak_memory(device)
    t0, cpu = time.perf_counter(), time.process_time()
    s = begin(cfg, run_dir, quiet=True)  # tokenizers, data and model, as `seq2seq train` builds them
    t = cfg.training
    # Each update's time runs from the end of the one before, as the trainer counts training
    # time: cutting and padding the batches is part of it.
    clock = time.perf_counter()
    while len(records) < t.max_steps:
        batches = epoch_batches(s.train_data, batch_tokens=t.batch_tokens, batch_size=t.batch_size, seed=t.seed,
                                epoch=s.progress.epoch)
        for group in groups(iterate_batches(s.train_data, batches), t.accum_steps):
            update(s.train_model, s.optimizer, [b.to(s.device) for b in group], clip_norm=t.clip_norm,
                   label_smoothing=t.label_smoothing, loss_normalization=t.loss_normalization,
                   accum_steps=t.accum_steps, precision=s.precision, scaler=s.scaler)
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            records.append({"seconds": now - clock,
                            "src_lens": [int(n) for b in group for n in b.src_lengths],
                            "tgt_lens": [int(n) for b in group for n in (b.tgt_out != PAD).sum(1)]})
            clock = time.perf_counter()  # the bookkeeping above is the benchmark's, not training's
            s.progress.step += 1
            if len(records) == t.max_steps:
                break
        s.progress.epoch += 1
    validate_and_save(s, TrainLog(t, s.progress, s.run))  # best.pt, which the decoding phases read
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
    memory = peak_memory(device)
    if len(records) <= warmup:
        raise SystemExit(f"--steps must exceed --warmup ({warmup}); got {len(records)} updates")

    src_vocab, tgt_vocab = len(s.src_tok), len(s.tgt_tok)
    seconds = [r["seconds"] for r in records]
    tgt_eos = [sum(r["tgt_lens"]) for r in records]
    tgt = [sum(r["tgt_lens"]) - len(r["tgt_lens"]) for r in records]
    src = [sum(r["src_lens"]) for r in records]
    flops = [3 * 2 * forward_macs(cfg, src_vocab=src_vocab, tgt_vocab=tgt_vocab, src_lens=r["src_lens"],
                                  tgt_lens=r["tgt_lens"]) for r in records]  # forward + backward ~ 3x forward
    steady = slice(warmup, None)
    med = lambda xs: statistics.median(xs[steady])  # noqa: E731
    rate = lambda tok: statistics.median([n / s for n, s in zip(tok[steady], seconds[steady])])  # noqa: E731
    achieved = rate(flops) / 1e9
    return {
        "steps": len(records), "warmup_steps": warmup, "train_call_s": wall, "train_call_cpu_s": cpu,
        "precision": s.precision,
        "median_step_s": med(seconds),
        "tgt_tok_s": rate(tgt), "tgt_tok_s_incl_eos": rate(tgt_eos),
        "src_tgt_tok_s": rate([a + b for a, b in zip(src, tgt_eos)]),
        "median_logged_tgt_tok_s_incl_eos": statistics.median(window_rates(seconds, tgt_eos, cfg.training.log_every)
                                                              or [sum(tgt_eos) / sum(seconds)]),
        "window10_tgt_tok_s_incl_eos": statistics.median(window_rates(seconds[steady], tgt_eos[steady], 10)
                                                         or [sum(tgt_eos[steady]) / sum(seconds[steady])]),
        "median_flops_per_step": med(flops), "mflop_per_tgt_token": sum(flops) / sum(tgt) / 1e6,
        "achieved_gflops": achieved,
        "src_vocab": src_vocab, "tgt_vocab": tgt_vocab,
        "step_seconds": [round(x, 5) for x in seconds], **{f"train_{k}": v for k, v in memory.items()},
    }


def bench_decoding(run_dir: Path, sources: list[str], refs: list[str], *, beam: int, batch_size: int,
                   device: torch.device, quantize: str | None) -> dict:
    from seq2seq.decoding.translator import Translator
    reset_peak_memory(device)
    translator = Translator.load(run_dir, device=str(device.type), quantize=quantize)
    translator.search(sources[:8], beam_size=beam, batch_size=batch_size)  # first-call costs out of the timing
    t, cpu = time.perf_counter(), time.process_time()
    hyps = translator.search(sources, beam_size=beam, batch_size=batch_size)
    texts = [translator.detokenize(h[0]) for h in hyps]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    memory = peak_memory(device)
    scores = score_all(texts, refs)
    pieces = sum(len(h[0].tokens) for h in hyps)
    return {"beam": beam, "quantize": quantize or "float32", "precision": translator.precision,
            "batch_size": batch_size, "sentences": len(sources),
            "seconds": seconds, "cpu_seconds": cpu, "sent_s": len(sources) / seconds, "tgt_tok_s": pieces / seconds,
            "bleu": scores["bleu"], "chrf": scores["chrf"], "bleu_signature": scores["bleu_signature"],
            **{f"decode_{k}": v for k, v in memory.items()}}


def bench_ddp(cfg: Config, run_dir: Path, tokenizer_from: Path, *, nproc: int, threads: int, warmup: int) -> dict:
    """Throughput of `nproc` CPU processes under torchrun (gloo), from rank 0's train.jsonl."""
    from dataclasses import replace
    per_rank = max(1, threads // nproc)
    log_every = 10
    t = replace(cfg.training, num_threads=per_rank, log_every=log_every, device="cpu")
    cfg = replace(cfg, training=t)
    run_dir.mkdir(parents=True)
    for f in tokenizer_from.glob("spm.*"):  # same pieces, and no second tokenizer training
        shutil.copy(f, run_dir / f.name)
    config = run_dir.parent / f"{run_dir.name}.yaml"
    config.write_text(dump_yaml(cfg), encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS=str(per_rank),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "seq2seq", "train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_second"] for r in records if r["step"] > warmup]
    return {"nproc": nproc, "threads_per_process": per_rank, "steps": cfg.training.max_steps,
            "sentences_per_step": nproc * (cfg.training.batch_size or 0), "train_call_s": wall,
            "window10_tgt_tok_s_incl_eos": statistics.median(rates) if rates else None,
            "note": "rank 0's logged rate (its tokens x world size) over 10-update windows after warm-up"}


# ---------------------------------------------------------------------------------------
# Output


def markdown(result: dict, peers: list[dict] | None) -> str:
    m, tr = result["machine"], result.get("training")
    head = [f"# seq2seq benchmark: {result['config']}", "",
             f"{result['date']}, {m['cpu']}, {m['threads']} threads, torch {m['torch']}, device {m['device']}"
             f"{' (SMOKE SETTINGS)' if result['smoke'] else ''}", "",
             f"float32 matmul peak (torch.mm {result['matmul']['n']}^2, median of {result['matmul']['reps']}): "
             f"{result['matmul']['median_gflops']:.0f} GFLOP/s"
             + (f" before training, {result['matmul_after_training']['median_gflops']:.0f} after (utilisation "
                f"below is against their mean)" if "matmul_after_training" in result else ""), ""]
    lines = [] if tr is None else [
             "| training | value |", "|---|---|",
             f"| updates timed (after {tr['warmup_steps']} warm-up) | {tr['steps'] - tr['warmup_steps']} |",
             f"| target tok/s, EOS excluded | {tr['tgt_tok_s']:,.0f} |",
             f"| target tok/s, EOS included | {tr['tgt_tok_s_incl_eos']:,.0f} |",
             f"| source+target tok/s | {tr['src_tgt_tok_s']:,.0f} |",
             f"| median update time | {tr['median_step_s'] * 1000:.1f} ms |",
             f"| FLOPs per update (3x forward) / per target token | {tr['median_flops_per_step'] / 1e9:.2f} GFLOP / "
             f"{tr['mflop_per_tgt_token']:.1f} MFLOP |",
             f"| achieved / model FLOP utilisation | {tr['achieved_gflops']:.1f} GFLOP/s / {100 * tr['mfu']:.0f} % |",
             f"| peak resident memory | {tr['train_peak_rss_mb']:,.0f} MB |"]
    if tr and "train_peak_cuda_allocated_mb" in tr:
        lines.append(f"| peak CUDA memory allocated | {tr['train_peak_cuda_allocated_mb']:,.0f} MB |")
    for d in result.get("ddp", []):
        lines.append(f"| 10-update window tok/s incl. EOS: 1 process x {m['threads']} threads / {d['nproc']} "
                     f"processes x {d['threads_per_process']} | {tr['window10_tgt_tok_s_incl_eos']:,.0f} / "
                     f"{d['window10_tgt_tok_s_incl_eos'] or float('nan'):,.0f} |")
    lines = head + lines
    lines += ["", f"Decoding {result['decode_set']} ({result['decoding'][0]['sentences']} sentences, "
              f"batches of {result['decoding'][0]['batch_size']} sentences, model loaded):", "",
              "| weights | search | seconds | sent/s | target pieces/s | BLEU | chrF | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|"]
    for d in result["decoding"]:
        lines.append(f"| {d['quantize']} | {'greedy' if d['beam'] == 1 else 'beam ' + str(d['beam'])} | "
                     f"{d['seconds']:.1f} | {d['sent_s']:.1f} | {d['tgt_tok_s']:,.0f} | {d['bleu']:.2f} | "
                     f"{d['chrf']:.2f} | {d['decode_peak_rss_mb']:,.0f} |")
    if peers:
        ours = result["peer_compatible"]
        smoke = " NOT COMPARABLE: smoke settings (fewer steps or a decoding subset)." if result["smoke"] else ""
        lines += ["", f"Next to the peers (run_peers.sh; logged training rate includes EOS).{smoke}", "",
                  "| toolkit | steps | median logged tgt tok/s | beam-5 decode s | BLEU | chrF |", "|---|---|---|---|---|---|"]
        for p in [ours, *peers]:
            lines.append(f"| {p['toolkit']} | {p['steps']} | {p.get('median_logged_tgt_tok_s_incl_eos') or 0:,.0f} | "
                         f"{p.get('beam5_generation_s') or float('nan'):.1f} | {p.get('beam5_bleu', float('nan')):.2f} | "
                         f"{p.get('beam5_chrf', float('nan')):.2f} |")
        for p in peers:
            if all(p.get(k) and ours.get(k) for k in ("median_logged_tgt_tok_s_incl_eos", "beam5_generation_s")):
                lines.append(f"\nvs {p['toolkit']}: training x{ours['median_logged_tgt_tok_s_incl_eos'] / p['median_logged_tgt_tok_s_incl_eos']:.2f}, "
                             f"beam-5 decoding x{p['beam5_generation_s'] / ours['beam5_generation_s']:.2f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "bench_peer_lstm.yaml"))
    ap.add_argument("--data", default="../shared/data/multi30k", help="folder with train/val/TEST .{src,tgt} files")
    ap.add_argument("--test-name", default="test_2016_flickr")
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="config override")
    ap.add_argument("--steps", type=int, default=300, help="training updates from scratch")
    ap.add_argument("--warmup", type=int, default=20, help="updates left out of the medians")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: training.num_threads or 2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", metavar="RUN_DIR", help="decode this run instead of the benchmark's own")
    ap.add_argument("--no-train", action="store_true", help="with --model: measure decoding only")
    ap.add_argument("--beams", default="1,5", help="beam sizes to decode with (1 = greedy)")
    ap.add_argument("--decode-batch-size", type=int, default=64)
    ap.add_argument("--decode-limit", type=int, help="decode only the first N test sentences (smoke tests)")
    ap.add_argument("--valid-limit", type=int, default=100, help="validation sentences for the final validation")
    ap.add_argument("--quantize", choices=["int8"], help="also decode with int8 dynamic quantization")
    ap.add_argument("--ddp", type=int, default=0, metavar="N", help="also train with N CPU processes (torchrun)")
    ap.add_argument("--peers", help="peers.json written by ../shared/peers/run_peers.sh")
    ap.add_argument("--out", required=True, help="folder for RESULT.json and RESULT.md")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run directories")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    data = Path(args.data).resolve()
    base = load_config(args.config, args.set)
    src_lang, tgt_lang = base.data.src_lang, base.data.tgt_lang
    for split in ("train", "val", args.test_name):
        for lang in (src_lang, tgt_lang):
            if not (data / f"{split}.{lang}").is_file():
                ap.error(f"--data: {data / f'{split}.{lang}'} not found")
    threads = args.threads or base.training.num_threads or 2
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="seq2seq-bench-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # The final validation of the benchmark run only has to produce a checkpoint: keep it short.
    for lang in (src_lang, tgt_lang):
        lines = (data / f"val.{lang}").read_text(encoding="utf-8").splitlines()[:args.valid_limit]
        (work / f"val.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = load_config(args.config, [*args.set, f"data.train={data / 'train'}", f"data.valid={work / 'val'}",
                                    f"data.test={data / args.test_name}", f"training.max_steps={args.steps}",
                                    "training.max_minutes=null", "training.max_epochs=1000",
                                    "training.valid_every=100000000", "training.valid_at_epoch_end=false",
                                    "training.patience=null", "training.keep_best=0",
                                    f"training.num_threads={threads}", f"training.device={args.device}"])

    result = {"config": str(args.config), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "smoke": args.steps < 100 or args.decode_limit is not None,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": threads, "torch": torch.__version__, "device": str(device),
                          "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
              "decode_set": args.test_name}
    log.info("matmul peak at %d threads ...", threads)
    result["matmul"] = matmul_peak(device)
    log.info("%.0f GFLOP/s", result["matmul"]["median_gflops"])

    run_dir = Path(args.model) if args.model else work / "run"
    if not args.no_train:
        log.info("training %d updates in %s ...", args.steps, work / "run")
        result["training"] = bench_training(cfg, work / "run", warmup=args.warmup, device=device)
        # This machine's speed drifts within minutes: the peak is measured again after training
        # and the utilisation is taken against the mean of both.
        result["matmul_after_training"] = matmul_peak(device)
        tr = result["training"]
        tr["peak_gflops"] = statistics.mean([result["matmul"]["median_gflops"],
                                             result["matmul_after_training"]["median_gflops"]])
        tr["mfu"] = tr["achieved_gflops"] / tr["peak_gflops"]
        log.info("%.0f target tok/s (EOS excluded), MFU %.0f %% (matmul peak after training %.0f GFLOP/s)",
                 tr["tgt_tok_s"], 100 * tr["mfu"], result["matmul_after_training"]["median_gflops"])
    if args.ddp > 1 and not args.no_train:
        log.info("training %d updates with %d processes ...", args.steps, args.ddp)
        result["ddp"] = [bench_ddp(cfg, work / "ddp", work / "run", nproc=args.ddp, threads=threads,
                                   warmup=args.warmup)]

    sources = (data / f"{args.test_name}.{src_lang}").read_text(encoding="utf-8").splitlines()
    refs = (data / f"{args.test_name}.{tgt_lang}").read_text(encoding="utf-8").splitlines()
    if args.decode_limit:
        sources, refs = sources[:args.decode_limit], refs[:args.decode_limit]
    result["decoding"] = []
    for quantize in [None] + ([args.quantize] if args.quantize else []):
        for beam in [int(b) for b in args.beams.split(",")]:
            log.info("decoding with beam %d (%s) ...", beam, quantize or "float32")
            r = bench_decoding(run_dir, sources, refs, beam=beam, batch_size=args.decode_batch_size,
                               device=device, quantize=quantize)
            log.info("%.1f sent/s, BLEU %.2f", r["sent_s"], r["bleu"])
            result["decoding"].append(r)

    beam5 = next((d for d in result["decoding"] if d["beam"] == 5 and d["quantize"] == "float32"), None)
    tr = result.get("training", {})
    result["peer_compatible"] = {
        "toolkit": "seq2seq", "steps": tr.get("steps"), "train_call_s": tr.get("train_call_s"),
        "median_logged_tgt_tok_s_incl_eos": tr.get("median_logged_tgt_tok_s_incl_eos"),
        "beam5_generation_s": beam5 and beam5["seconds"], "beam5_bleu": beam5 and beam5["bleu"],
        "beam5_chrf": beam5 and beam5["chrf"]}
    peers = json.loads(Path(args.peers).read_text()) if args.peers else None
    (out / "RESULT.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "RESULT.md").write_text(markdown(result, peers), encoding="utf-8")
    log.info("wrote %s", out / "RESULT.json")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log.info("run directories kept in %s", work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
