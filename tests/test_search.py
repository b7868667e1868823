"""Greedy and beam search against a scripted fake decoder (exact hypotheses and scores),
and against a real tiny model (beam 1 equals greedy; batching changes nothing); sampling
against hand-set distributions (the draws follow them) and a real model (the draws do not
depend on the batch or the order of the lines)."""
from __future__ import annotations

import math
import random

import pytest
import torch

from conftest import chi2_bound, chi_square
from seq2seq.data import pad
from seq2seq.decoding.search import (Hypothesis, Sampling, beam_search, best_candidates, greedy_search, length_penalty,
                            max_output_lengths, sample_search, uniform)
from seq2seq.data.tokenizer import BOS, EOS, PAD
from seq2seq.decoding.search import translate_ids
from seq2seq.decoding.translator import Translator

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
    assert len(together) == len(sentences)
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
    assert len(results) == len(max_lengths)
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


# -- sampling from hand-set distributions ---------------------------------------------------


class TableModel:
    """A StepModel whose next-piece probabilities depend on the previous piece only: table[prev]."""

    device = torch.device("cpu")

    def __init__(self, table: dict[int, list[float]]):
        self.rows = torch.full((VOCAB, VOCAB), 1.0 / VOCAB)
        for prev, probs in table.items():
            self.rows[prev] = torch.tensor(probs)
        self.log_rows = self.rows.log()

    def start(self, src, src_lengths):
        return FakeMemory(src[:, 0].clone()), FakeState(torch.empty(src.size(0), 0, dtype=torch.long))

    def step(self, prev, state, memory):
        return self.log_rows[prev], FakeState(torch.cat([state.prefix, prev.unsqueeze(1)], dim=1)), None


# Every piece has some probability, PAD, UNK and BOS included: sampling is from the whole distribution.
FIRST = [0.02, 0.03, 0.01, 0.14, 0.35, 0.25, 0.12, 0.08]
AFTER_4 = [0.01, 0.01, 0.01, 0.47, 0.10, 0.30, 0.05, 0.05]
AFTER_5 = [0.01, 0.02, 0.02, 0.25, 0.40, 0.05, 0.15, 0.10]
TWO_STEPS = TableModel({BOS: FIRST, 4: AFTER_4, 5: AFTER_5})


def draw(model, n: int, max_len: int, sampling: Sampling, first_line: int = 0) -> list[Hypothesis]:
    src = torch.full((n, 1), 4, dtype=torch.long)
    hyps = sample_search(model, src, torch.ones(n, dtype=torch.long), max_lengths=torch.full((n,), max_len),
                         line_ids=torch.arange(first_line, first_line + n), sampling=sampling)
    return [h[0] for h in hyps]


def test_sampling_follows_the_model_distribution_exactly():
    # Two free steps (the third must be EOS): the sequences are drawn with their probabilities
    # under the model, conditional second steps included.
    n = 40_000
    hyps = draw(TWO_STEPS, n, max_len=3, sampling=Sampling(seed=7))
    expected = {(): FIRST[EOS]}
    for a in range(VOCAB):
        if a == EOS:
            continue
        second = TWO_STEPS.rows[a].tolist()
        expected[(a,)] = FIRST[a] * second[EOS]
        for b in range(VOCAB):
            if b != EOS:
                expected[(a, b)] = FIRST[a] * second[b]
    assert sum(expected.values()) == pytest.approx(1.0)
    counts: dict = {}
    for h in hyps:
        counts[tuple(h.tokens)] = counts.get(tuple(h.tokens), 0) + 1
    stat, df = chi_square(counts, expected, n)
    assert df >= 20 and stat < chi2_bound(df), (stat, df)
    # Scores are the model's own log-probabilities of what was drawn, EOS included (forced after two pieces).
    for h in hyps[:50]:
        forced_eos = TWO_STEPS.rows[h.tokens[-1], EOS].item() if len(h.tokens) == 2 else 1.0
        assert h.log_prob == pytest.approx(math.log(expected[tuple(h.tokens)] * forced_eos), rel=1e-5)


@pytest.mark.parametrize("sampling, law", [
    (Sampling(seed=3, temperature=2.0), lambda p: [x ** 0.5 for x in p]),
    (Sampling(seed=4, temperature=0.5), lambda p: [x ** 2 for x in p]),
    (Sampling(seed=5, top_k=3), lambda p: [x if x >= sorted(p)[-3] else 0.0 for x in p]),
    (Sampling(seed=6, top_k=2, temperature=3.0), lambda p: [x ** (1 / 3) if x >= sorted(p)[-2] else 0.0 for x in p]),
])
def test_temperature_and_top_k_reshape_the_distribution(sampling, law):
    n = 20_000
    first = [h.tokens[0] if h.tokens else EOS for h in draw(TWO_STEPS, n, max_len=2, sampling=sampling)]
    weights = law(FIRST)
    expected = {piece: w / sum(weights) for piece, w in enumerate(weights)}
    counts = {piece: first.count(piece) for piece in range(VOCAB)}
    assert all(counts[p] == 0 for p, q in expected.items() if q == 0)
    stat, df = chi_square(counts, {p: q for p, q in expected.items() if q > 0}, n)
    assert stat < chi2_bound(df), (stat, df)


def test_a_draw_depends_on_seed_and_line_number_only():
    sampling = Sampling(seed=11)
    together = [h.tokens for h in draw(TWO_STEPS, 12, 5, sampling, first_line=100)]
    alone = [draw(TWO_STEPS, 1, 5, sampling, first_line=100 + i)[0].tokens for i in range(12)]
    assert together == alone
    assert len({tuple(t) for t in together}) > 3  # lines draw differently
    other_seed = [h.tokens for h in draw(TWO_STEPS, 12, 5, Sampling(seed=12), first_line=100)]
    assert other_seed != together
    # top_k=1 leaves one candidate: greedy.
    greedy = run(greedy_search, [0, 1, 1, 0])
    model = ScriptedModel(SCRIPTS)
    sampled = sample_search(model, torch.tensor([[0], [1], [1], [0]]), torch.ones(4, dtype=torch.long),
                            max_lengths=torch.full((4,), 10), line_ids=torch.arange(4), sampling=Sampling(top_k=1))
    assert [h[0].tokens for h in sampled] == [g[0].tokens for g in greedy]


def test_the_random_numbers_are_uniform_and_a_function_of_seed_line_and_step():
    lines = torch.arange(20_000, dtype=torch.long)
    u = torch.stack([uniform(1, lines, step) for step in range(4)])  # (steps, lines)
    assert u.dtype == torch.float32 and 0 < float(u.min()) and float(u.max()) < 1
    counts = torch.histc(u, bins=20, min=0, max=1)
    expected = u.numel() / 20
    assert float(((counts - expected) ** 2 / expected).sum()) < chi2_bound(19)
    # Neighbouring lines and steps, and other seeds, are uncorrelated.
    for a, b in ((u[0, :-1], u[0, 1:]), (u[0], u[1]), (u[0], uniform(2, lines, 0))):
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.03
    assert not torch.equal(uniform(1, lines + 2 ** 32, 0), u[0])  # lines beyond 32 bits count too
    # A (seed, line, step) gives the same number in any company and order.
    assert torch.equal(uniform(1, torch.tensor([17, 5]), 2), u[2, [17, 5]])


def test_sampling_with_beams_is_refused():
    with pytest.raises(ValueError, match="beam_size"):
        translate_ids(ScriptedModel(SCRIPTS), [[0]], beam_size=2, batch_size=1, alpha=0.0, max_len_ratio=1.0,
                      max_len_offset=5, sampling=Sampling())


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


@pytest.mark.parametrize("sampling", [Sampling(seed=5), Sampling(seed=6, top_k=3, temperature=1.5)])
def test_sampled_translations_do_not_depend_on_batch_size_or_line_order(translator, sources, sampling):
    options = dict(beam_size=1, alpha=0.0, max_len_ratio=2.0, max_len_offset=10, sampling=sampling)
    by_size = [[h[0].tokens for h in translate_ids(translator.model, sources, batch_size=size, **options)]
               for size in (1, 3, 64)]
    assert by_size[0] == by_size[1] == by_size[2]
    # The lines shuffled, each keeping its line number, and mapped back.
    order = list(range(len(sources)))
    random.Random(1).shuffle(order)
    shuffled = translate_ids(translator.model, [sources[i] for i in order], batch_size=7, line_ids=order, **options)
    back = [None] * len(sources)
    for i, hyps in zip(order, shuffled):
        back[i] = hyps[0].tokens
    assert back == by_size[0]
    # It does sample: another seed, or the greedy choice, differs on some lines.
    greedy = [h[0].tokens for h in translate_ids(translator.model, sources, batch_size=64, beam_size=1, alpha=0.0,
                                                  max_len_ratio=2.0, max_len_offset=10)]
    hot = Sampling(seed=sampling.seed + 1, temperature=3.0)
    other = [h[0].tokens for h in translate_ids(translator.model, sources, batch_size=64, **{**options,
                                                                                           "sampling": hot})]
    assert other != by_size[0] and other != greedy


def test_real_model_respects_max_length(translator, sources):
    hyps = translate_ids(translator.model, sources, beam_size=3, batch_size=16, alpha=1.0, max_len_ratio=0.0,
                         max_len_offset=3)
    assert all(len(h[0].tokens) <= 2 for h in hyps)
    assert any(len(h[0].tokens) == 2 for h in hyps)


# -- host syncs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("beam_size, nbest", [(1, 1), (4, 1), (4, 3), ("sample", 1)])
def test_search_copies_to_the_host_at_most_once_a_step(cell, beam_size, nbest):
    from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
    from seq2seq.model.model import build_model
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
        if beam_size == "sample":
            hyps = sample_search(model, src, lengths, max_lengths=max_lengths, line_ids=torch.arange(len(src_ids)),
                                 sampling=Sampling(top_k=5, temperature=1.2))
        elif beam_size == 1:
            hyps = greedy_search(model, src, lengths, max_lengths=max_lengths)
        else:
            hyps = beam_search(model, src, lengths, beam_size=beam_size, nbest=nbest, max_lengths=max_lengths)
    assert len({len(h[0].tokens) for h in hyps}) > 1
    # One copy per step (which sentences are done), and one of the results; a blocking copy to the
    # device (the limits, the line numbers) would count too, as it makes a GPU run wait.
    assert counts.syncs <= steps["n"] + 1, counts.sites
