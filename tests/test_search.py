"""Greedy and beam search against a scripted fake decoder (exact hypotheses and scores),
and against a real tiny model (beam 1 equals greedy; batching changes nothing)."""
from __future__ import annotations

import math

import pytest
import torch

from seq2seq.data import pad
from seq2seq.search import (Hypothesis, beam_search, best_candidates, greedy_search, length_penalty,
                            max_output_lengths)
from seq2seq.tokenizer import BOS, EOS, PAD
from seq2seq.search import translate_ids
from seq2seq.translator import Translator

VOCAB = 8  # PAD UNK BOS EOS and the pieces 4, 5, 6, 7


class FakeMemory:
    def __init__(self, sentence: torch.Tensor):
        self.sentence = sentence  # (rows,) which script each row follows

    def select(self, index: torch.Tensor) -> "FakeMemory":
        return FakeMemory(self.sentence.index_select(0, index))


class FakeState:
    def __init__(self, prefix: torch.Tensor):
        self.prefix = prefix  # (rows, steps so far) tokens fed in, BOS first

    def select(self, index: torch.Tensor) -> "FakeState":
        return FakeState(self.prefix.index_select(0, index))


def distribution(probs: dict[int, float]) -> list[float]:
    """Full next-token probabilities: the listed ones, the rest shared by the other pieces
    (PAD and BOS get a negligible share, as a trained model would give them)."""
    out = [0.0] * VOCAB
    others = [t for t in range(VOCAB) if t not in probs and t not in (PAD, BOS)]
    rest = 1.0 - sum(probs.values())
    for t in range(VOCAB):
        out[t] = probs.get(t, rest / len(others) if t in others else 0.0)
    out[PAD] = out[BOS] = 1e-12
    return out


class ScriptedModel:
    """A StepModel that is no nn.Module: the next-token distribution is looked up by the
    sentence's script and the tokens produced so far; unscripted prefixes end with probability 0.9."""

    device = torch.device("cpu")

    def __init__(self, scripts: dict[int, dict[tuple, dict[int, float]]], default=None):
        self.scripts = scripts
        self.default = default or {EOS: 0.9}
        self.calls = 0

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor):
        rows = src.size(0)
        return FakeMemory(src[:, 0].clone()), FakeState(torch.empty(rows, 0, dtype=torch.long))

    def step(self, prev: torch.Tensor, state: FakeState, memory: FakeMemory):
        self.calls += 1
        prefix = torch.cat([state.prefix, prev.unsqueeze(1)], dim=1)
        assert torch.all(prefix[:, 0] == BOS)
        rows = []
        for sent, tokens in zip(memory.sentence.tolist(), prefix[:, 1:].tolist()):
            rows.append(distribution(self.scripts[sent].get(tuple(tokens), self.default)))
        return torch.tensor(rows).log(), FakeState(prefix), None

    def log_prob(self, sent: int, tokens: list[int]) -> float:
        """The script's log-probability of tokens followed by EOS."""
        total, prefix = 0.0, ()
        for t in tokens + [EOS]:
            total += math.log(distribution(self.scripts[sent].get(prefix, self.default))[t])
            prefix += (t,)
        return total


# Greedy takes 4 (0.5) and ends with [4, 4] (0.5 * 0.36 * 0.9 = 0.162); [5] has 0.4 * 0.9 = 0.36.
GREEDY_TRAP = {(): {4: 0.5, 5: 0.4}, (4,): {4: 0.36, 5: 0.34}, (5,): {EOS: 0.9}}
# Short [4] has 0.5 * 0.6 = 0.3; long [5, 5, 5] has 0.45 * 0.9 * 0.8 * 0.8 = 0.2592: the short one wins
# on raw log-probability, the long one once the length penalty divides the scores.
SHORT_OR_LONG = {(): {4: 0.5, 5: 0.45}, (4,): {EOS: 0.6, 4: 0.3}, (5,): {5: 0.9},
                 (5, 5): {5: 0.8, EOS: 0.1}, (5, 5, 5): {EOS: 0.8}}
SCRIPTS = {0: GREEDY_TRAP, 1: SHORT_OR_LONG}


def run(search, sentences: list[int], max_len: int | list[int] = 10, **kwargs) -> list[list[Hypothesis]]:
    model = ScriptedModel(SCRIPTS)
    src = torch.tensor(sentences).unsqueeze(1)  # (batch, 1): the token names the script
    lengths = torch.ones(len(sentences), dtype=torch.long)
    if isinstance(max_len, int):
        max_len = [max_len] * len(sentences)
    return search(model, src, lengths, max_lengths=torch.tensor(max_len), **kwargs)


def test_beam_finds_what_greedy_misses_with_exact_scores():
    greedy = run(greedy_search, [0])[0]
    assert len(greedy) == 1 and greedy[0].tokens == [4, 4]
    assert greedy[0].log_prob == pytest.approx(math.log(0.5 * 0.36 * 0.9), rel=1e-6)
    best = run(beam_search, [0], beam_size=2, alpha=0.0)[0]
    assert len(best) == 1
    assert best[0].tokens == [5]
    assert best[0].log_prob == pytest.approx(math.log(0.4 * 0.9), rel=1e-6)
    assert best[0].score == pytest.approx(math.log(0.4 * 0.9), rel=1e-6)


def test_nbest_are_ordered_with_exact_scores():
    hyps = run(beam_search, [0], beam_size=2, alpha=0.0, nbest=2)[0]
    assert [h.tokens for h in hyps] == [[5], [4, 4]]
    assert [h.log_prob for h in hyps] == pytest.approx([math.log(0.36), math.log(0.162)], rel=1e-6)


@pytest.mark.parametrize("alpha, winner", [(0.0, [4]), (1.0, [5, 5, 5]), (2.0, [5, 5, 5])])
def test_length_penalty_changes_the_winner(alpha, winner):
    best = run(beam_search, [1], beam_size=2, alpha=alpha)[0][0]
    assert best.tokens == winner
    expected = {(4,): 0.3, (5, 5, 5): 0.2592}[tuple(winner)]
    assert best.log_prob == pytest.approx(math.log(expected), rel=1e-6)
    assert best.score == pytest.approx(math.log(expected) / length_penalty(len(winner) + 1, alpha), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_nbest_scores_are_consistent_and_sorted(alpha):
    model = ScriptedModel(SCRIPTS)
    hyps = beam_search(model, torch.tensor([[1]]), torch.tensor([1]), beam_size=3, max_lengths=torch.tensor([10]),
                       alpha=alpha, nbest=3)[0]
    assert len(hyps) == 3
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == 3
    for h in hyps:
        assert h.log_prob == pytest.approx(model.log_prob(1, h.tokens), rel=1e-6)
        assert h.score == pytest.approx(h.log_prob / length_penalty(len(h.tokens) + 1, alpha), rel=1e-6)
    tokens = [h.tokens for h in hyps]
    assert [4] in tokens and [5, 5, 5] in tokens
    assert tokens[0] == ([4] if alpha == 0.0 else [5, 5, 5])


@pytest.mark.parametrize("vocab,block", [(8000, 64), (5486, 64), (37, 8), (37, 64), (5, 2), (1, 4)])
def test_best_candidates_equal_a_topk_over_every_extension(vocab, block):
    torch.manual_seed(vocab)
    n, k = 6, 4
    lp = torch.log_softmax(3 * torch.randn(n * k, vocab), dim=-1).view(n, k, vocab)
    lp[0, :, :vocab // 2] = float("-inf")  # a sentence forced to few pieces
    scores = torch.randn(n, k)
    scores[1, 1:] = float("-inf")  # the first step: only one beam is live
    count = min(2 * k, k * vocab)
    expected, ids = (scores.unsqueeze(-1) + lp).view(n, k * vocab).topk(count, dim=-1)
    top, beam, piece = best_candidates(scores, lp, count, block)
    assert torch.equal(top, expected)
    live = torch.isfinite(expected)  # which of the equally impossible ones comes first is free
    assert torch.equal(beam[live], (ids // vocab)[live]) and torch.equal(piece[live], (ids % vocab)[live])
    assert ((0 <= piece) & (piece < vocab)).all() and ((0 <= beam) & (beam < k)).all()


def test_length_penalty_formula():
    assert length_penalty(5, 0.0) == 1.0
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(1, 2.0) == pytest.approx(1.0)
    assert max_output_lengths(torch.tensor([3, 10]), 1.5, 2).tolist() == [6, 17]


@pytest.mark.parametrize("beam_size", [1, 2, 3])
def test_results_do_not_depend_on_the_batch(beam_size):
    sentences = [1, 0, 1, 1, 0]
    together = run(beam_search, sentences, beam_size=beam_size, alpha=1.0)
    for sent, hyps in zip(sentences, together):
        alone = run(beam_search, [sent], beam_size=beam_size, alpha=1.0)[0]
        assert [(h.tokens, h.score, h.log_prob) for h in hyps] == [(h.tokens, h.score, h.log_prob) for h in alone]
    greedy = run(greedy_search, sentences)
    assert [g[0].tokens for g in greedy] == [run(greedy_search, [s])[0][0].tokens for s in sentences]


@pytest.mark.parametrize("search, kwargs", [(greedy_search, {}), (beam_search, {"beam_size": 3, "alpha": 1.0}),
                                             (beam_search, {"beam_size": 2, "alpha": 1.0, "nbest": 2})])
def test_max_length_is_enforced(search, kwargs):
    # A model that almost never ends: the search must stop it at each sentence's own limit.
    # (Every ending pays the same tiny EOS probability, so with alpha = 1 the longest wins.)
    model = ScriptedModel({0: {}}, default={4: 0.7, 5: 0.3 - 2e-9, EOS: 1e-9})
    max_lengths = torch.tensor([3, 6, 1])
    results = search(model, torch.zeros(3, 1, dtype=torch.long), torch.ones(3, dtype=torch.long),
                     max_lengths=max_lengths, **kwargs)
    for hyps, limit in zip(results, max_lengths.tolist()):
        assert hyps
        assert all(len(h.tokens) <= limit - 1 for h in hyps)  # EOS counts towards the limit
        assert len(hyps[0].tokens) == limit - 1
    assert model.calls <= int(max_lengths.max())


def test_nbest_larger_than_beam_is_refused():
    with pytest.raises(ValueError, match="nbest"):
        run(beam_search, [0], beam_size=2, nbest=3)


def test_translate_ids_searches_any_step_model():
    # Lists of ids in, hypotheses back in input order, from a model that is no nn.Module (as an
    # exported model run by another runtime would be): the search asks it for its device only.
    model = ScriptedModel(SCRIPTS)
    options = dict(batch_size=2, alpha=0.0, max_len_ratio=1.0, max_len_offset=9)
    hyps = translate_ids(model, [[1, 7, 7], [0], [], [1]], beam_size=2, **options)
    assert [h[0].tokens for h in hyps] == [[4], [5], [], [4]]
    greedy = translate_ids(model, [[0]], beam_size=1, **options)
    assert greedy[0][0].tokens == [4, 4]


# -- a real (tiny, trained) model ----------------------------------------------------------


@pytest.fixture(scope="module")
def translator(trained_run):
    return Translator.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def sources(translator, synthetic_dir):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:40]
    return translator.encode_sources(lines)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_size_one_equals_greedy(translator, sources, alpha):
    src, lengths = pad(sources), torch.tensor([len(s) for s in sources])
    max_lengths = max_output_lengths(lengths, 2.0, 10)
    greedy = greedy_search(translator.model, src, lengths, max_lengths=max_lengths, alpha=alpha)
    beam = beam_search(translator.model, src, lengths, beam_size=1, max_lengths=max_lengths, alpha=alpha)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        assert g[0].log_prob == pytest.approx(b[0].log_prob, abs=1e-4)
        assert g[0].score == pytest.approx(b[0].score, abs=1e-4)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_real_model_results_do_not_depend_on_batch_size(translator, sources, beam_size):
    options = dict(beam_size=beam_size, alpha=1.0, max_len_ratio=2.0, max_len_offset=10)
    one = translate_ids(translator.model, sources, batch_size=1, **options)
    many = translate_ids(translator.model, sources, batch_size=len(sources), **options)
    assert [h[0].tokens for h in one] == [h[0].tokens for h in many]
    for a, b in zip(one, many):
        assert a[0].score == pytest.approx(b[0].score, abs=1e-4)


def test_real_model_respects_max_length(translator, sources):
    hyps = translate_ids(translator.model, sources, beam_size=3, batch_size=16, alpha=1.0, max_len_ratio=0.0,
                         max_len_offset=3)
    assert all(len(h[0].tokens) <= 2 for h in hyps)
    assert any(len(h[0].tokens) == 2 for h in hyps)


# -- host syncs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("beam_size, nbest", [(1, 1), (4, 1), (4, 3)])
def test_search_copies_to_the_host_at_most_once_a_step(cell, beam_size, nbest):
    from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
    from seq2seq.model import build_model
    from seq2seq.profiling import count_ops
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(cell=cell, emb_size=8, hidden_size=8, dropout=0.0),
                      decoder=DecoderConfig(cell=cell, emb_size=8, hidden_size=16, dropout=0.0))
    seq2seq = build_model(cfg, src_vocab_size=30, tgt_vocab_size=12).eval()
    with torch.no_grad():
        seq2seq.decoder.output.bias[EOS] = -1.0  # sentences end, at different steps
    model = seq2seq.for_decoding()
    steps = {"n": 0}
    step = model.step

    def counted_step(*args):
        steps["n"] += 1
        return step(*args)
    model.step = counted_step
    src_ids = [[4 + (i * j) % 25 for j in range(1 + i % 7)] for i in range(9)]
    src, lengths = pad(src_ids), torch.tensor([len(s) for s in src_ids])
    max_lengths = max_output_lengths(lengths, 1.5, 2)
    with count_ops() as counts:
        if beam_size == 1:
            hyps = greedy_search(model, src, lengths, max_lengths=max_lengths)
        else:
            hyps = beam_search(model, src, lengths, beam_size=beam_size, nbest=nbest, max_lengths=max_lengths)
    assert len({len(h[0].tokens) for h in hyps}) > 1
    # One copy per step (which sentences are done), and one of the results.
    assert counts.syncs <= steps["n"] + 1, counts.sites
