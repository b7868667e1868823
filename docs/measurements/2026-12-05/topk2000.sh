#!/bin/bash
while pgrep -f after_c1.sh > /dev/null; do sleep 10; done
echo "$(date +%T) start topk 2000" >> /work/exp30/topk_after.log
cd /work/main && python experiments/bt_experiment.py /work/exp30/parent_ende2000 /work/exp30/parent_deen --steps 800 \
  --mono-from 5001 --jobs 2 --set training.num_threads=1 --out /work/exp30/bt --seeds 1 2 3 --sizes 2000 \
  --subword off --settings alone bt_topk_tag --top-k 10 >> /work/exp30/topk_after.log 2>&1
echo "$(date +%T) end topk 2000 exit $?" >> /work/exp30/topk_after.log
echo "$(date +%T) start speed" >> /work/wip/speed.log.times
/work/wip/speed.sh
echo "$(date +%T) end speed" >> /work/wip/speed.log.times
