#!/bin/bash
# After the 800-update runs: does subword regularisation only need a longer budget? alone, 2,000 pairs,
# seed 1, 2,000 updates, without and with BPE-dropout (validation BLEU every 200 updates).
while kill -0 20605 2>/dev/null; do sleep 10; done
cd /work/main
python experiments/bt_experiment.py /work/exp29/base_s1 /work/exp30/parent_deen --steps 2000 --mono-from 5001 --jobs 2 \
  --set training.num_threads=1 --set training.patience=null --out /work/exp30/bt_long --seeds 1 --sizes 2000 --subword off on --settings alone
echo "exit $?"
