#!/bin/bash
# after the #29 screening queue ends: tagged top-10 sampled back-translation, 3 seeds, 5,000 pairs (2,000 if time is left)
while pgrep -f queue6000.sh > /dev/null || ! grep -q "^exit" /work/exp30/parent_ende2000.out; do sleep 20; done
echo "$(date +%T) start topk" >> /work/exp30/topk_after.log
cd /work/main && python experiments/bt_experiment.py /work/exp30/parent_ende2000 /work/exp30/parent_deen --steps 800 \
  --mono-from 5001 --jobs 2 --set training.num_threads=1 --out /work/exp30/bt --seeds 1 2 3 --sizes 5000 \
  --subword off --settings alone bt_topk_tag --top-k 10 >> /work/exp30/topk_after.log 2>&1
echo "$(date +%T) end topk exit $?" >> /work/exp30/topk_after.log
