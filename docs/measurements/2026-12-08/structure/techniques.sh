#!/usr/bin/env bash
# Modules of the package that name each technique's config keys (run in a checkout's root).
declare -A keys=(
  [layer_norm]='layer_norm'
  [word_dropout]='word_dropout'
  [subword_sampling]='Segmenting|SubwordSampling|sampling\.(alpha|dropout|copies|nbest_size)|for_epoch|segmenting'
  [ema]='ema_decay|ema_start|WeightAverage|\\.ema\\b|raw_model'
  [checkpoint_averaging]='average_checkpoints|average_best'
  [lr_decay]='decay_start|decay_every|decay_factor'
)
for k in layer_norm word_dropout subword_sampling ema checkpoint_averaging lr_decay; do
  files=$(git grep --untracked -lE "${keys[$k]}" -- 'seq2seq/*.py' 'seq2seq/**/*.py' | sort -u)
  printf '%-22s %2d  %s\n' "$k" "$(echo "$files" | grep -c .)" "$(echo $files)"
done
