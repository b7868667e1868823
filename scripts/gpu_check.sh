#!/usr/bin/env bash
# The one-shot GPU check: on a machine with one CUDA GPU, in well under 8 minutes,
#   1. the tests marked cuda (placement, training in fp32/bf16/fp16, a GPU checkpoint decoded on
#      the CPU, GPU search equal to CPU search, DDP over NCCL in one process) and the precision tests;
#   2. scripts/benchmark.py on configs/multi30k_en_de.yaml, 300 updates in float32 and in bf16:
#      training tok/s, peak max_memory_allocated, and greedy and beam-5 decoding speed and BLEU;
# and writes OUT/gpu_check.json and OUT/gpu_check.md.
#
#   bash scripts/gpu_check.sh [OUT] [MULTI30K_DIR]     (defaults: gpu_check_out, ../shared/data/multi30k)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
DATA=${2:-../shared/data/multi30k}
mkdir -p "$OUT"
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
    > "$OUT/torch.txt" 2>&1
python3 -m pytest -m cuda -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_precision.py \
    > "$OUT/pytest_cuda.txt" 2>&1
echo $? > "$OUT/pytest_cuda.rc"
for p in fp32 bf16; do
    python3 scripts/benchmark.py --config configs/multi30k_en_de.yaml --data "$DATA" --device cuda \
        --steps 300 --warmup 30 --set training.precision=$p --set decoding.precision=$p \
        --out "$OUT/bench_$p" > "$OUT/bench_$p.log" 2>&1
    echo $? > "$OUT/bench_$p.rc"
done
python3 - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
from pathlib import Path
out, seconds = Path(sys.argv[1]), int(sys.argv[2])
result = {"seconds": seconds, "gpu": (out / "nvidia-smi.csv").read_text().strip().splitlines()[-1],
          "torch": (out / "torch.txt").read_text().strip(),
          "pytest_cuda_rc": int((out / "pytest_cuda.rc").read_text()),
          "pytest_cuda": (out / "pytest_cuda.txt").read_text().strip().splitlines()[-1:], "bench": {}}
rows = ["| precision | train tgt tok/s | peak CUDA MB | greedy sent/s, BLEU | beam 5 sent/s, BLEU |", "|---|---|---|---|---|"]
for p in ("fp32", "bf16"):
    f = out / f"bench_{p}" / "RESULT.json"
    if not f.exists():
        result["bench"][p] = None
        rows.append(f"| {p} | failed (see bench_{p}.log) | | | |")
        continue
    r = json.loads(f.read_text())
    tr, dec = r["training"], {d["beam"]: d for d in r["decoding"]}
    result["bench"][p] = {"tgt_tok_s": tr["tgt_tok_s_incl_eos"], "peak_cuda_mb": tr.get("train_peak_cuda_allocated_mb"),
                          "decoding": {b: {"sent_s": d["sent_s"], "bleu": d["bleu"]} for b, d in dec.items()}}
    rows.append(f"| {p} | {tr['tgt_tok_s_incl_eos']:,.0f} | {tr.get('train_peak_cuda_allocated_mb', 0):,.0f} | "
                f"{dec[1]['sent_s']:.1f}, {dec[1]['bleu']:.2f} | {dec[5]['sent_s']:.1f}, {dec[5]['bleu']:.2f} |")
(out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
md = [f"# GPU check ({seconds} s)", "", f"GPU: {result['gpu']}; torch {result['torch']}", "",
      f"pytest -m cuda: exit {result['pytest_cuda_rc']}: {' '.join(result['pytest_cuda'])}", "", *rows]
(out / "gpu_check.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
