#!/bin/bash
# The same as before.sh/before2.sh with today's code (/work/main): seeded 200-update trainings
# (GRU recipe of tiny.yaml and its LSTM variant) must end with bitwise-equal weights, and the
# old code's checkpoints must decode byte-identically (greedy, beam 5, int8 beam 5).
M=/work/shared/data/multi30k
D="--set data.train=$M/train --set data.valid=$M/val --set data.test=$M/test_2016_flickr"
SETS="$D --set training.max_steps=200 --set training.log_every=1 --set training.max_minutes=null"
cd /work/main
rm -rf /work/eq/after /work/eq/lstm_after
python -m seq2seq train --config configs/tiny.yaml --run-dir /work/eq/after $SETS --quiet
python -m seq2seq train --config configs/tiny.yaml --run-dir /work/eq/lstm_after $SETS --set model.encoder.cell=lstm --set model.decoder.cell=lstm --quiet
t() { python -m seq2seq translate --input $M/test_2016_flickr.en --device cpu --quiet "$@"; }
for beam in 1 5; do
  t --model /work/eq/before --output /work/eq/new.beam$beam --beam-size $beam
  t --model /work/eq/lstm_before --output /work/eq/new.lstm.beam$beam --beam-size $beam
  t --model /work/eq/tiny_before --output /work/eq/new.tiny.beam$beam --beam-size $beam
done
t --model /work/eq/before --output /work/eq/new.int8.beam5 --beam-size 5 --quantize int8
t --model /work/eq/tiny_before --output /work/eq/new.tiny.int8.beam5 --beam-size 5 --quantize int8
for f in beam1 beam5 int8.beam5 lstm.beam1 lstm.beam5 tiny.beam1 tiny.beam5 tiny.int8.beam5; do
  if cmp -s /work/eq/old.$f /work/eq/new.$f; then echo "$f: byte-identical ($(wc -l < /work/eq/new.$f) lines, sha256 $(sha256sum < /work/eq/new.$f | cut -c1-16))"; else echo "$f: DIFFERS"; fi
done
python - <<'PY'
import json, torch
from pathlib import Path
def losses(d):
    return [(r["step"], r["loss"]) for r in map(json.loads, Path(d, "train.jsonl").read_text().splitlines())]
for before, after in (("before", "after"), ("lstm_before", "lstm_after")):
    a, b = losses(f"/work/eq/{before}"), losses(f"/work/eq/{after}")
    wa = torch.load(f"/work/eq/{before}/last.pt", weights_only=True)["model"]
    wb = torch.load(f"/work/eq/{after}/last.pt", weights_only=True)["model"]
    same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    print(f"{after}: {len(a)} logged losses before, {len(b)} after, identical: {a == b}; last {a[-1]}; "
          f"final weights bitwise equal: {same}")
PY
