#!/bin/bash
# OpenNMT-py 3.5.1 and seq2seq on the same 1M-pair raw corpus, the same 8k SentencePiece model,
# the peer-protocol LSTM model: vocabulary building / preparing, then 100 training updates
# (start-up and peak RSS). One command at a time.
set -e
O=/work/peers/venv-onmt/bin; W=/tmp/onmt_scale; C=/tmp/scale/corpus1000000/train; SPM=/tmp/scale/run1000000/spm.joint.model
M=/work/shared/data/multi30k
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
sed -i 's|torch.load(ckpt_path, map_location=torch.device("cpu"))|torch.load(ckpt_path, map_location=torch.device("cpu"), weights_only=False)|' \
  $($O/python -c "import onmt,os;print(os.path.dirname(onmt.__file__))")/models/model_saver.py
sed -e "/^data:/,/^src_seq_length/d" -e "s|__OUT__|$W|g" -e "s|__STEPS__|100|" -e "s|^report_every: .*|report_every: 1|" \
  /work/shared/peers/onmt.yaml > $W/body.yaml
cat > $W/onmt.yaml <<YAML
data:
    corpus_1:
        path_src: $C.en
        path_tgt: $C.de
        transforms: [sentencepiece, filtertoolong]
        weight: 1
src_subword_model: $SPM
tgt_subword_model: $SPM
src_seq_length: 100
YAML
cat $W/body.yaml >> $W/onmt.yaml
mkdir -p $W/onmt-model
echo "== onmt_build_vocab (all 1M pairs, 2 threads)"
/usr/bin/time -f "TIME %e s, peak RSS %M KB" $O/onmt_build_vocab -config $W/onmt.yaml -n_sample -1 -num_threads 2 > $W/vocab.log 2>&1 || true
tail -1 $W/vocab.log
echo "== onmt_train 100 steps"
t=$(date +%s.%N)
/usr/bin/time -f "TIME %e s, peak RSS %M KB" $O/onmt_train -config $W/onmt.yaml > $W/train.out 2>&1 || true
tail -1 $W/train.out
python3 - $t $W/onmt-model/train.log <<'PY'
import sys, re, datetime
t0 = float(sys.argv[1])
for line in open(sys.argv[2]):
    m = re.match(r"\[(\S+ \S+),(\d+) INFO\] Step 1/", line)
    if m:
        ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
        print(f"start-up (launch to 'Step 1' logged): {ts - t0:.1f} s")
        break
PY
echo "== seq2seq prepare (the same SentencePiece model, so only encoding; 2 workers)"
rm -rf $W/ours; mkdir -p $W/ours; cp $SPM $W/ours/
SETS="--set data.train=$C --set data.valid=$M/val --set data.test=$M/test_2016_flickr --set data.num_workers=2"
/usr/bin/time -f "TIME %e s, peak RSS %M KB" python3 -m seq2seq prepare --config /work/main/configs/bench_peer_lstm.yaml --run-dir $W/ours --quiet $SETS 2>&1 | tail -2
echo "== seq2seq train 100 updates"
t=$(date +%s.%N)
/usr/bin/time -f "TIME %e s, peak RSS %M KB" python3 -m seq2seq train --config /work/main/configs/bench_peer_lstm.yaml --run-dir $W/ours --quiet $SETS \
  --set training.max_steps=100 --set training.log_every=1 --set training.valid_every=1000000000 --set training.valid_at_epoch_end=false \
  --set training.max_minutes=null --set training.save_every_minutes=null 2>&1 | tail -1
python3 -c "import json,sys; r=json.loads(open('$W/ours/train.jsonl').readline()); print(f'start-up (launch to the end of update 1): {r[\"time\"] - $t:.1f} s')"
