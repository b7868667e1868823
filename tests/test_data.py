"""Reading, checking, filtering and batching parallel data."""
import logging
import random

import pytest
import torch

from seq2seq.data import (DataError, ParallelData, batch_indices, encode_parallel, epoch_batches, make_batch, plan_batches,
                          read_lines, read_parallel)
from seq2seq.data.tokenizer import BOS, EOS, PAD


def random_lengths(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    return [rng.randint(1, 40) for _ in range(n)], [rng.randint(1, 40) for _ in range(n)]


@pytest.mark.parametrize("batch_tokens, batch_size", [(200, None), (None, 16), (300, 8), (40, 64)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_lose_and_duplicate_nothing_and_respect_limits(batch_tokens, batch_size, shuffle):
    src, tgt = random_lengths(500)
    batches = batch_indices(src, tgt, batch_tokens=batch_tokens, batch_size=batch_size, shuffle=shuffle, seed=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(500))  # every sentence exactly once
    for b in batches:
        assert b
        if batch_size is not None:
            assert len(b) <= batch_size
        if batch_tokens is not None:
            longest = max(max(src[i], tgt[i]) for i in b)
            # A single sentence longer than the budget still forms its own batch.
            assert len(b) * longest <= batch_tokens or len(b) == 1


def test_batches_group_similar_lengths():
    src, tgt = random_lengths(1000)
    batches = batch_indices(src, tgt, batch_tokens=None, batch_size=32, shuffle=True, seed=0)
    spreads = [max(tgt[i] for i in b) - min(tgt[i] for i in b) for b in batches]
    assert sum(spreads) / len(spreads) <= 2


def test_token_budget_fills_batches():
    # 100 sentences of length 10 with a budget of 105 tokens: exactly 10 per batch.
    batches = batch_indices([10] * 100, [10] * 100, batch_tokens=105, batch_size=None, shuffle=False)
    assert [len(b) for b in batches] == [10] * 10


def tiny_data(n: int = 300) -> ParallelData:
    src, tgt = random_lengths(n, seed=5)
    return ParallelData([[5] * s for s in src], [[6] * t for t in tgt])


def test_epoch_batches_are_reproducible_and_change_with_the_epoch():
    data = tiny_data()
    kwargs = dict(batch_tokens=300, batch_size=16)
    one = list(epoch_batches(data, seed=1, epoch=1, **kwargs))
    assert one == list(epoch_batches(data, seed=1, epoch=1, **kwargs))
    assert one != list(epoch_batches(data, seed=1, epoch=2, **kwargs))
    assert one != list(epoch_batches(data, seed=2, epoch=1, **kwargs))
    for other in (epoch_batches(data, seed=1, epoch=2, **kwargs), epoch_batches(data, seed=2, epoch=1, **kwargs)):
        assert sorted(i for b in other for i in b) == list(range(len(data)))


def test_epoch_batches_split_disjointly_across_ranks():
    data = tiny_data()
    shares = [epoch_batches(data, batch_tokens=None, batch_size=10, seed=1, epoch=1, rank=r, world_size=3)
              for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    seen = [i for s in shares for b in s for i in b]
    assert len(seen) == len(set(seen))


def test_make_batch_adds_bos_and_eos_and_pads():
    data = ParallelData([[7, 8, 9], [7]], [[10], [11, 12]])
    batch = make_batch(data, [0, 1])
    assert batch.src.tolist() == [[7, 8, 9], [7, PAD, PAD]]
    assert batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_in.tolist() == [[BOS, 10, PAD], [BOS, 11, 12]]
    assert batch.tgt_out.tolist() == [[10, EOS, PAD], [11, 12, EOS]]
    assert batch.num_tgt_tokens == 5
    assert batch.indices == [0, 1]
    assert batch.src.dtype == torch.long


def test_read_parallel_reads_aligned_lines(tmp_path):
    (tmp_path / "a.src").write_text("one\ntwo\r\n\nfour\n", encoding="utf-8")
    (tmp_path / "a.tgt").write_text("eins\nzwei\ndrei\nvier", encoding="utf-8")
    src, tgt = read_parallel(tmp_path / "a.src", tmp_path / "a.tgt")
    assert src == ["one", "two", "", "four"]
    assert tgt == ["eins", "zwei", "drei", "vier"]


def test_read_parallel_line_count_mismatch_names_both_files_and_counts(tmp_path):
    a, b = tmp_path / "x.en", tmp_path / "x.de"
    a.write_text("1\n2\n3\n", encoding="utf-8")
    b.write_text("1\n2\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_parallel(a, b)
    msg = str(info.value)
    assert str(a) in msg and str(b) in msg and "3" in msg and "2" in msg


def test_invalid_utf8_names_file_and_line(tmp_path):
    a, b = tmp_path / "y.en", tmp_path / "y.de"
    a.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    b.write_text("1\n2\n3\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_parallel(a, b)
    assert f"{a}:3:" in str(info.value)
    assert "skip_invalid_utf8" in str(info.value)


def test_invalid_utf8_can_be_skipped_keeping_pairs_aligned(tmp_path):
    a, b = tmp_path / "z.en", tmp_path / "z.de"
    a.write_bytes(b"one\n\xfe\nthree\n")
    b.write_bytes(b"eins\nzwei\n\xffdrei\n")
    assert read_parallel(a, b, skip_invalid_utf8=True) == (["one"], ["eins"])
    lines, bad = read_lines(a, skip_invalid_utf8=True)
    assert bad == [2] and lines[0] == "one" and lines[2] == "three"


def test_missing_file_and_directory_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_lines(tmp_path / "none.txt")
    with pytest.raises(DataError, match="is a directory"):
        read_lines(tmp_path)


class WordTokenizer:
    """One id per whitespace word (enough for encode_parallel)."""

    def encode_batch(self, texts):
        return [[4 + len(w) for w in t.split()] for t in texts]


def test_encode_parallel_drops_empty_and_over_long_pairs(caplog, monkeypatch):
    # The trainer stops "seq2seq" records at its own handlers; let caplog see them here.
    monkeypatch.setattr(logging.getLogger("seq2seq"), "propagate", True)
    src = ["a b", "", "a b c d e", "a", "x y", "a b c"]
    tgt = ["c d", "e", "f", "", "a b c d e f", "g"]
    with caplog.at_level("INFO", logger="seq2seq"):
        data = encode_parallel(src, tgt, WordTokenizer(), WordTokenizer(), max_src_len=3, max_tgt_len=4, name="toy")
    tok = WordTokenizer()
    assert data.src == tok.encode_batch(["a b", "a b c"])
    assert data.tgt == tok.encode_batch(["c d", "g"])
    assert "dropped 2 empty pairs and 2 pairs over the length limit" in caplog.text


def test_encode_parallel_without_limits_keeps_long_pairs():
    data = encode_parallel(["a " * 50], ["b " * 60], WordTokenizer(), WordTokenizer())
    assert len(data) == 1 and len(data.src[0]) == 50


def test_encode_parallel_with_nothing_left_is_an_error():
    with pytest.raises(DataError, match="no sentence pairs left"):
        encode_parallel(["", "a"], ["b", ""], WordTokenizer(), WordTokenizer(), name="empty")


def list_batches(src_lens, tgt_lens, *, batch_tokens, batch_size, seed):
    """The batching of earlier versions, over Python lists: what plan_batches must reproduce."""
    rng = random.Random(seed)
    order = list(range(len(src_lens)))
    rng.shuffle(order)
    order.sort(key=lambda i: (tgt_lens[i], src_lens[i]))
    batches, current, longest = [], [], 0
    for i in order:
        size = max(src_lens[i], tgt_lens[i])
        new_longest = max(longest, size)
        too_many = batch_size is not None and len(current) + 1 > batch_size
        too_big = batch_tokens is not None and new_longest * (len(current) + 1) > batch_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current, new_longest = [], size
        current.append(i)
        longest = new_longest
    batches.append(current)
    rng.shuffle(batches)
    return batches


@pytest.mark.parametrize("batch_tokens, batch_size", [(300, 16), (None, 10), (500, None)])
def test_batch_plans_are_the_batches_of_list_based_bucketing(batch_tokens, batch_size):
    src, tgt = random_lengths(2000, seed=9)
    plan = plan_batches(torch.tensor(src), torch.tensor(tgt), batch_tokens=batch_tokens, batch_size=batch_size,
                        shuffle=True, seed=4)
    assert list(plan) == list_batches(src, tgt, batch_tokens=batch_tokens, batch_size=batch_size, seed=4)


def test_bucketing_in_pools_still_covers_every_pair_once(monkeypatch):
    from seq2seq.data import batches as batches_module
    monkeypatch.setattr(batches_module, "POOL", 256)  # a corpus larger than one pool
    src, tgt = random_lengths(1000, seed=2)
    plan = plan_batches(torch.tensor(src), torch.tensor(tgt), batch_tokens=300, batch_size=16, shuffle=True, seed=1)
    assert sorted(i for b in plan for i in b) == list(range(1000))
    # within a pool, batches still hold pairs of similar length
    spread = [max(tgt[i] for i in b) - min(tgt[i] for i in b) for b in plan]
    assert sum(spread) / len(spread) < 2


# -- building batches: one tensor per field, and the background prefetcher -----------------------

def reference_batch(pairs: list[tuple[list[int], list[int]]]) -> dict[str, list]:
    """A batch built row by row, the plain way: what make_batch must give."""
    def padded(rows):
        width = max(len(r) for r in rows)
        return [r + [PAD] * (width - len(r)) for r in rows]
    return {"src": padded([s for s, _ in pairs]), "src_lengths": [len(s) for s, _ in pairs],
            "tgt_in": padded([[BOS] + t for _, t in pairs]), "tgt_out": padded([t + [EOS] for _, t in pairs]),
            "num_tgt_tokens": sum(len(t) + 1 for _, t in pairs)}


def random_pairs(n: int, vocab: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    return [([rng.randrange(4, vocab) for _ in range(rng.randint(1, 30))],
             [rng.randrange(4, vocab) for _ in range(rng.randint(1, 30))]) for _ in range(n)]


def write_store(directory, pairs, id_code: str):
    from seq2seq.data.format import Store, Writer, write_meta
    writer = Writer(directory, id_code, "B")
    writer.write("src", [s for s, _ in pairs])
    writer.write("tgt", [t for _, t in pairs])
    writer.close()
    write_meta(directory, {"pairs": len(pairs), "id_type": id_code, "len_type": "B", "corpora": []})
    return Store.open(directory)


@pytest.mark.parametrize("id_code, vocab", [("H", 60000), ("i", 100000)])
def test_make_batch_equals_a_row_by_row_build_from_memory_and_from_a_store(tmp_path, id_code, vocab):
    pairs = random_pairs(200, vocab, seed=len(id_code) + vocab)
    sources = {"memory": ParallelData([s for s, _ in pairs], [t for _, t in pairs]),
               "store": write_store(tmp_path, pairs, id_code)}
    rng = random.Random(1)
    for _ in range(20):
        indices = rng.sample(range(len(pairs)), rng.randint(1, 40))
        expected = reference_batch([pairs[i] for i in indices])
        for name, data in sources.items():
            batch = make_batch(data, indices)
            got = {"src": batch.src.tolist(), "src_lengths": batch.src_lengths.tolist(),
                   "tgt_in": batch.tgt_in.tolist(), "tgt_out": batch.tgt_out.tolist(),
                   "num_tgt_tokens": batch.num_tgt_tokens}
            assert got == expected, name
            assert batch.indices == indices and batch.src.dtype == batch.tgt_in.dtype == torch.long


def test_pad_equals_a_row_by_row_pad():
    from seq2seq.data import pad
    rows = [[5, 6, 7], [8], [9, 10]]
    assert pad(rows).tolist() == [[5, 6, 7], [8, PAD, PAD], [9, 10, PAD]]


def test_prefetcher_gives_the_items_in_order_and_raises_what_building_raised():
    from seq2seq.data.batches import Prefetcher
    with Prefetcher(iter(range(100)), ahead=3) as items:
        assert list(items) == list(range(100))

    def broken():
        yield 1
        raise DataError("pair 2 is unreadable")
    with Prefetcher(broken()) as items, pytest.raises(DataError, match="unreadable"):
        list(items)


def test_prefetcher_stops_its_thread_when_left_mid_stream():
    from seq2seq.data.batches import Prefetcher
    built = []

    def endless():
        n = 0
        while True:
            built.append(n)
            yield n
            n += 1
    with Prefetcher(endless(), ahead=2) as items:
        first = [x for _, x in zip(range(5), items)]
    assert first == [0, 1, 2, 3, 4]
    assert not items._thread.is_alive() and len(built) <= 5 + 2 + 1  # at most `ahead` (+ one in hand) built ahead
