#!/bin/bash
# #29: the tied/EMA recipe trained by the README's command (seed 3, nothing else running), then
# test_2016_flickr once: the single model, and the ensemble with 2026-12-05's two C2 runs.
set -euo pipefail
RUNS=${RUNS:-/work/exp29}
OUT=${OUT:-$RUNS/readme_s3.results}
mkdir -p "$OUT"
lscpu | grep -E "Model name|Flags" > "$OUT/lscpu.txt"
/usr/bin/time -v seq2seq train --config configs/multi30k_en_de_tied_ema.yaml --run-dir "$RUNS/readme_s3" \
    --set training.seed=3 > "$OUT/train.out" 2> "$OUT/train.time"
seq2seq translate --model "$RUNS/readme_s3" --input data/multi30k/test_2016_flickr.en \
    --output "$OUT/s3.test.hyp.de" --beam-size 5 --device cpu
seq2seq evaluate --hyp "$OUT/s3.test.hyp.de" --ref data/multi30k/test_2016_flickr.de --lang de > "$OUT/s3.test.eval.txt"
/usr/bin/time -v seq2seq translate --model "$RUNS/c2_s1" --model "$RUNS/c2_s2" --model "$RUNS/readme_s3" \
    --input data/multi30k/test_2016_flickr.en --output "$OUT/ensemble.test.hyp.de" --beam-size 5 --device cpu \
    2> "$OUT/ensemble.time"
seq2seq evaluate --hyp "$OUT/ensemble.test.hyp.de" --ref data/multi30k/test_2016_flickr.de --lang de \
    > "$OUT/ensemble.test.eval.txt"
