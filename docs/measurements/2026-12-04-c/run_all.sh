#!/bin/bash
# The #30 experiment on this machine: 2 jobs at 1 thread each, 800 updates per run.
cd /work/main
P="/work/exp29/base_s1 /work/exp30/parent_deen --steps 800 --mono-from 5001 --jobs 2 --set training.num_threads=1 --out /work/exp30/bt --seeds 1 2 3"
python experiments/bt_experiment.py $P --sizes 2000 5000 --subword off && \
python experiments/bt_experiment.py $P --sizes 2000 --subword on --settings alone bt_sample_tag && \
python experiments/bt_experiment.py $P --sizes 5000 --subword on --settings alone bt_sample_tag
echo "exit $?"
