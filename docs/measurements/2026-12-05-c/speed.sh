#!/bin/bash
# The recipe and the same at 512 units (tied_ema_512.yaml, beside this script), side by side, nothing else running: 200 updates each, three rounds, 2 threads.
T=/work/main/docs/measurements/2026-12-04-b/ab_speed/train_once.sh
for i in 1 2 3; do
  for c in /work/main/configs/multi30k_en_de_tied_ema.yaml "$(dirname "$(readlink -f "$0")")/tied_ema_512.yaml"; do
    echo -n "$(basename $c) " >> /work/exp29/speed/speed.log
    bash $T /work/main $c 200 /work/exp29/speed/speed.log
  done
done
echo done >> /work/exp29/speed/speed.log
