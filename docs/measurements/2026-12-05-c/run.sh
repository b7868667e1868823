#!/bin/bash
# run.sh NAME SEED STEPS [--set ...]: the default recipe (code in /work/main or $CODE), one thread
NAME=$1; SEED=$2; STEPS=$3; shift 3
CODE=${CODE:-/work/main}
D=/work/shared/data/multi30k
cd $CODE && PYTHONPATH=$CODE python -m seq2seq train configs/multi30k_en_de.yaml --run-dir /work/exp29/$NAME --quiet \
  --set data.train=$D/train --set data.valid=$D/val --set data.test=$D/test_2016_flickr \
  --set training.seed=$SEED --set training.num_threads=1 --set training.max_steps=$STEPS --set training.max_minutes=null "$@" \
  > /work/exp29/$NAME.out 2>&1
echo "exit $?" >> /work/exp29/$NAME.out
