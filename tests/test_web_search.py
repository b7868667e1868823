"""The in-browser translator's JavaScript (seq2seq/deploy/web/) against the Python it ports: search.js
gives search.py's hypotheses and scores on the same scripted model, and text.js with
@sctg/sentencepiece-js reads and writes text exactly as encode_sources and detokenize do.
The search tests need node only (search.js imports nothing); the text tests also need the page's
npm libraries (`npm ci --prefix web`). Without them they skip, and under CI fail."""
from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import requires
from seq2seq.data import detokenize, encode_sources
from seq2seq.decoding.search import beam_search, greedy_search, max_output_lengths, translate_ids
from seq2seq.data.tokenizer import Tokenizer, seen_pieces, train_tokenizer

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
NODE = shutil.which("node")

pytestmark = requires(NODE is not None, "needs node (Node.js 20 or later) to run the page's JavaScript")
# text_equal.mjs imports the WebAssembly SentencePiece, which node finds in web/node_modules.
needs_sentencepiece_js = requires((WEB / "node_modules" / "@sctg" / "sentencepiece-js").is_dir(),
                                  "needs the page's npm libraries: web/node_modules/@sctg/sentencepiece-js is "
                                  "missing (npm ci --prefix web)")


def run_node(script: str, spec: dict, tmp_path: Path) -> dict:
    case = tmp_path / "case.json"
    case.write_text(json.dumps(spec), encoding="utf-8")
    done = subprocess.run([NODE, str(WEB / "test" / script), str(case)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# ---- search ----

class Rows:
    def __init__(self, values: torch.Tensor):
        self.values = values  # (rows,)

    def select(self, index: torch.Tensor) -> "Rows":
        return Rows(self.values.index_select(0, index))


class ScriptedModel:
    """The twin of web/test/scripted_model.mjs: each row's state is an integer that every step moves
    deterministically; a step's log-probabilities and attention are rows of fixed tables indexed by
    the new state."""

    device = torch.device("cpu")

    def __init__(self, log_probs: torch.Tensor, attention: torch.Tensor):
        self.table, self.attention = log_probs, attention  # (states, vocab), (states, width)
        self.states = log_probs.size(0)

    def start(self, src: torch.Tensor, src_lengths: torch.Tensor):
        positions = torch.arange(1, src.size(1) + 1)
        state = ((src * positions).sum(1) + 7 * src_lengths) % self.states  # padding is 0: adds nothing
        return Rows(torch.full((src.size(0),), src.size(1))), Rows(state)

    def step(self, prev: torch.Tensor, state: Rows, memory: Rows):
        src_len = int(memory.values[0])
        new = (state.values * 31 + prev * 17 + 5) % self.states
        return self.table[new], Rows(new), self.attention[new, :src_len]


def scripted_tables(seed: int, *, states: int, vocab: int, width: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Random peaked log-probabilities (EOS likelier in some states than others) and attention rows."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(states, vocab, generator=g) * 2.5
    logits[:, 3] += torch.randn(states, generator=g) * 2.0 - 0.5
    attention = torch.softmax(torch.randn(states, width, generator=g), dim=-1)
    return torch.log_softmax(logits, dim=-1), attention


def as_lists(results) -> list[list[dict]]:
    return [[{"tokens": h.tokens, "score": h.score, "log_prob": h.log_prob,
              "attention": None if h.attention is None else h.attention.tolist()} for h in hyps]
            for hyps in results]


def assert_same(python: list[list[dict]], js: list[list[dict]], what: str) -> None:
    assert len(python) == len(js), what
    for n, (p_hyps, j_hyps) in enumerate(zip(python, js)):
        assert [h["tokens"] for h in p_hyps] == [h["tokens"] for h in j_hyps], f"{what}, sentence {n}"
        for p, j in zip(p_hyps, j_hyps):
            assert p["log_prob"] == j["log_prob"], f"{what}, sentence {n}: float32 sums differ"
            assert math.isclose(p["score"], j["score"], rel_tol=1e-12, abs_tol=1e-12), f"{what}, sentence {n}"
            assert (p["attention"] is None) == (j["attention"] is None), f"{what}, sentence {n}"
            if p["attention"] is not None:
                assert p["attention"] == j["attention"], f"{what}, sentence {n}: attention differs"


def sources(rng: random.Random, vocab: int, count: int, longest: int) -> list[list[int]]:
    return [[rng.randrange(4, max(vocab, 5)) for _ in range(rng.randint(1, longest))] for _ in range(count)]


def test_search_matches_python(tmp_path):
    rng = random.Random(7)
    models, spec_models = [], []
    for seed, vocab in ((1, 12), (2, 150), (3, 5), (4, 40)):
        table, attention = scripted_tables(seed, states=97, vocab=vocab)
        models.append(ScriptedModel(table, attention))
        spec_models.append({"log_probs": table.tolist(), "attention": attention.tolist()})

    runs, expected = [], []
    # translate_ids: length-sorted batches, greedy for beam 1, beams of several sizes and alphas,
    # max lengths from ratios that float32 rounds (and short enough that EOS is often forced).
    for m, model in enumerate(models):
        vocab = model.table.size(1)
        src = sources(rng, vocab, 9, 12) + [[]]
        rng.shuffle(src)
        for beam in (1, 2, 3, 5, 8):
            for alpha, ratio, offset in ((0.0, 1.5, 3), (0.6, 0.7, 1), (1.0, 1.1, 2), (1.7, 0.3, 4)):
                nbest = min(beam, 3) if alpha == 0.6 else 1
                for attention in ((False, True) if beam in (1, 3) and alpha == 1.0 else (False,)):
                    runs.append({"kind": "translate", "model": m, "src": src, "beam_size": beam, "batch_size": 4,
                                 "alpha": alpha, "max_len_ratio": ratio, "max_len_offset": offset, "nbest": nbest,
                                 "return_attention": attention})
                    expected.append(translate_ids(model, src, beam_size=beam, batch_size=4, alpha=alpha,
                                                  max_len_ratio=ratio, max_len_offset=offset, nbest=nbest,
                                                  return_attention=attention))
    # greedy_search and beam_search with forced max lengths, 1 (EOS at once) included.
    for m, model in enumerate(models):
        src = sources(rng, model.table.size(1), 5, 6)
        tensor = torch.zeros(len(src), max(map(len, src)), dtype=torch.long)
        for i, s in enumerate(src):
            tensor[i, :len(s)] = torch.tensor(s)
        lengths = torch.tensor([len(s) for s in src])
        max_lengths = [1, 2, 3, 6, 25]
        for alpha in (0.0, 1.0):
            runs.append({"kind": "greedy", "model": m, "src": src, "max_lengths": max_lengths, "alpha": alpha,
                         "return_attention": True})
            expected.append(greedy_search(model, tensor, lengths, max_lengths=torch.tensor(max_lengths),
                                          alpha=alpha, return_attention=True))
            for beam, nbest in ((1, 1), (4, 1), (4, 4), (6, 2)):
                runs.append({"kind": "beam", "model": m, "src": src, "max_lengths": max_lengths, "alpha": alpha,
                             "beam_size": beam, "nbest": nbest, "return_attention": True})
                expected.append(beam_search(model, tensor, lengths, beam_size=beam, max_lengths=torch.tensor(max_lengths),
                                            alpha=alpha, nbest=nbest, return_attention=True))

    checks = [{"lengths": list(range(1, 301)), "ratio": ratio, "offset": offset}
              for ratio in (0.1, 0.3, 0.7, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0, 2.3, 3.3) for offset in (1, 10)]
    out = run_node("search_equal.mjs", {"models": spec_models, "runs": runs, "max_lengths": checks}, tmp_path)

    assert len(out["runs"]) == len(expected)
    lengths_seen = set()
    for run, python, js in zip(runs, expected, out["runs"]):
        what = {k: v for k, v in run.items() if k != "src"}
        assert_same(as_lists(python), js, str(what))
        lengths_seen.update(len(h.tokens) for hyps in python for h in hyps)
    assert len(lengths_seen) > 5, "the scripted model should give outputs of many lengths"
    assert len(out["max_lengths"]) == len(checks)
    for check, js in zip(checks, out["max_lengths"]):
        python = max_output_lengths(torch.tensor(check["lengths"]), check["ratio"], check["offset"]).tolist()
        assert python == js, f"max_len_ratio {check['ratio']}"


def test_beam_one_equals_greedy_in_js(tmp_path):
    """search.js's beam search with one beam finds greedy's hypotheses (as search.py's does)."""
    table, attention = scripted_tables(5, states=61, vocab=20)
    src = sources(random.Random(3), 20, 12, 8)
    lengths = [len(s) for s in src]
    max_lengths = max_output_lengths(torch.tensor(lengths), 1.5, 2).tolist()
    runs = [{"kind": "greedy", "model": 0, "src": src, "max_lengths": max_lengths, "alpha": 1.0,
             "return_attention": False},
            {"kind": "beam", "model": 0, "src": src, "max_lengths": max_lengths, "alpha": 1.0, "beam_size": 1,
             "nbest": 1, "return_attention": False}]
    out = run_node("search_equal.mjs", {"models": [{"log_probs": table.tolist(), "attention": attention.tolist()}],
                                        "runs": runs}, tmp_path)
    greedy, beam = out["runs"]
    assert [h[0]["tokens"] for h in greedy] == [h[0]["tokens"] for h in beam]
    assert [h[0]["log_prob"] for h in greedy] == [h[0]["log_prob"] for h in beam]


def test_banned_pieces_are_never_chosen_as_in_python(tmp_path):
    """search.js's withoutPieces (the page's ban of manifest.json's `banned`, the corpus tags) gives
    the hypotheses and scores of translator.py's WithoutPieces, for greedy and beam search."""
    from seq2seq.decoding.translator import WithoutPieces
    table, attention = scripted_tables(6, states=89, vocab=30)
    model = ScriptedModel(table, attention)
    # Ban the two pieces the scripted model likes best (EOS aside), so that the ban changes outputs.
    best = torch.bincount(table.argmax(1), minlength=30)
    best[3] = -1
    banned = best.topk(2).indices.tolist()
    src = sources(random.Random(9), 30, 12, 8)
    runs, expected = [], []
    for beam, nbest in ((1, 1), (3, 1), (4, 3)):
        settings = dict(beam_size=beam, batch_size=5, alpha=1.0, max_len_ratio=1.5, max_len_offset=3, nbest=nbest)
        unbanned = translate_ids(model, src, **settings)
        assert any(set(banned) & set(h.tokens) for hyps in unbanned for h in hyps), "the ban should matter"
        expected.append(translate_ids(WithoutPieces(model, banned), src, **settings))
        assert not any(set(banned) & set(h.tokens) for hyps in expected[-1] for h in hyps)
        runs.append({"kind": "translate", "model": 0, "src": src, "beam_size": beam, "batch_size": 5, "alpha": 1.0,
                     "max_len_ratio": 1.5, "max_len_offset": 3, "nbest": nbest, "return_attention": False,
                     "banned": banned})
    out = run_node("search_equal.mjs", {"models": [{"log_probs": table.tolist(), "attention": attention.tolist()}],
                                        "runs": runs}, tmp_path)
    assert len(out["runs"]) == len(expected) == len(runs)
    for run, python, js in zip(runs, expected, out["runs"]):
        assert_same(as_lists(python), js, f"beam {run['beam_size']}, banned {banned}")


# ---- text in and out ----

WORDS = ("a man woman dog rides bike street running über Straße Mädchen größer café naïve 東京 日本語 😀 "
         "ﬁne Ｆｕｌｌ ½ Ångström don't e-mail 3.14 $5 (x) «quoted» ¿qué? ﬀ ǅ").split()
ODD_SPACE = ["\t", "\u00a0", "\u3000", "\u2009", "\u200b", "\ufeff", "\x1c", "\x85", "\u2028", "\r", "\x0b", "  "]


def random_line(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(0, 14))]
    line = ""
    for w in words:
        line += w + (rng.choice(ODD_SPACE) if rng.random() < 0.15 else " ")
    if rng.random() < 0.3:
        line = rng.choice(ODD_SPACE) + line
    if rng.random() < 0.1:
        line = "<2de> " + line
    if rng.random() < 0.05:
        line = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randint(1, 20)))
    return line


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """A unigram and a BPE model with a language tag, and kept lists from part of the text (so that
    some pieces are spelled out in characters, as tokenizer.drop_unseen makes them)."""
    rng = random.Random(11)
    text = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    folder = tmp_path_factory.mktemp("spm")
    made = {}
    for kind, size in (("unigram", 160), ("bpe", 200)):
        path = folder / f"{kind}.model"
        tok = train_tokenizer(iter(text), path, vocab_size=size, model_type=kind, character_coverage=0.9995,
                              user_defined_symbols=["<2de>", "<2en>"])
        made[kind] = (path, seen_pieces(tok, text[:40] + ["<2de>"]))
    return made


@needs_sentencepiece_js
@pytest.mark.parametrize("kind", ["unigram", "bpe"])
@pytest.mark.parametrize("kept", [False, True])
def test_text_matches_python(tmp_path, tokenizers, kind, kept):
    path, kept_list = tokenizers[kind]
    tok = Tokenizer(path, kept_list if kept else None)
    if kept:
        assert any(len(s) > 1 for s in tok._spelled), "some pieces should be spelled out"
    rng = random.Random(5)
    lines = [random_line(rng) for _ in range(600)] + ["", "   ", "\u3000", "<2en> already tagged", "\ufeffbom"]
    max_len = 12
    cases = []
    for tag in (None, "<2de>"):
        ids, cut = encode_sources(lines, tok, max_len=max_len, tgt_lang=tag and tag[2:-1])
        cases.append({"src_tag": tag, "ids": ids, "cut": [list(c) for c in cut]})
    outputs = [[rng.randrange(0, len(tok)) for _ in range(rng.randint(0, 15))] for _ in range(400)]
    texts = [detokenize(tok, ids) for ids in outputs]
    pieces = [tok.pieces(ids) for ids in outputs]
    spec = {"model": str(path), "src_pieces": tok._spelled if kept else None, "tgt_kept": tok.kept,
            "max_len": max_len, "lines": lines, "tags": [c["src_tag"] for c in cases], "outputs": outputs}
    out = run_node("text_equal.mjs", spec, tmp_path)
    assert len(out["encoded"]) == len(cases)
    for case, js in zip(cases, out["encoded"]):
        assert len(js["ids"]) == len(case["ids"]), f"src_tag {case['src_tag']}"
        for n, (p, j) in enumerate(zip(case["ids"], js["ids"])):
            assert p == j, f"src_tag {case['src_tag']}, line {n} {lines[n]!r}"
        assert case["cut"] == js["cut"]
    assert len(out["texts"]) == len(texts)
    for n, (p, j) in enumerate(zip(texts, out["texts"])):
        assert p == j, f"output {n} {outputs[n]}"
    # Labels of the heatmap: the pieces of a target (kept list) and of a source (spelled map) alike.
    assert pieces == out["tgt_pieces"]
    src_ids = cases[0]["ids"]
    assert [tok.pieces(ids) for ids in src_ids] == out["src_pieces"]
