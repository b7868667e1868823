"""The `evaluate` command: sacreBLEU's cased and lowercased BLEU and chrF of a hypothesis file
against its references, the literature's BLEU beside them (labelled as not comparable), and a
warning when most hypotheses are empty (a model that learned too little, not a scorer's bug)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from seq2seq.data import read_lines
from seq2seq.errors import DataError


def cmd_evaluate(args) -> int:
    from seq2seq.metrics import LITERATURE_LABEL, MOSES_EXTRA, literature_bleu, score_all
    hyps, _ = read_lines(args.hyp)
    refs, _ = read_lines(args.ref)
    if len(hyps) != len(refs):
        raise DataError(f"{args.hyp} has {len(hyps)} lines but {args.ref} has {len(refs)}")
    scores = score_all(hyps, refs)
    empty = sum(not h.strip() for h, r in zip(hyps, refs) if r.strip())
    if empty * 2 > sum(bool(r.strip()) for r in refs):
        print(f"warning: {empty:,} of {len(hyps):,} hypotheses in {args.hyp} are empty: the scores below say "
              f"nothing about a model that translates (was it trained long enough?)", file=sys.stderr)
    # The reference's language from its name (data files are PREFIX.LANG) unless --lang says it.
    suffix = Path(args.ref).suffix[1:]
    lang = args.lang or (suffix if re.fullmatch(r"[a-z]{2}", suffix) else None)
    literature, note = None, None
    if lang is None:
        note = "not computed: give the target language with --lang (the reference file has no .LANG ending)"
    else:
        try:
            literature = literature_bleu(hyps, refs, lang)
        except ImportError:
            note = f"not computed: it needs sacremoses ({MOSES_EXTRA})"
    if args.json:
        print(json.dumps({**{k: v for k, v in scores.items() if not k.endswith("_text")},
                          "bleu_literature": literature, "bleu_literature_label": LITERATURE_LABEL,
                          "bleu_literature_lang": lang, **({"bleu_literature_note": note} if note else {})}, indent=2))
    else:
        print(f"BLEU            {scores['bleu']:.2f}  {scores['bleu_signature']}")
        print(f"BLEU lowercased {scores['bleu_lowercase']:.2f}  {scores['bleu_lowercase_signature']}")
        print(f"chrF            {scores['chrf']:.2f}  {scores['chrf_signature']}")
        print(scores["bleu_text"])
        figure = note or f"{literature:.2f} (Moses tokenizer: {lang})"
        print(f"{LITERATURE_LABEL}: {figure}")
    return 0
