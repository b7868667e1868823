#!/bin/bash
# Before/after equivalence: the same seeded 200-update training with the old (HEAD) and new code,
# then the same checkpoint decoded by both.
set -e
M=/work/shared/data/multi30k
SETS="--set data.train=$M/train --set data.valid=$M/val --set data.test=$M/test_2016_flickr --set training.max_steps=200 --set training.log_every=1 --set training.max_minutes=null"
rm -rf /tmp/eq/before /tmp/eq/after
(cd /tmp/before && PYTHONPATH=/tmp/before python -m seq2seq train --config configs/tiny.yaml --run-dir /tmp/eq/before $SETS --quiet)
(cd /work/main && python -m seq2seq train --config configs/tiny.yaml --run-dir /tmp/eq/after $SETS --quiet)
for beam in 1 5; do
  (cd /tmp/before && PYTHONPATH=/tmp/before python -m seq2seq translate --model /tmp/eq/before --input $M/test_2016_flickr.en --output /tmp/eq/old.beam$beam --beam-size $beam --device cpu --quiet)
  (cd /work/main && python -m seq2seq translate --model /tmp/eq/before --input $M/test_2016_flickr.en --output /tmp/eq/new.beam$beam --beam-size $beam --device cpu --quiet)
  cmp /tmp/eq/old.beam$beam /tmp/eq/new.beam$beam && echo "beam $beam: byte-identical ($(wc -l < /tmp/eq/new.beam$beam) lines, sha256 $(sha256sum < /tmp/eq/new.beam$beam | cut -c1-16))"
done
python - <<'PY'
import re, torch
from pathlib import Path
def losses(d):
    return re.findall(r"step (\d+) epoch \d+: loss ([0-9.]+)", Path(d, "train.log").read_text())
a, b = losses("/tmp/eq/before"), losses("/tmp/eq/after")
print(f"logged losses: {len(a)} before, {len(b)} after, identical: {a == b}; first {a[0]}, last {a[-1]}")
wa = torch.load("/tmp/eq/before/last.pt", weights_only=True)["model"]
wb = torch.load("/tmp/eq/after/last.pt", weights_only=True)["model"]
print("final weights bitwise equal:", wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa))
PY
