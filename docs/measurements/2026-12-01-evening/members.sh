#!/bin/bash
set -x
cd /work/main
export OMP_NUM_THREADS=1
D=/work/shared/data/multi30k
for s in 2 3; do
  python -m seq2seq train --config configs/multi30k_en_de.yaml --run-dir /work/exp/ende_s$s --set training.seed=$s --set training.max_steps=6000 --set training.num_threads=1 --set data.train=$D/train --set data.valid=$D/val --set data.test=$D/test_2016_flickr --quiet
done
echo ALLDONE
