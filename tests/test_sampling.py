"""Streamed samples: the reservoir's draws (pinned: the tokenizer sample, and so a seeded run's
weights, depend on them), uniformity, bounded memory, and the sample of several corpora."""
import random
from collections import Counter

import pytest

from conftest import tiny_config_dict, write_synthetic
from seq2seq.config import config_from_dict
from seq2seq.data import DataError
from seq2seq.data.sampling import reservoir, sample_pairs, tokenizer_sample


def lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_reservoir_draws_are_pinned():
    # A change here changes every tokenizer sample over tokenizer.sample_size, and so trained weights.
    assert reservoir(range(100), 5, random.Random(1)) == ([2, 37, 55, 77, 97], 100)


def test_a_stream_that_fits_is_taken_whole_without_drawing():
    rng = random.Random(7)
    state = rng.getstate()
    assert reservoir(iter("abc"), 5, rng) == (["a", "b", "c"], 3)
    assert rng.getstate() == state


def test_reservoir_is_uniform_and_in_stream_order():
    counts = Counter()
    for seed in range(2000):
        kept, seen = reservoir(range(20), 5, random.Random(seed))
        assert seen == 20 and kept == sorted(kept) and len(set(kept)) == 5
        counts.update(kept)
    # each item kept with chance 5/20: 500 of 2000 times, give or take a few standard deviations
    assert all(abs(counts[i] - 500) < 100 for i in range(20)), counts


def test_reservoir_reads_the_stream_once_and_holds_only_the_sample():
    held = {"most": 0}
    alive = set()

    class Item:
        def __init__(self, n):
            self.n = n
            alive.add(n)
            held["most"] = max(held["most"], len(alive))

        def __del__(self):
            alive.discard(self.n)

    kept, seen = reservoir((Item(n) for n in range(10_000)), 10, random.Random(0))
    assert seen == 10_000 and len(kept) == 10
    assert held["most"] <= 12  # the sample, the item in hand and the one just replaced


def test_the_sample_streams_every_corpus_in_order_and_tags_sources(tmp_path):
    a = write_synthetic(tmp_path / "a", train=300, valid=5, test=5, seed=1)
    b = write_synthetic(tmp_path / "b", train=500, valid=5, test=5, seed=2)
    raw = tiny_config_dict(a, data={"src_prefix_tag": True})
    raw["data"]["train"] = [{"path": str(a / "train"), "weight": 3.0}, {"path": str(b / "train")}]
    data = config_from_dict(raw).data
    every = list(zip(lines(a / "train.src") + lines(b / "train.src"), lines(a / "train.tgt") + lines(b / "train.tgt")))
    src, tgt, seen = sample_pairs(data, 200, seed=4)
    assert seen == 800 and len(src) == len(tgt) == 200
    kept, _ = reservoir(iter(every), 200, random.Random(4))  # the same draws over the same stream
    assert tgt == [t for _, t in kept]
    assert src == [f"<2tgt> {s}" for s, _ in kept]
    assert any(t in lines(a / "train.tgt") for t in tgt) and any(t in lines(b / "train.tgt") for t in tgt)
    # weights say how often an epoch draws a corpus, not how much of it the tokenizer sees
    assert tokenizer_sample(data, size=10_000, seed=4) == ([f"<2tgt> {s}" for s, _ in every], [t for _, t in every])


def test_a_sample_without_text_names_every_corpus(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.src").write_text("\n\n")
        (tmp_path / f"{name}.tgt").write_text(" \n\n")
    raw = tiny_config_dict(tmp_path)
    raw["data"]["train"] = [{"path": str(tmp_path / "a")}, {"path": str(tmp_path / "b"), "weight": 0.5}]
    with pytest.raises(DataError, match=r"a\.\{src,tgt\} \(weight 1\), .*b\.\{src,tgt\} \(weight 0\.5\): "
                                        r"no non-empty sentence pairs"):
        tokenizer_sample(config_from_dict(raw).data, size=10, seed=1)
