#!/bin/bash
set -x
cd /work/main
export OMP_NUM_THREADS=1
while kill -0 17118 2>/dev/null; do sleep 10; done
P=/work/exp/ende_s1
E="python experiments/finetune_experiment.py $P --steps 800 --set training.num_threads=1 --warmup-steps 100"
$E --sizes 5000 --modes keep_source --seeds 1 --converge --patience 5 --cap-steps 4000 --out /work/exp/ft5000_long_keep_source
echo ALLDONE
