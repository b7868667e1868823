#!/bin/bash
# resume.sh NAME STEPS: continue a run of run.sh to STEPS updates
NAME=$1; STEPS=$2; CODE=${CODE:-/work/main}
cd $CODE && PYTHONPATH=$CODE python -m seq2seq train --run-dir /work/exp29/$NAME --resume --quiet \
  --set training.max_steps=$STEPS >> /work/exp29/$NAME.out 2>&1
echo "exit $?" >> /work/exp29/$NAME.out
