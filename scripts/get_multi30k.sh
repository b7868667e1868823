#!/usr/bin/env bash
# Put Multi30k Task 1 (en, de, fr; train, val, test_2016_flickr; raw text, one sentence per
# line) under data/multi30k/.
#   scripts/get_multi30k.sh            download from github.com/multi30k/dataset
#   scripts/get_multi30k.sh LOCAL_DIR  copy from a local directory holding the same files
set -euo pipefail
dest="${DEST:-data/multi30k}"
base="https://github.com/multi30k/dataset/raw/master/data/task1/raw"
mkdir -p "$dest"
for split in train val test_2016_flickr; do
  for lang in en de fr; do
    file="$split.$lang"
    if [ $# -ge 1 ]; then
      if [ ! -f "$1/$file" ]; then echo "get_multi30k: $1/$file not found" >&2; exit 1; fi
      cp "$1/$file" "$dest/$file"
    else
      curl -fsSL "$base/$file.gz" | gunzip -c > "$dest/$file.part"
      mv "$dest/$file.part" "$dest/$file"
    fi
  done
done
wc -l "$dest"/train.en "$dest"/val.en "$dest"/test_2016_flickr.en
