#!/bin/bash
set -x
cd /work/main
export OMP_NUM_THREADS=1
P=/work/exp/ende_s1
E="python experiments/finetune_experiment.py $P --steps 800 --set training.num_threads=1 --warmup-steps 100 --modes keep_source spelled_warmup scratch --converge --patience 5 --cap-steps 2000"
$E --sizes 2000 --seeds 2 3 --out /work/exp/ft2000
$E --sizes 5000 --seeds 3 --out /work/exp/ft5000b
echo ALLDONE
