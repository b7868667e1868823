#!/bin/bash
# train_once.sh CODE CONFIG STEPS LOG: one seq2seq train of STEPS updates with CODE on PYTHONPATH;
# appends the trainer's own seconds between the first and last log line to LOG.
CODE=$1; CONFIG=$2; STEPS=$3; LOG=$4
D=/work/shared/data/multi30k
RUN=$(mktemp -d /tmp/ab_run.XXXX)
rm -rf $RUN
cd $CODE
PYTHONPATH=$CODE python -m seq2seq train --config $CONFIG --run-dir $RUN --quiet \
  --set data.train=$D/train --set data.valid=$D/val --set data.test=$D/test_2016_flickr \
  --set training.max_steps=$STEPS --set training.log_every=50 --set training.max_minutes=null \
  --set training.valid_every=100000 --set training.valid_at_epoch_end=false > $RUN.out 2>&1 || { tail -5 $RUN.out; exit 1; }
python - "$RUN/train.jsonl" "$CODE" >> $LOG <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l and 'elapsed' in l]
a, b = rows[0], rows[-1]
print(json.dumps({"code": sys.argv[2], "from": a["step"], "to": b["step"], "seconds": round(b["elapsed"] - a["elapsed"], 2),
                  "sec_per_update": round((b["elapsed"] - a["elapsed"]) / (b["step"] - a["step"]), 4), "loss": b["loss"]}))
PY
rm -rf $RUN $RUN.out
