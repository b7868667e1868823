#!/usr/bin/env python3
"""The one-shot GPU check (scripts/gpu_check.sh runs it; docs/gpu.md says how and what to expect).

In one process, within a time budget, on the GPU (or with --device cpu --tiny, the CI dry run):
  1. the CUDA tests and the precision tests (pytest, a subprocess);
  2. training throughput (target tokens/s, EOS included, through the trainer's own batch
     prefetching and update) of the peer protocol model and the default recipe, at 64, 256 and
     1,024 sentences a batch, in fp32 with TF32 off and on, bf16 and fp16, with peak memory;
  3. host syncs and kernel launches per update from the CUDA profiler, the host's cost of one
     kernel launch, and from both the launch-bound ceiling of training at batch 64;
  4. the default recipe trained for the same updates in fp32 and in bf16 (`seq2seq train`'s
     loop), then test-set BLEU of each decoded on the GPU, and of the fp32 model decoded on the
     CPU against the GPU's own output;
  5. greedy and beam-5 decoding speed (sentences/s) at 64 and 512 sentences a batch.
Writes only OUT/gpu_check.json (rewritten after every phase, so a timeout keeps what was
measured), OUT/gpu_check.md and OUT/gpu_check.log; runs and scratch files go to a temporary
folder that is removed at the end. Needs only torch, sentencepiece, sacrebleu, pyyaml, tqdm and
numpy, and the project on PYTHONPATH (not installed).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.data import epoch_batches, iterate_batches, read_lines  # noqa: E402
from seq2seq.data.batches import Prefetcher  # noqa: E402
from seq2seq.metrics import score_all  # noqa: E402
from seq2seq.model.precision import grad_scaler  # noqa: E402
from seq2seq.profiling import count_ops, cuda_waits  # noqa: E402
from seq2seq.training.begin import begin, load_run_config  # noqa: E402
from seq2seq.training.loop import train  # noqa: E402
from seq2seq.decoding.translator import Translator  # noqa: E402
from seq2seq.training.update import update  # noqa: E402

log = logging.getLogger("gpu_check")

MODELS = {"peer": "configs/bench_peer_lstm.yaml", "recipe": "configs/multi30k_en_de.yaml"}
MODES = {"fp32": ("fp32", False), "fp32_tf32": ("fp32", True), "bf16": ("bf16", False), "fp16": ("fp16", False)}
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


class Check:
    """The results so far and the time left; `save` rewrites OUT/gpu_check.json."""

    def __init__(self, out: Path, budget: float):
        self.out, self.deadline, self.start = out, time.monotonic() + budget, time.monotonic()
        self.result: dict = {"phases": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.result["seconds"] = round(time.monotonic() - self.start, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.result, indent=1, default=str) + "\n")

    def phase(self, name: str, needs: float, run) -> None:
        """Run phase `name` if `needs` seconds are left, recording its result, error or skip."""
        if self.left() < needs:
            self.result["phases"][name] = {"skipped": f"out of time ({self.left():.0f} s left, needs {needs:.0f})"}
        else:
            began = time.monotonic()
            try:
                self.result["phases"][name] = run()
            except Exception as e:  # one failing phase must not lose the others' figures
                log.exception("phase %s failed", name)
                self.result["phases"][name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            log.info("phase %s: %.1f s", name, time.monotonic() - began)
        self.save()


def config_for(model: str, args, overrides: list[str] = ()):
    data = args.data
    sets = [f"data.train={data}/train", f"data.valid={data}/val", f"data.test={data}/test_2016_flickr",
            f"training.device={args.device}", "training.num_threads=null", *args.set, *overrides]
    return load_run_config(ROOT / MODELS[model], sets)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def tf32_state() -> dict:
    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}


# ---------------------------------------------------------------------------------------
# The phases


def run_tests(args) -> dict:
    tests = ["tests/test_cuda.py"] if args.tiny else ["tests/test_cuda.py", "tests/test_precision.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.test_timeout)
    log.info("pytest %s (exit %d):\n%s", " ".join(tests), done.returncode, done.stdout[-6000:] + done.stderr[-2000:])
    lines = done.stdout.strip().splitlines()
    return {"exit": done.returncode, "summary": lines[-1] if lines else "", "tests": tests}


def throughput(model: str, args, scratch: Path) -> dict:
    """Target tokens/s of the updates of `model` in every mode and batch size."""
    figures = {}
    device = torch.device(args.device)
    s = begin(config_for(model, args), scratch / f"speed_{model}", quiet=True)
    t = s.cfg.training
    for mode, (precision, tf32) in MODES.items():
        if device.type != "cuda" and precision == "fp16":
            continue  # fp16 with loss scaling is a GPU mode
        set_tf32(tf32)
        scaler = grad_scaler(precision, device)
        for size in args.batch_sizes:
            plan = epoch_batches(s.train_data, batch_tokens=None, batch_size=size, seed=1, epoch=1)
            count = min(len(plan), args.warmup + args.timed)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            tokens, began = 0, None
            with Prefetcher(iterate_batches(s.train_data, [plan[k] for k in range(count)]),
                            pin=device.type == "cuda") as stream:
                for n, batch in enumerate(stream):
                    if n == min(args.warmup, count - 1):
                        sync(device)
                        tokens, began = 0, time.perf_counter()
                    update(s.train_model, s.optimizer, [batch.to(device)], clip_norm=t.clip_norm,
                           label_smoothing=t.label_smoothing, loss_normalization=t.loss_normalization,
                           precision=precision, scaler=scaler)
                    tokens += batch.num_tgt_tokens
            sync(device)
            seconds = time.perf_counter() - began
            figures[f"{mode}/{size}"] = {
                "tgt_tok_s": round(tokens / seconds), "updates": count - min(args.warmup, count - 1),
                "peak_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20) if device.type == "cuda" else None,
                "tf32": tf32_state() if device.type == "cuda" else None}
            log.info("%s %s batch %d: %s", model, mode, size, figures[f"{mode}/{size}"])
    set_tf32(False)
    return figures


def launch_cost(device: torch.device, launches: int = 3000) -> float | None:
    """The host's seconds per kernel launch of a small torch operator (what bounds a step loop)."""
    if device.type != "cuda":
        return None
    x = torch.zeros(1, device=device)
    for _ in range(100):
        x.add_(1.0)
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(launches):
        x.add_(1.0)
    torch.cuda.synchronize()
    return (time.perf_counter() - began) / launches


def profile_updates(args, scratch: Path, speeds: dict) -> dict:
    """Syncs and kernel launches per update (CUDA profiler), operator calls and syncs per update
    (seq2seq.profiling), and the launch-bound ceiling of the peer model at the smallest batch."""
    from torch.profiler import ProfilerActivity, profile
    device = torch.device(args.device)
    s = begin(config_for("peer", args), scratch / "profile_peer", quiet=True)
    t = s.cfg.training
    size = args.batch_sizes[0]
    plan = epoch_batches(s.train_data, batch_tokens=None, batch_size=size, seed=1, epoch=1)
    batches = [b.to(device) for b in iterate_batches(s.train_data, [plan[k] for k in range(min(len(plan), 6))])]
    result = {}
    for mode in ("fp32_tf32", "bf16") if device.type == "cuda" else ("fp32",):
        precision, tf32 = MODES[mode]
        set_tf32(tf32)

        def step(batch):
            update(s.train_model, s.optimizer, [batch], clip_norm=t.clip_norm, label_smoothing=t.label_smoothing,
                   loss_normalization=t.loss_normalization, precision=precision)
        for batch in batches[:2]:
            step(batch)
        sync(device)
        timed = batches[2:5]
        with count_ops() as counts:
            for batch in timed:
                step(batch)
        entry = {"operator_calls_per_update": counts.ops / len(timed), "syncs_per_update": counts.syncs / len(timed),
                 "sync_sites": dict(counts.sites)}
        if device.type == "cuda":
            sync(device)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for batch in timed:
                    step(batch)
                sync(device)
            names = [e.name for e in prof.events()]
            # The profiler synchronises once itself as its window closes (and so do we, above):
            # the waits are counted by torch's sync debug mode instead.
            syncs = cuda_waits(lambda: [step(batch) for batch in timed])
            launches = sum(names.count(n) for n in LAUNCH_CALLS)
            per_launch = launch_cost(device)
            tokens = sum(b.num_tgt_tokens for b in timed) / len(timed)
            ceiling = tokens / (launches / len(timed) * per_launch)  # tok/s if launching were all it cost
            measured = speeds.get("peer", {}).get(f"{mode}/{size}", {}).get("tgt_tok_s")
            entry.update({"cuda_syncs_per_update": syncs / len(timed), "kernel_launches_per_update": launches / len(timed),
                          "seconds_per_launch": per_launch, "launch_bound_tok_s": round(ceiling),
                          "measured_tok_s": measured,
                          "ceiling_over_measured": round(ceiling / measured, 2) if measured else None})
        result[mode] = entry
        log.info("profile %s: %s", mode, {k: v for k, v in entry.items() if k != "sync_sites"})
    set_tf32(False)
    return result


def quality(args, scratch: Path) -> dict:
    """The default recipe trained for the same updates in fp32 and bf16; test BLEU on the GPU,
    and the fp32 model's on the CPU against the GPU's own output."""
    data = args.data
    sources = read_lines(f"{data}/test_2016_flickr.en")[0][:args.test_sentences]
    refs = read_lines(f"{data}/test_2016_flickr.de")[0][:args.test_sentences]
    result = {"updates": args.quality_updates, "sentences": len(sources)}
    runs = {}
    for precision in ("fp32", "bf16"):
        run = scratch / f"quality_{precision}"
        cfg = config_for("recipe", args, [f"training.precision={precision}", f"decoding.precision={precision}",
                                          f"training.max_steps={args.quality_updates}", "training.max_minutes=null",
                                          "training.valid_at_epoch_end=false", "training.keep_best=0"])
        began = time.perf_counter()
        train(cfg, run, quiet=True)
        runs[precision] = run
        on_device = Translator.load(run, device=args.device).translate(sources, beam_size=1, batch_size=64)
        result[precision] = {"train_seconds": round(time.perf_counter() - began, 1),
                             "bleu_greedy": round(score_all(on_device, refs)["bleu"], 2)}
        if precision == "fp32":
            gpu_fp32 = on_device
    result["bf16_minus_fp32_bleu"] = round(result["bf16"]["bleu_greedy"] - result["fp32"]["bleu_greedy"], 2)
    on_cpu = Translator.load(runs["fp32"], device="cpu").translate(sources, beam_size=1, batch_size=64)
    result["fp32_on_cpu"] = {"bleu_greedy": round(score_all(on_cpu, refs)["bleu"], 2),
                             "bleu_against_device_output": round(score_all(on_cpu, gpu_fp32)["bleu"], 2),
                             "identical_lines": sum(a == b for a, b in zip(on_cpu, gpu_fp32)) / len(sources)}
    result["run"] = str(runs["fp32"])
    return result


def decoding_speed(args, run: Path) -> dict:
    sources = read_lines(f"{args.data}/test_2016_flickr.en")[0][:args.test_sentences]
    figures = {}
    for precision in ("fp32", "bf16"):
        translator = Translator.load(run, device=args.device, precision=precision)
        for beam in (1, 5):
            for size in args.decode_batch_sizes:
                translator.translate(sources[:size], beam_size=beam, batch_size=size)  # warm-up
                sync(torch.device(args.device))
                began = time.perf_counter()
                translator.translate(sources, beam_size=beam, batch_size=size)
                sync(torch.device(args.device))
                figures[f"{precision}/beam{beam}/{size}"] = round(len(sources) / (time.perf_counter() - began), 1)
                log.info("decoding %s beam %d batch %d: %s sentences/s", precision, beam, size,
                         figures[f"{precision}/beam{beam}/{size}"])
    return figures


# ---------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    env, phases = result.get("environment", {}), result["phases"]
    lines = [f"# GPU check ({result.get('seconds', 0):.0f} s)", "",
             f"{env.get('gpu', '?')}; torch {env.get('torch', '?')} (CUDA {env.get('cuda', '?')})", ""]
    tests = phases.get("tests", {})
    lines += [f"tests: {tests.get('summary') or tests}", ""]
    for model in MODELS:
        speed = phases.get(f"throughput_{model}", {})
        lines += [f"## Training, {model} ({MODELS[model]}): target tok/s (peak MB)", "",
                  "| mode | " + " | ".join(f"batch {b}" for b in result["batch_sizes"]) + " |",
                  "|---" * (len(result["batch_sizes"]) + 1) + "|"]
        for mode in MODES:
            cells = []
            for b in result["batch_sizes"]:
                f = speed.get(f"{mode}/{b}") if isinstance(speed, dict) else None
                cells.append(f"{f['tgt_tok_s']:,} ({f['peak_mb']})" if f else "")
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        if not any(k.count("/") for k in speed):
            lines.append(f"\n{speed}")
        lines.append("")
    prof = phases.get("profile", {})
    lines += ["## Per update (peer model, smallest batch)", "", "```", json.dumps(
        {m: {k: v for k, v in e.items() if k != "sync_sites"} for m, e in prof.items()} if isinstance(prof, dict)
        and "error" not in prof and "skipped" not in prof else prof, indent=1), "```", ""]
    for name in ("quality", "decoding"):
        lines += [f"## {name.capitalize()}", "", "```", json.dumps(phases.get(name), indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_check_out")
    ap.add_argument("--data", default=str(ROOT / "data" / "multi30k"),
                    help="Multi30k folder (train/val/test_2016_flickr .en/.de), inside the repository: see docs/gpu.md")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=450, help="seconds for everything")
    ap.add_argument("--tiny", action="store_true", help="the CI dry run: tiny sizes (with --device cpu)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    args = ap.parse_args()
    if args.tiny:
        args.batch_sizes, args.decode_batch_sizes = [4, 8], [4, 8]
        args.warmup, args.timed, args.quality_updates, args.test_sentences, args.test_timeout = 1, 2, 6, 12, 120
        args.set = ["tokenizer.vocab_size=60", "model.encoder.emb_size=8", "model.encoder.hidden_size=8",
                    "model.decoder.emb_size=8", "model.decoder.hidden_size=16", "tokenizer.drop_unseen=false",
                    *args.set]
    else:
        args.batch_sizes, args.decode_batch_sizes = [64, 256, 1024], [64, 512]
        args.warmup, args.timed, args.quality_updates, args.test_sentences, args.test_timeout = 5, 20, 600, 1000, 150
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("gpu_check.json", "gpu_check.md", "gpu_check.log"):
        (args.out / name).unlink(missing_ok=True)
    handler = logging.FileHandler(args.out / "gpu_check.log")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        handlers=[handler, logging.StreamHandler()])
    check = Check(args.out, args.budget)
    device = torch.device(args.device)
    check.result.update({"batch_sizes": args.batch_sizes, "tiny": args.tiny, "environment": {
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "none (CPU dry run)",
        "bf16_supported": torch.cuda.is_bf16_supported() if device.type == "cuda" else None,
        "tf32_default": tf32_state()}})
    if not Path(f"{args.data}/train.en").exists():
        check.result["error"] = f"no Multi30k at {args.data}: see docs/gpu.md (copy it into data/multi30k)"
        check.save()
        log.error(check.result["error"])
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        check.phase("tests", 60 if not args.tiny else 10, lambda: run_tests(args))
        speeds = {}
        for model in MODELS:
            check.phase(f"throughput_{model}", 60 if not args.tiny else 5,
                        lambda model=model: speeds.setdefault(model, throughput(model, args, scratch)))
        check.phase("profile", 20 if not args.tiny else 5, lambda: profile_updates(args, scratch, speeds))
        check.phase("quality", 150 if not args.tiny else 5, lambda: quality(args, scratch))
        run = check.result["phases"]["quality"].get("run")
        if run:
            check.phase("decoding", 30 if not args.tiny else 5, lambda: decoding_speed(args, Path(run)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        check.save()
        (args.out / "gpu_check.md").write_text(markdown(check.result) + "\n")
        handler.close()
    print((args.out / "gpu_check.md").read_text())
    failed = [n for n, p in check.result["phases"].items() if isinstance(p, dict) and "error" in p]
    return 1 if failed or check.result["phases"].get("tests", {}).get("exit") not in (0, None) else 0


if __name__ == "__main__":
    sys.exit(main())
