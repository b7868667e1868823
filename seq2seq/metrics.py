"""Corpus-level scores with sacreBLEU, so figures are comparable with published ones."""
from __future__ import annotations

from typing import Sequence

import sacrebleu


def score_all(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """BLEU (cased and lowercased) and chrF with their sacreBLEU signatures."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    result = {}
    metrics = {"bleu": sacrebleu.metrics.BLEU(), "bleu_lowercase": sacrebleu.metrics.BLEU(lowercase=True),
               "chrf": sacrebleu.metrics.CHRF()}
    for name, metric in metrics.items():
        score = metric.corpus_score(list(hyps), [list(refs)])
        result[name] = score.score
        result[name + "_signature"] = str(metric.get_signature())
        result[name + "_text"] = str(score)
    return result
