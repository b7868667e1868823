#!/usr/bin/env bash
# Behaviour-unchanged proof: seeded 200-update trainings, then decoding of old checkpoints and exports.
#   run.sh CODE_DIR OUT_DIR [DECODE_FROM]
# CODE_DIR: a checkout whose seq2seq package is imported (PYTHONPATH); OUT_DIR: fresh folder.
# DECODE_FROM: runs and exports written by other code, decoded with this code (default: OUT_DIR's own).
set -euo pipefail
code=$(cd "$1" && pwd); out=$(mkdir -p "$2" && cd "$2" && pwd); from=${3:-$out}
data=${DATA:-$(cd "$(dirname "$0")" && pwd)/../../../../../shared/data/multi30k}  # the checkout beside shared/
data=$(cd "$data" && pwd)
cd /tmp  # so that the working directory's package does not shadow CODE_DIR's
s2s() { PYTHONPATH="$code" OMP_NUM_THREADS=1 python3 -m seq2seq "$@"; }
common=(--set data.train="$data/train" --set data.valid="$data/val" --set data.test=null
        --set training.num_threads=1 --set training.max_minutes=null --set training.max_steps=200
        --set training.max_epochs=100 --set training.log_every=10 --set training.valid_every=100
        --set training.save_every_minutes=null --set training.device=cpu --quiet)
cfg=$code/configs/tiny.yaml
if [ -z "${3:-}" ]; then
  s2s train "$cfg" --run-dir "$out/gru" "${common[@]}" --set training.max_steps=400  # crosses the end of epoch 1 (318 updates)
  s2s train "$cfg" --run-dir "$out/gru_s2" "${common[@]}" --set training.seed=2 --set training.max_steps=100
  s2s train "$cfg" --run-dir "$out/lstm" "${common[@]}" \
    --set model.encoder.cell=lstm --set model.decoder.cell=lstm \
    --set model.encoder.layer_norm=true --set model.decoder.layer_norm=true \
    --set model.encoder.word_dropout=0.1 --set model.decoder.word_dropout=0.1 \
    --set training.ema_decay=0.999 --set training.scheduler=plateau --set training.plateau_patience=0 \
    --set training.decay_start=120 --set training.decay_every=30 --set training.valid_every=50 \
    --set training.keep_best=2 --set training.average_checkpoints=2
  s2s export --model "$out/gru" --out "$out/export"
  s2s export --model "$out/gru" --out "$out/export_int8" --quantize int8
fi
head -n 200 "$data/test_2016_flickr.en" > "$out/input.en"
mkdir -p "$out/hyp"
for m in gru lstm; do
  s2s translate --model "$from/$m" --input "$out/input.en" --output "$out/hyp/$m.greedy" --beam-size 1 --device cpu --quiet
  s2s translate --model "$from/$m" --input "$out/input.en" --output "$out/hyp/$m.beam5" --beam-size 5 --scores --device cpu --quiet
done
# int8 decoding in PyTorch is not the same from one run to the next (old code as new): five runs, compared as sets
for i in 1 2 3 4 5; do
  s2s translate --model "$from/gru" --input "$out/input.en" --output "$out/int8.$i" --beam-size 5 --quantize int8 --device cpu --quiet
done
md5sum "$out"/int8.? | cut -d' ' -f1 | sort -u > "$out/hyp/gru.int8.distinct_md5" 
s2s translate --model "$from/gru" --model "$from/gru_s2" --input "$out/input.en" --output "$out/hyp/ensemble.beam5" --beam-size 5 --scores --device cpu --quiet
s2s translate --model "$from/gru" --input "$out/input.en" --output "$out/hyp/gru.nbest3" --beam-size 5 --nbest 3 --device cpu --quiet
s2s translate --model "$from/gru" --input "$out/input.en" --output "$out/hyp/gru.sample" --sample --top-k 10 --seed 3 --device cpu --quiet
s2s translate --model "$from/export" --input "$out/input.en" --output "$out/hyp/export.beam5" --beam-size 5 --scores --quiet
s2s translate --model "$from/export_int8" --input "$out/input.en" --output "$out/hyp/export_int8.beam5" --beam-size 5 --quiet
echo "proof: done in $out"
