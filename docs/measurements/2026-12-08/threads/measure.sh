#!/usr/bin/env bash
# Training speed of configs/tiny.yaml on Multi30k with training.num_threads null (the default:
# idle cores at the start), 1 and 2, on the idle machine and with one core held by another
# process (a busy loop). Each run trains for 30 seconds of training time.
#   measure.sh OUT [DATA]      (DATA: a Multi30k folder; default: ../shared/data/multi30k)
set -euo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
data=$(cd "${2:-$(dirname "$0")/../../../../../shared/data/multi30k}" && pwd)
root=$(cd "$(dirname "$0")/../../../.." && pwd)
cd "$root"
# One tokenizer and store for all runs, so that every run measures training only.
seq2seq prepare --config configs/tiny.yaml --run-dir "$out/base" --quiet \
  --set data.train="$data/train" --set data.valid="$data/val" --set data.test=null
run() {  # NAME THREADS
  rm -rf "$out/$1"; mkdir -p "$out/$1"
  cp "$out/base"/spm.* "$out/$1"/; cp -r "$out/base/prepared" "$out/$1"/
  local threads=(); [ "$2" = null ] || threads=(--set training.num_threads="$2")
  seq2seq train configs/tiny.yaml --run-dir "$out/$1" --quiet "${threads[@]}" \
    --set data.train="$data/train" --set data.valid="$data/val" --set data.test=null \
    --set training.max_minutes=0.5 --set training.max_steps=null --set training.log_every=2 \
    --set training.valid_every=100000 --set training.valid_at_epoch_end=false || true
  python3 - "$out/$1" "$1" <<'PY'
import json, statistics, sys
from pathlib import Path
run = Path(sys.argv[1])
rates = [json.loads(l)["tokens_per_second"] for l in (run / "train.jsonl").read_text().splitlines()][1:]
log = (run / "train.log").read_text()
threads = next(l.split("INFO ")[1] for l in log.splitlines() if "CPU thread(s)" in l)
warned = "got" in log and "cores between the last two log lines" in log
print(json.dumps({"run": sys.argv[2], "threads": threads, "windows": len(rates),
                  "median_target_tok_s": round(statistics.median(rates)) if rates else None, "warned": warned}))
PY
}
for t in null 1 2; do run "idle_$t" "$t"; done | tee "$out/idle.jsonl"
python3 -c "while True: pass" & spin=$!
trap 'kill $spin 2>/dev/null' EXIT
sleep 2
for t in null 1 2; do run "busy_$t" "$t"; done | tee "$out/busy.jsonl"
