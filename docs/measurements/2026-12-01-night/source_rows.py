#!/usr/bin/env python3
"""How much of a de->fr child's German source the parent's encoder has read: the share of the
child's source tokens (parent's joint en+de SentencePiece model) whose piece occurs anywhere in
the English source side the parent trained on. The other rows are carried over by keep_source
but were never updated by the parent (they keep their initialisation).

    python source_rows.py PARENT_RUN PARENT_TRAIN.en CHILD_TRAIN.de
"""
import sys
from collections import Counter

import sentencepiece as spm

parent, parent_src, child_src = sys.argv[1:4]
sp = spm.SentencePieceProcessor(model_file=f"{parent}/spm.joint.model")
seen = {i for line in open(parent_src, encoding="utf-8") for i in sp.encode(line.strip())}
child = Counter(i for line in open(child_src, encoding="utf-8") for i in sp.encode(line.strip()))
tokens = sum(child.values())
known = sum(n for i, n in child.items() if i in seen)
print(f"child source: {tokens} tokens, {len(child)} distinct pieces; "
      f"{known / tokens:.1%} of tokens and {sum(i in seen for i in child) / len(child):.1%} of pieces "
      f"occur in the parent's English source ({len(seen)} distinct pieces)")
