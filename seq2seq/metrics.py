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


# BLEU as Multi30k papers report it (multi-bleu.perl -lc on Moses-tokenized text): a different
# figure from sacreBLEU's, usually higher, so it is always shown under this label.
LITERATURE_LABEL = "BLEU (literature: lowercased, Moses-tokenized; not comparable to sacreBLEU)"
MOSES_EXTRA = "pip install 'seq2seq-rnn[moses]'"


def literature_bleu(hyps: Sequence[str], refs: Sequence[str], lang: str) -> float:
    """Corpus BLEU on lowercased text that sacremoses' Moses tokenizer for `lang` (the target
    language) split, scored as multi-bleu.perl scores it: whitespace tokens, no smoothing.
    Raises ImportError without sacremoses (the `moses` extra)."""
    from sacremoses import MosesTokenizer
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    tokenizer = MosesTokenizer(lang=lang)

    def tokenized(lines: Sequence[str]) -> list[str]:
        return [tokenizer.tokenize(line.lower(), escape=False, return_str=True) for line in lines]

    return sacrebleu.corpus_bleu(tokenized(hyps), [tokenized(refs)], tokenize="none", smooth_method="none",
                                 force=True).score
