#!/usr/bin/env bash
# The distillation figures of docs/distillation.md at small scale (a few minutes on 2 CPU cores):
# beam-5 distillation speed of a tiny Multi30k teacher over the first 2,000 lines of train.en,
# with 1 and 2 threads; a kill and resume on those lines, checked against the uninterrupted run
# and against `seq2seq translate`. Usage, from the checkout's root:
#   docs/measurements/2026-12-08/distillation/measure.sh TEACHER_RUN_DIR MULTI30K_DIR WORK_DIR
set -euo pipefail
teacher=$1 data=$2 work=$3
lines=2000
mkdir -p "$work/data"
head -n $lines "$data/train.en" > "$work/data/head.en"
head -n $lines "$data/train.de" > "$work/data/head.de"
# The small student's config, reading the 2,000-line head and Multi30k's validation set.
python3 - "$work" "$data" <<'PY'
import sys, yaml
work, data = sys.argv[1:]
raw = yaml.safe_load(open("configs/multi30k_en_de_student_small.yaml"))
raw["data"].update(train=f"{work}/data/head", valid=f"{data}/val", test=f"{data}/test_2016_flickr")
open(f"{work}/student.yaml", "w").write(yaml.safe_dump(raw))
PY
echo "== machine"; lscpu | grep -E "Model name|^CPU\(s\)"; uptime
for threads in 1 2; do
  rm -rf "$work/out$threads"
  echo "== distill, beam 5, $threads thread(s)"
  OMP_NUM_THREADS=$threads /usr/bin/time -f "wall %e s, peak RSS %M KB" seq2seq distill --model "$teacher" \
    --config "$work/student.yaml" --out "$work/out$threads" --beam-size 5 --device cpu 2>&1 | grep -v WARNING
  uptime
done
echo "== translate the same lines, beam 5, 2 threads"
/usr/bin/time -f "wall %e s" seq2seq translate --model "$teacher" --input "$work/data/head.en" \
  --output "$work/translated.de" --beam-size 5 --device cpu --quiet 2>&1 | grep -v WARNING
cmp "$work/translated.de" "$work/out2/head.de" && echo "distilled == translate: $(wc -l < "$work/out2/head.de") lines"
echo "== kill after the first chunks, then resume"
rm -rf "$work/killed"
seq2seq distill --model "$teacher" --config "$work/student.yaml" --out "$work/killed" --beam-size 5 --device cpu \
  --quiet 2>/dev/null & pid=$!
until [ -f "$work/killed/distill.json" ] && python3 -c "import json,sys; sys.exit(json.load(open('$work/killed/distill.json'))['corpora'][0]['lines'] < 512)"; do
  sleep 0.1
done
kill -KILL $pid; wait $pid || true
echo "killed with $(python3 -c "import json; print(json.load(open('$work/killed/distill.json'))['corpora'][0]['lines'])") lines recorded, $(wc -l < "$work/killed/head.de") lines in head.de"
seq2seq distill --model "$teacher" --config "$work/student.yaml" --out "$work/killed" --beam-size 5 --device cpu 2>&1 | grep -v WARNING
cmp "$work/killed/head.de" "$work/out2/head.de" && cmp "$work/killed/head.en" "$work/data/head.en" \
  && echo "resumed == uninterrupted: $(wc -l < "$work/killed/head.de") lines"
