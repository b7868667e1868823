#!/bin/bash
# Baseline with the code at HEAD before #25 (in /work/before): seeded 200-update training, and
# decoding its checkpoint greedy and beam 5.
set -e
M=/work/shared/data/multi30k
SETS="--set data.train=$M/train --set data.valid=$M/val --set data.test=$M/test_2016_flickr --set training.max_steps=200 --set training.log_every=1 --set training.max_minutes=null"
rm -rf /work/eq/before
cd /work/before
PYTHONPATH=/work/before python -m seq2seq train --config configs/tiny.yaml --run-dir /work/eq/before $SETS --quiet
for beam in 1 5; do
  PYTHONPATH=/work/before python -m seq2seq translate --model /work/eq/before --input $M/test_2016_flickr.en --output /work/eq/old.beam$beam --beam-size $beam --device cpu --quiet
done
echo BASELINE DONE
