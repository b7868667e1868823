#!/usr/bin/env bash
# What distillation gives at the smallest scale (about 6 minutes on 2 CPU cores): the tiny
# teacher (configs/tiny.yaml, already trained) distills all of Multi30k's train.en with beam 5,
# a student with the same tiny config trains on that for the same 4 epochs, and both translate
# test_2016_flickr with beam 5. One seed, one run each: a check of the path, not a result.
# Usage, from the checkout's root:
#   docs/measurements/2026-12-08/distillation/tiny_student.sh TEACHER_RUN_DIR MULTI30K_DIR WORK_DIR
set -euo pipefail
teacher=$1 data=$2 work=$3
mkdir -p "$work"
python3 - "$work" "$data" <<'PY'
import sys, yaml
work, data = sys.argv[1:]
raw = yaml.safe_load(open("configs/tiny.yaml"))
raw["data"].update(train=f"{data}/train", valid=f"{data}/val", test=f"{data}/test_2016_flickr")
open(f"{work}/tiny_student.yaml", "w").write(yaml.safe_dump(raw))
PY
echo "== machine"; lscpu | grep -E "Model name|^CPU\(s\)"; uptime
rm -rf "$work/distilled" "$work/student"
echo "== distill all of train.en (29,000 lines), beam 5, 2 threads"
/usr/bin/time -f "wall %e s, peak RSS %M KB" seq2seq distill --model "$teacher" --config "$work/tiny_student.yaml" \
  --out "$work/distilled" --beam-size 5 --device cpu 2>&1 | grep -v WARNING
uptime
echo "== train the student on it (configs/tiny.yaml's budget)"
/usr/bin/time -f "wall %e s" seq2seq train "$work/distilled/config.yaml" --run-dir "$work/student" --quiet
tail -n 2 "$work/student/train.log"
uptime
for run in "$teacher" "$work/student"; do
  echo "== $run: test_2016_flickr, beam 5"
  seq2seq translate --model "$run" --input "$data/test_2016_flickr.en" --output "$work/$(basename "$run").test.de" \
    --beam-size 5 --device cpu --quiet 2>/dev/null
  seq2seq evaluate --hyp "$work/$(basename "$run").test.de" --ref "$data/test_2016_flickr.de" | head -n 3
done
echo "== teacher's training log, last lines"
tail -n 2 "$teacher/train.log"
