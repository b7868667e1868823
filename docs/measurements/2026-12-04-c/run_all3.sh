#!/bin/bash
# After run_all.sh: the run that failed on unknown characters (fixed in the config), then subword on:
# first `alone` at both sizes (the fine-tuning config's default is decided on it), then bt_sample_tag.
while pgrep -f "run_all[.]sh" > /dev/null; do sleep 10; done
cd /work/main
P="/work/exp29/base_s1 /work/exp30/parent_deen --steps 800 --mono-from 5001 --jobs 2 --set training.num_threads=1 --out /work/exp30/bt --seeds 1 2 3"
python experiments/bt_experiment.py $P --sizes 2000 5000 --subword off && \
python experiments/bt_experiment.py $P --sizes 2000 5000 --subword on --settings alone && \
python experiments/bt_experiment.py $P --sizes 2000 5000 --subword on --settings bt_sample_tag
echo "exit $?"
