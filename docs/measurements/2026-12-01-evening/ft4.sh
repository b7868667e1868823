#!/bin/bash
set -x
cd /work/main
export OMP_NUM_THREADS=1
while kill -0 30026 2>/dev/null; do sleep 10; done
P=/work/exp/ende_s1
E="python experiments/finetune_experiment.py $P --steps 800 --set training.num_threads=1"
$E --sizes 2000 --modes keep_source spelled_warmup scratch --seeds 1 --warmup-steps 100 --converge --patience 5 --cap-steps 2000 --out /work/exp/ft2000
echo ALLDONE
