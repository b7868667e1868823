#!/bin/bash
# After C1's 6,000-update runs: the better of C1 and C2 at 6,000 (mean over seeds of the final
# model's best validation BLEU) is resumed to 9,534 updates (21 epochs, the length of the
# recipe's reference run), both seeds side by side; then #30's top-k back-translation runs.
while pgrep -f "resume.sh c1_" > /dev/null; do sleep 20; done
WIN=$(python3 - <<'PY'
import json
def final(run):
    rows = [json.loads(l) for l in open(f"/work/exp29/{run}/metrics.jsonl") if l.strip()]
    return max(r["bleu"] for r in rows if r["step"] <= 6000)
means = {s: (final(f"{s}_s1") + final(f"{s}_s2")) / 2 for s in ("c1", "c2")}
print(max(means, key=means.get))
PY
)
echo "$(date +%T) winner at 6,000: $WIN; resuming to 9534" >> /work/exp29/queue6000.log
/work/exp29/resume.sh ${WIN}_s1 9534 & /work/exp29/resume.sh ${WIN}_s2 9534 & wait
echo "$(date +%T) end full-length $WIN" >> /work/exp29/queue6000.log
echo "$(date +%T) start topk" >> /work/exp30/topk_after.log
cd /work/main && python experiments/bt_experiment.py /work/exp30/parent_ende2000 /work/exp30/parent_deen --steps 800 \
  --mono-from 5001 --jobs 2 --set training.num_threads=1 --out /work/exp30/bt --seeds 1 2 3 --sizes 5000 \
  --subword off --settings alone bt_topk_tag --top-k 10 >> /work/exp30/topk_after.log 2>&1
echo "$(date +%T) end topk exit $?" >> /work/exp30/topk_after.log
