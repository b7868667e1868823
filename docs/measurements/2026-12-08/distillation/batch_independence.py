"""Does a sentence's beam-5 translation depend on the batch and chunk it is decoded in? (It
decides whether a resumed distillation may change --batch-size or --chunk-lines.)
Usage: python3 batch_independence.py TEACHER_RUN_DIR MULTI30K_DIR"""
import logging
import sys

import torch

from seq2seq.decoding.translator import Translator

torch.set_num_threads(2)
logging.disable(logging.WARNING)  # the truncation warnings of long lines
teacher, data = sys.argv[1:]
t = Translator.load(teacher, device="cpu")
lines = open(f"{data}/train.en", encoding="utf-8").read().splitlines()[:2000]
a = t.translate(lines, beam_size=5, batch_size=100)
b = t.translate(lines, beam_size=5, batch_size=7)
c = [x for i in range(0, 2000, 37) for x in t.translate(lines[i:i + 37], beam_size=5, batch_size=13)]
print(f"of {len(lines)} lines: {sum(x != y for x, y in zip(a, b))} differ between batches of 100 and of 7, "
      f"{sum(x != y for x, y in zip(a, c))} between batches of 100 and chunks of 37 in batches of 13")
