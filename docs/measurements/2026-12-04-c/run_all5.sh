#!/bin/bash
# After run_all4.sh: one seed of the back-translation settings with subword regularisation, 2,000 pairs.
while pgrep -f "run_all4[.]sh" > /dev/null; do sleep 10; done
cd /work/main
P="/work/exp29/base_s1 /work/exp30/parent_deen --steps 800 --mono-from 5001 --jobs 2 --set training.num_threads=1 --out /work/exp30/bt"
python experiments/bt_experiment.py $P --seeds 1 --sizes 2000 --subword on --settings bt_sample_tag bt_beam
echo "exit $?"
