"""Scores: the literature BLEU is BLEU on lowercased, Moses-tokenized text, scored as
multi-bleu.perl scores it (whitespace tokens, no smoothing)."""
import pytest
import sacrebleu

from seq2seq.metrics import literature_bleu

HYPS = ["Ein Mann's Hund läuft schnell.", "Zwei Kinder (draußen) spielen Fußball!", "Eine Frau liest."]
REFS = ["ein Mann's Hund rennt schnell.", "Zwei Kinder spielen (draußen) Fußball!", "Eine Frau liest ein Buch."]
# The same lines as Moses' German tokenizer splits them, lowercased (written out by hand).
HYPS_TOKENIZED = ["ein mann ' s hund läuft schnell .", "zwei kinder ( draußen ) spielen fußball !",
                  "eine frau liest ."]
REFS_TOKENIZED = ["ein mann ' s hund rennt schnell .", "zwei kinder spielen ( draußen ) fußball !",
                  "eine frau liest ein buch ."]


def test_literature_bleu_is_bleu_on_lowercased_moses_tokens():
    pytest.importorskip("sacremoses")
    score = literature_bleu(HYPS, REFS, "de")
    by_hand = sacrebleu.corpus_bleu(HYPS_TOKENIZED, [REFS_TOKENIZED], tokenize="none", smooth_method="none").score
    assert score == pytest.approx(by_hand, abs=1e-9)
    # Tokenization changes the figure: neither sacreBLEU's own lowercased BLEU nor untokenized text give it.
    assert abs(score - sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True).score) > 1
    lowered = sacrebleu.corpus_bleu([h.lower() for h in HYPS], [[r.lower() for r in REFS]], tokenize="none").score
    assert abs(score - lowered) > 1


def test_literature_bleu_gives_zero_like_multi_bleu_when_an_order_has_no_match():
    pytest.importorskip("sacremoses")
    # No 4-gram in common: multi-bleu.perl reports 0, where smoothed BLEU would not.
    assert literature_bleu(["a b c"], ["a b c d"], "en") == 0.0
