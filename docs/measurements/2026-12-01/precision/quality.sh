#!/bin/bash
# The default recipe trained for the same number of updates in float32 and in bf16, one after the
# other, each decoded (test_2016_flickr, beam 5) in its own precision. STEPS defaults to 1500.
set -e
M=/work/shared/data/multi30k; W=${W:-/tmp/quality}; STEPS=${STEPS:-1500}
for p in fp32 bf16; do
  rm -rf $W/$p
  python -m seq2seq train --config configs/multi30k_en_de.yaml --run-dir $W/$p --quiet \
    --set data.train=$M/train --set data.valid=$M/val --set data.test=$M/test_2016_flickr \
    --set training.max_steps=$STEPS --set training.max_minutes=null --set training.valid_every=500 \
    --set training.valid_at_epoch_end=false --set training.precision=$p --set decoding.precision=$p
  python -c "
import json; r=[json.loads(l) for l in open('$W/$p/metrics.jsonl')]; print('$p', 'training minutes', r[-1]['elapsed']/60, 'valid BLEU', [round(x['bleu'],2) for x in r])"
  python -m seq2seq translate --model $W/$p --input $M/test_2016_flickr.en --output $W/$p/test.beam5 --beam-size 5 --device cpu --quiet
  python -m seq2seq evaluate --hyp $W/$p/test.beam5 --ref $M/test_2016_flickr.de | head -3
done
