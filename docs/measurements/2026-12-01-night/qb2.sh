#!/bin/bash
set -x
cd /work/main
export OMP_NUM_THREADS=1
while kill -0 16676 2>/dev/null; do sleep 10; done
P=/work/exp/ende_s1
E="python experiments/finetune_experiment.py $P --steps 800 --set training.num_threads=1 --warmup-steps 100"
$E --sizes 2000 --modes keep_source spelled_warmup scratch --seeds 1 2 --src de --tgt fr --out /work/exp/ft_defr
echo ALLDONE
