#!/bin/bash
# #19 experiments, one run at a time, 1 thread (the other core trains ensemble members).
set -x
cd /work/main
export OMP_NUM_THREADS=1
P=/work/exp/ende_s1
E="python experiments/finetune_experiment.py $P --steps 800 --set training.num_threads=1"
$E --sizes 2000 --modes keep_source spelled_warmup scratch --seeds 1 2 3 --warmup-steps 100 --out /work/exp/ft2000
$E --sizes 2000 --modes spelled --seeds 1 --out /work/exp/ft2000
$E --sizes 2000 --modes spelled_warmup --seeds 1 --warmup-steps 300 --out /work/exp/ft2000_w300
$E --sizes 5000 --modes keep_source spelled_warmup --seeds 1 2 3 --warmup-steps 100 --out /work/exp/ft5000
$E --sizes 2000 --modes keep_source spelled_warmup scratch --seeds 1 2 3 --warmup-steps 100 --converge --patience 5 --cap-steps 2400 --out /work/exp/ft2000
echo ALLDONE
