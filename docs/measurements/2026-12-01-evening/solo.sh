#!/bin/bash
set -x
cd /work/main
D=/work/shared/data/multi30k
lscpu | grep -E "Model name|Flags" | cut -c1-80 > /work/exp/solo_lscpu.txt
python experiments/ensemble_eval.py /work/exp/ende_s1 /work/exp/ende_s2 /work/exp/ende_s3 --src $D/test_2016_flickr.en --ref $D/test_2016_flickr.de --out /work/exp/ensemble > /work/exp/ensemble.out 2>&1
python scripts/serve_load.py /work/exp/ende_s1 --input $D/test_2016_flickr.en --out /work/exp/serve_load > /work/exp/serve_load.out 2>&1
echo ALLDONE
