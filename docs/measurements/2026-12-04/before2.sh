#!/bin/bash
# Baseline 2 with the old code: configs/tiny.yaml trained fully (a model that translates), decoded
# greedy, beam 5, and int8 beam 5; plus int8 decoding of the 200-update model; an LSTM 200-update run.
set -e
M=/work/shared/data/multi30k
D="--set data.train=$M/train --set data.valid=$M/val --set data.test=$M/test_2016_flickr"
cd /work/before
export PYTHONPATH=/work/before
python -m seq2seq translate --model /work/eq/before --input $M/test_2016_flickr.en --output /work/eq/old.int8.beam5 --beam-size 5 --device cpu --quiet --quantize int8
python -m seq2seq train --config configs/tiny.yaml --run-dir /work/eq/lstm_before $D --set training.max_steps=200 --set training.max_minutes=null --set model.encoder.cell=lstm --set model.decoder.cell=lstm --set training.log_every=1 --quiet
for beam in 1 5; do
  python -m seq2seq translate --model /work/eq/lstm_before --input $M/test_2016_flickr.en --output /work/eq/old.lstm.beam$beam --beam-size $beam --device cpu --quiet
done
python -m seq2seq train --config configs/tiny.yaml --run-dir /work/eq/tiny_before $D --quiet
for beam in 1 5; do
  python -m seq2seq translate --model /work/eq/tiny_before --input $M/test_2016_flickr.en --output /work/eq/old.tiny.beam$beam --beam-size $beam --device cpu --quiet
done
python -m seq2seq translate --model /work/eq/tiny_before --input $M/test_2016_flickr.en --output /work/eq/old.tiny.int8.beam5 --beam-size 5 --device cpu --quiet --quantize int8
echo BASELINE2 DONE
