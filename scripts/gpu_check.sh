#!/usr/bin/env bash
# The one-shot GPU check (docs/gpu.md): on a machine with one CUDA GPU, in under 8 minutes, the
# CUDA and precision tests, training throughput in each precision and batch size, syncs and
# kernel launches per update, bf16 against fp32 BLEU, a GPU-trained model decoded on the CPU,
# and decoding speed. Writes three files into OUT: gpu_check.json, gpu_check.md, gpu_check.log.
#
# Before handing the repository over (once, here): copy Multi30k into the git-ignored data/
#   mkdir -p data/multi30k && cp ../shared/data/multi30k/*.{en,de} data/multi30k/
# and carry data/multi30k with the working tree. The project is not installed there: it runs
# from the checkout with the machine's own Python (PYTHONPATH=.).
#
#   bash scripts/gpu_check.sh [OUT] [options of scripts/gpu_check.py]
#   bash scripts/gpu_check.sh /tmp/dry --device cpu --tiny --data DIR     (the CI dry run)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
shift $(( $# > 0 ? 1 : 0 ))
PYTHONPATH=. timeout 470 "${PYTHON:-python3}" scripts/gpu_check.py --out "$OUT" "$@"
