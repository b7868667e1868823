#!/bin/bash
set -x
cd /work/main
export OMP_NUM_THREADS=1
while kill -0  2>/dev/null; do sleep 10; done
P=/work/exp/ende_s1
E="python experiments/finetune_experiment.py $P --steps 800 --set training.num_threads=1 --warmup-steps 100"
$E --sizes 2000 --modes keep_source --seeds 1 2 3 --set "finetune.freeze=[encoder]" --out /work/exp/ft2000_freeze_encoder
$E --sizes 5000 --modes scratch --seeds 1 --converge --patience 5 --cap-steps 4000 --out /work/exp/ft5000_long_scratch
echo ALLDONE
