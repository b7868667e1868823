#!/bin/bash
# The recipe and C2 side by side, nothing else running: 200 updates each, three rounds, 2 threads.
T=/work/main/docs/measurements/2026-12-04-b/ab_speed/train_once.sh
for i in 1 2 3; do
  for c in /work/main/configs/multi30k_en_de.yaml /work/main/configs/multi30k_en_de_tied_ema.yaml; do
    echo -n "$(basename $c) " >> /work/wip/speed.log
    bash $T /work/main $c 200 /work/wip/speed.log
  done
done
