#!/bin/bash
# OpenNMT-py 3.5.1 (float32) on the peer protocol, then our benchmark in float32 and in bf16, one after the other.
cd /work/main
DATA=/work/shared/data/multi30k bash /work/shared/peers/run_peers.sh /work/peers 300 onmt
for p in fp32 bf16; do
  python scripts/benchmark.py --config configs/bench_peer_lstm.yaml --data /work/shared/data/multi30k --steps 300 --warmup 50 \
    --threads 2 --set training.precision=$p --set decoding.precision=$p --peers /work/peers/peers.json --out /tmp/bench18_$p
done
