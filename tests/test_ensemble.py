"""Ensembles: one member is that model exactly; scripted members give exactly the log of the
mean of their probabilities; members of other architectures decode together; members whose
tokenizers differ are refused with the run named."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import chi2_bound, chi_square, tiny_config_dict
from seq2seq.config import config_from_dict
from seq2seq.decoding.ensemble import Ensemble
from seq2seq.errors import CheckpointError
from seq2seq.model.step import DecodingModel
from seq2seq.decoding.search import Sampling, beam_search, greedy_search, sample_search, translate_ids
from seq2seq.training.loop import train
from seq2seq.decoding.translator import Translator

# A five-piece vocabulary: PAD, UNK, BOS, EOS, then X and Y.
X, Y = 4, 5


class Scripted:
    """A fake step model whose step t gives the same probabilities table[t] to every sentence."""

    device = torch.device("cpu")

    def __init__(self, table: list[list[float]]):
        self.table = torch.tensor(table).log()

    def start(self, src, src_lengths):
        return Rows(src.new_zeros(src.size(0))), Rows(src.new_zeros(src.size(0)))

    def step(self, prev, state, memory):
        t = state.t
        return self.table[t.clamp(max=len(self.table) - 1)], Rows(t + 1), torch.ones(t.size(0), 1)


class Rows:
    def __init__(self, t):
        self.t = t

    def select(self, index):
        return Rows(self.t.index_select(0, index))


def probs(x: float, y: float, eos: float) -> list[float]:
    return [1e-9, 1e-9, 1e-9, eos, x, y]


# Step 0: A is sure of X, B nearly rules X out. The mean of probabilities picks X (0.4505 against
# 0.3); the mean of log-probabilities would pick Y. Step 1: both end the sentence.
A = Scripted([probs(0.9, 0.1, 1e-9), probs(0.05, 0.05, 0.9)])
B = Scripted([probs(0.001, 0.5, 0.499), probs(0.1, 0.1, 0.8)])


def test_scripted_members_are_averaged_in_probability():
    src, lengths = torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 3])
    max_lengths = torch.tensor([5, 5])
    [[hyp], _] = greedy_search(Ensemble([A, B]), src, lengths, max_lengths=max_lengths)
    assert hyp.tokens == [X]
    expected = math.log((0.9 + 0.001) / 2) + math.log((0.9 + 0.8) / 2)
    assert hyp.log_prob == pytest.approx(expected, abs=1e-6)

    hyps = beam_search(Ensemble([A, B]), src, lengths, beam_size=3, max_lengths=max_lengths, alpha=0.0, nbest=3)[0]
    found = {tuple(h.tokens): h.log_prob for h in hyps}
    assert found[(X,)] == pytest.approx(expected, abs=1e-6)
    assert found[(Y,)] == pytest.approx(math.log((0.1 + 0.5) / 2) + math.log((0.9 + 0.8) / 2), abs=1e-6)
    assert found[()] == pytest.approx(math.log((1e-9 + 0.499) / 2), abs=1e-6)  # EOS at once
    # Each step's averaged row is a distribution.
    _, state = Ensemble([A, B]).start(src, lengths)
    lp, _, _ = Ensemble([A, B]).step(torch.tensor([2, 2]), state, state)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2), atol=1e-6)
    # Members need not be torch modules: the batched decoding of id lists takes them as they are.
    [[hyp]] = translate_ids(Ensemble([A, B]), [[1, 1, 1]], beam_size=1, batch_size=8, alpha=0.0, max_len_ratio=1.0,
                            max_len_offset=2)
    assert hyp.tokens == [X] and hyp.log_prob == pytest.approx(expected, abs=1e-6)


def test_sampling_an_ensemble_draws_from_the_mean_of_the_members_probabilities():
    # Step 0 is drawn (step 1 must end): X with (0.9 + 0.001) / 2, Y with (0.1 + 0.5) / 2, EOS with about 0.25.
    n = 20_000
    hyps = sample_search(Ensemble([A, B]), torch.ones(n, 1, dtype=torch.long), torch.ones(n, dtype=torch.long),
                         max_lengths=torch.full((n,), 2), line_ids=torch.arange(n), sampling=Sampling(seed=9))
    first = [h[0].tokens[0] if h[0].tokens else 3 for h in hyps]
    mean = [(a + b) / 2 for a, b in zip(probs(0.9, 0.1, 1e-9), probs(0.001, 0.5, 0.499))]
    expected = {piece: p / sum(mean) for piece, p in enumerate(mean)}
    stat, df = chi_square({piece: first.count(piece) for piece in expected}, expected, n)
    assert df == 2 and stat < chi2_bound(df), stat
    # Not the mean of log-probabilities, which would favour Y over X.
    assert first.count(X) > first.count(Y)


def test_an_ensemble_of_a_model_with_itself_samples_what_the_model_samples(trained_run, synthetic_dir):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:40]
    sampling = Sampling(seed=4, temperature=2.0)
    single = Translator.load(trained_run, device="cpu").translate(lines, sampling=sampling, batch_size=7)
    pair = Translator.load([trained_run, trained_run], device="cpu")
    assert pair.translate(lines, sampling=sampling, batch_size=40) == single
    assert pair.translate(lines, sampling=Sampling(seed=5, temperature=2.0)) != single


def test_an_ensemble_of_one_is_that_model_exactly(trained_run, synthetic_dir):
    single = Translator.load(trained_run, device="cpu")
    one = Translator(Ensemble([single.model]), single.src_tok, single.tgt_tok, single.config, single.device)
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:40]
    for options in ({"beam_size": 1}, {"beam_size": 4, "nbest": 3}):
        a = single.translate_detailed(lines, return_attention=True, **options)
        b = one.translate_detailed(lines, return_attention=True, **options)
        for hyps_a, hyps_b in zip(a, b, strict=True):
            assert [(h.text, h.score, h.log_prob) for h in hyps_a] == [(h.text, h.score, h.log_prob) for h in hyps_b]
            assert all(torch.equal(x.attention, y.attention) for x, y in zip(hyps_a, hyps_b))


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory, synthetic_dir) -> Path:
    """Another architecture (LSTM, other sizes, dot attention) on the same data: its tokenizer is
    trained on the same text with the same settings, so it is the same tokenizer."""
    run_dir = tmp_path_factory.mktemp("lstm")
    raw = tiny_config_dict(synthetic_dir, model={
        "encoder": {"cell": "lstm", "emb_size": 24, "hidden_size": 48, "bidirectional": False},
        "decoder": {"cell": "lstm", "emb_size": 24, "hidden_size": 48, "attention": "dot"}},
        training={"max_epochs": 6})
    train(config_from_dict(raw), run_dir, quiet=True)
    return run_dir


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "seq2seq", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_members_of_other_architectures_decode_together(trained_run, lstm_run, synthetic_dir, tmp_path):
    ensemble = Translator.load([trained_run, lstm_run], device="cpu")
    assert isinstance(ensemble.model, Ensemble) and ensemble.run_dirs == [trained_run, lstm_run]
    assert all(isinstance(member, DecodingModel) for member in ensemble.model.members)
    src = synthetic_dir / "test.src"
    lines = src.read_text().splitlines()
    out = tmp_path / "out.tsv"
    proc = run_cli("translate", "--model", trained_run, "--model", lstm_run, "--input", src, "--output", out,
                   "--nbest", "2", "--beam-size", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(i, k) for i in range(len(lines)) for k in (1, 2)]
    # The API gives the same best translations as the CLI, and they are good ones.
    best = ensemble.translate(lines, beam_size=3)
    assert best == [r[3] for r in rows if r[1] == "1"]
    refs = (synthetic_dir / "test.tgt").read_text().splitlines()
    assert sum(h == r for h, r in zip(best, refs)) >= 0.8 * len(refs)
    # int8 members decode too (one line per input).
    int8 = run_cli("translate", "--model", trained_run, "--model", lstm_run, "--input", src, "--quantize", "int8",
                   "--quiet")
    assert int8.returncode == 0 and len(int8.stdout.splitlines()) == len(lines), int8.stderr


def test_a_member_with_another_tokenizer_is_named(trained_run, synthetic_dir, tmp_path):
    other = tmp_path / "other"
    raw = tiny_config_dict(synthetic_dir, tokenizer={"vocab_size": 60}, training={"max_steps": 2})
    train(config_from_dict(raw), other, quiet=True)
    with pytest.raises(CheckpointError, match=rf"{other}: its source tokenizer .* differs from that of {trained_run}"):
        Translator.load([trained_run, other], device="cpu")
    proc = run_cli("translate", "--model", trained_run, "--model", other, "--input", synthetic_dir / "test.src")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(other) in proc.stderr and proc.stdout == ""


def test_the_ensemble_script_scores_members_and_ensemble(trained_run, lstm_run, synthetic_dir, tmp_path):
    script = Path(__file__).resolve().parents[1] / "experiments" / "ensemble_eval.py"
    proc = subprocess.run([sys.executable, str(script), str(trained_run), str(lstm_run), "--src",
                           str(synthetic_dir / "test.src"), "--ref", str(synthetic_dir / "test.tgt"), "--out",
                           str(tmp_path / "out"), "--beam-size", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["name"] for r in rows] == ["member1", "member2", "ensemble"]
    hyps = (tmp_path / "out" / "ensemble.hyp").read_text().splitlines()
    assert hyps == Translator.load([trained_run, lstm_run], device="cpu").translate(
        (synthetic_dir / "test.src").read_text().splitlines(), beam_size=2)
    assert rows[-1]["bleu"] > 50 and "Ensemble against the best member" in (tmp_path / "out" / "results.md").read_text()
