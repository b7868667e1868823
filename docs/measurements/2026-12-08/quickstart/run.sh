#!/usr/bin/env bash
# The README's quickstart as written, in a fresh clone of this checkout, with Multi30k copied from
# a local folder (the download script's LOCAL_DIR form); each step timed; the export served and
# its page fetched.   run.sh OUT [MULTI30K_DIR]
set -euo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
data=$(cd "${2:-$(dirname "$0")/../../../../../shared/data/multi30k}" && pwd)
repo=$(cd "$(dirname "$0")/../../../.." && pwd)
rm -rf "$out/clone" && git clone -q "$repo" "$out/clone" && cd "$out/clone"
step() { local start=$SECONDS; "$@"; echo "step: $* : $((SECONDS - start)) s" | tee -a "$out/steps.txt"; }
: > "$out/steps.txt"
step scripts/get_multi30k.sh "$data"
step seq2seq train configs/tiny.yaml
step seq2seq translate --model runs/tiny --input data/multi30k/test_2016_flickr.en --output runs/tiny/test.hyp.de
seq2seq evaluate --hyp runs/tiny/test.hyp.de --ref data/multi30k/test_2016_flickr.de | tee "$out/evaluate_beam5.txt"
seq2seq translate --model runs/tiny --input data/multi30k/test_2016_flickr.en --output runs/tiny/test.greedy.de \
  --beam-size 1 --quiet
seq2seq evaluate --hyp runs/tiny/test.greedy.de --ref data/multi30k/test_2016_flickr.de | tee "$out/evaluate_greedy.txt"
step seq2seq export --model runs/tiny --out runs/tiny_web
python3 -m http.server --directory runs/tiny_web --bind 127.0.0.1 8765 >/dev/null 2>&1 & server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 1
curl -s -o /dev/null -w "page: HTTP %{http_code}, %{size_download} bytes\n" http://127.0.0.1:8765/ | tee -a "$out/steps.txt"
grep -E "training finished|CPU thread|cores between" runs/tiny/train.log | cut -d' ' -f3- | tee "$out/train_summary.txt"
git status --short --ignored | tee "$out/git_status.txt"   # what the commands wrote: all of it ignored
