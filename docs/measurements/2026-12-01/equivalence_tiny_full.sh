#!/bin/bash
# The same byte-identity check on a model trained for longer (configs/tiny.yaml, its 2.5 minutes), by the old code.
set -e
M=/work/shared/data/multi30k
SETS="--set data.train=$M/train --set data.valid=$M/val --set data.test=$M/test_2016_flickr"
rm -rf /tmp/eq/tiny_full
(cd /tmp/before && PYTHONPATH=/tmp/before python -m seq2seq train --config configs/tiny.yaml --run-dir /tmp/eq/tiny_full $SETS --quiet)
for beam in 1 5; do
  (cd /tmp/before && PYTHONPATH=/tmp/before python -m seq2seq translate --model /tmp/eq/tiny_full --input $M/test_2016_flickr.en --output /tmp/eq/full_old.beam$beam --beam-size $beam --device cpu --quiet)
  (cd /work/main && python -m seq2seq translate --model /tmp/eq/tiny_full --input $M/test_2016_flickr.en --output /tmp/eq/full_new.beam$beam --beam-size $beam --device cpu --quiet)
  cmp /tmp/eq/full_old.beam$beam /tmp/eq/full_new.beam$beam && echo "beam $beam: byte-identical ($(wc -l < /tmp/eq/full_new.beam$beam) lines, sha256 $(sha256sum < /tmp/eq/full_new.beam$beam | cut -c1-16))"
  (cd /work/main && python -m seq2seq evaluate --hyp /tmp/eq/full_new.beam$beam --ref $M/test_2016_flickr.de | head -1)
done
