"""The prepared store: what it holds, when it is rebuilt, what an interrupted prepare leaves,
weighted corpora, filters, workers and a full disk."""
import errno
import json
import logging
import random
import shutil
from pathlib import Path

import pytest
import torch

from conftest import small_filesystem, tiny_config_dict, write_synthetic
from seq2seq.cli import main
from seq2seq.config import config_from_dict
from seq2seq.data import epoch_batches, tag_sources
from seq2seq.data import format as format_module
from seq2seq.data import prepare as prepare_module
from seq2seq.data.format import Store
from seq2seq.data.prepare import open_or_prepare
from seq2seq.data.sampling import epoch_pool
from seq2seq.errors import TrainingError
from seq2seq.rundir import RunDir
from seq2seq.start import prepare


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_store_holds_exactly_the_tokenizers_ids_of_every_kept_pair(tmp_path, synthetic_dir):
    cfg = config_from_dict(tiny_config_dict(synthetic_dir, data={"src_prefix_tag": True, "max_src_len": 12},
                                            tokenizer={"drop_unseen": True}))
    store = prepare(cfg, tmp_path / "run", quiet=True)
    src_tok, tgt_tok = RunDir(tmp_path / "run").open_tokenizers(cfg)
    src = tag_sources(lines(synthetic_dir / "train.src"), "tgt")
    tgt = lines(synthetic_dir / "train.tgt")
    expected = [(s, t) for s, t in zip(src_tok.encode_batch(src), tgt_tok.encode_batch(tgt)) if len(s) <= 12]
    assert 0 < len(expected) < len(src)  # the length filter dropped some
    assert len(store) == len(expected)
    assert [store.pair(i) for i in range(len(store))] == expected
    src_lens, tgt_lens = store.lengths()
    assert src_lens.tolist() == [len(s) for s, _ in expected] and tgt_lens.tolist() == [len(t) for _, t in expected]
    assert store.meta["id_type"] == "H" and store.meta["len_type"] == "B"  # 2 bytes an id, 1 a length


def prepared(cfg, run_dir: Path) -> Store:
    rd = RunDir(run_dir)
    src_tok, tgt_tok = rd.open_tokenizers(cfg)
    return open_or_prepare(cfg.data, rd.prepared, src_tok, tgt_tok, [*rd.tokenizer_files(cfg), *rd.kept_files()],
                           prepare=True, quiet=True)


def test_a_store_whose_inputs_changed_is_rebuilt(tmp_path, synthetic_dir, caplog):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    raw = tiny_config_dict(data)
    cfg = config_from_dict(raw)
    first = prepare(cfg, tmp_path / "run", quiet=True)
    caplog.set_level(logging.INFO, logger="seq2seq")
    logging.getLogger("seq2seq").propagate = True
    assert len(prepared(cfg, tmp_path / "run")) == len(first)
    assert "using the prepared store" in caplog.text
    # the data changed: the same number of bytes, another modification time
    train = data / "train.tgt"
    text = train.read_text()
    train.write_text(text.replace("ALPHA", "ALPHX", 1))
    rebuilt = prepared(cfg, tmp_path / "run")
    assert "out of date (inputs changed)" in caplog.text
    assert rebuilt.meta["fingerprint"] != first.meta["fingerprint"]
    # a filter changed
    tighter = config_from_dict({**raw, "data": {**raw["data"], "max_tgt_len": 8}})
    assert len(prepared(tighter, tmp_path / "run")) < len(rebuilt)
    assert "out of date (settings changed)" in caplog.text


def test_an_interrupted_prepare_leaves_nothing_a_later_run_trusts(tmp_path, synthetic_dir, monkeypatch):
    cfg = config_from_dict(tiny_config_dict(synthetic_dir))
    run = tmp_path / "run"
    monkeypatch.setattr(prepare_module, "CHUNK", 500)
    real = prepare_module.encode_pairs
    calls = {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(prepare_module, "encode_pairs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, run, quiet=True)
    assert not RunDir(run).prepared.exists()
    assert not list(run.glob(".prepared.tmp*"))
    # a kill -9 leaves its temporary directory: never read, and cleared by the next prepare
    (run / ".prepared.tmp999").mkdir()
    (run / ".prepared.tmp999" / "meta.json").write_text("{}")
    monkeypatch.setattr(prepare_module, "encode_pairs", real)
    store = prepare(cfg, run, quiet=True)
    assert store.meta["counts"]["read"] == 3000 and not list(run.glob(".prepared.tmp*"))


def test_weighted_corpora_are_drawn_in_proportion(tmp_path):
    small = write_synthetic(tmp_path / "a", train=1000, valid=20, test=10, seed=1)
    large = write_synthetic(tmp_path / "b", train=3000, valid=20, test=10, seed=2)
    raw = tiny_config_dict(small, data={"max_src_len": 100, "max_tgt_len": 100})
    raw["data"]["train"] = [{"path": str(small / "train"), "weight": 0.7}, {"path": str(large / "train"), "weight": 0.3}]
    cfg = config_from_dict(raw)
    store = prepare(cfg, tmp_path / "run", quiet=True)
    assert store.corpus_ranges() == [(0, 1000), (1000, 4000)]
    drawn = {0: 0, 1: 0}
    for epoch in range(1, 11):
        pool = epoch_pool(store, [0.7, 0.3], seed=1, epoch=epoch)
        assert len(pool) == 4000
        for batch in epoch_batches(store, batch_tokens=None, batch_size=32, seed=1, epoch=epoch, pool=pool):
            for i in batch:
                drawn[int(i >= 1000)] += 1
    share = drawn[0] / (drawn[0] + drawn[1])
    assert abs(share - 0.7) < 0.01, share
    # the small corpus repeats (2,800 draws of 1,000 pairs a epoch), each pair about equally often
    one_epoch = epoch_pool(store, [0.7, 0.3], seed=1, epoch=1)
    counts = torch.bincount(one_epoch[one_epoch < 1000], minlength=1000)
    assert counts.min() >= 2 and counts.max() <= 3


def test_every_filter_is_counted(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    rng = random.Random(0)
    words = ["ka", "lo", "mi", "nu", "pe"]
    good = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 5))) for _ in range(200)]
    src = good + ["", "same words here", "ka " * 30, "ka lo", "x"]
    tgt = [s.upper() for s in good] + ["EMPTY SOURCE", "same words here", "KA", "KA LO MI NU PE KA LO MI NU PE", "Y"]
    (d / "train.src").write_bytes(("\n".join(src) + "\n").encode() + b"bad \xff byte\n")
    (d / "train.tgt").write_bytes(("\n".join(tgt) + "\n").encode() + b"BAD BYTE\n")
    for split in ("valid", "test"):
        (d / f"{split}.src").write_text("\n".join(good[:10]) + "\n")
        (d / f"{split}.tgt").write_text("\n".join(s.upper() for s in good[:10]) + "\n")
    cfg = config_from_dict(tiny_config_dict(d, data={"max_len_ratio": 3.0, "skip_invalid_utf8": True}))
    store = prepare(cfg, tmp_path / "run", quiet=True)
    log = (tmp_path / "run" / "train.log").read_text()
    counts = store.meta["counts"]
    # "ka " * 30 is over max_src_len 20 pieces; "ka lo" -> ten words is over the ratio; "x"/"Y" pass
    assert {k: counts[k] for k in ("empty", "identical", "too_long", "ratio", "invalid_utf8")} == \
        {"empty": 1, "identical": 1, "too_long": 1, "ratio": 1, "invalid_utf8": 1}
    assert counts["read"] == 205 and counts["kept"] == len(store) == 201
    assert "dropped 1 empty pairs and 1 pairs over the length limit (20/20 pieces); 201 remain (also dropped: " \
           "1 with the source identical to the target, 1 over data.max_len_ratio=3.0)" in log
    assert "skipped 1 pairs with invalid UTF-8" in log


def test_workers_write_the_same_store(tmp_path, synthetic_dir, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK", 700)  # several chunks, handed out to both workers
    one = prepare(config_from_dict(tiny_config_dict(synthetic_dir)), tmp_path / "one", quiet=True)
    cfg = config_from_dict(tiny_config_dict(synthetic_dir, data={"num_workers": 2}))
    two = RunDir(tmp_path / "two")
    two.path.mkdir()
    shutil.copy(tmp_path / "one" / "spm.joint.model", two.path)  # the same tokenizer, no second training
    store = prepare(cfg, two.path, quiet=True)
    for name in ("src.ids", "tgt.ids", "src.off", "tgt.off", "src.len", "tgt.len"):
        assert (one.directory / name).read_bytes() == (store.directory / name).read_bytes(), name


def test_runs_share_a_store_in_the_cache_directory(tmp_path, synthetic_dir):
    cfg = config_from_dict(tiny_config_dict(synthetic_dir, data={"cache_dir": str(tmp_path / "cache")}))
    first = prepare(cfg, tmp_path / "a", quiet=True)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "spm.joint.model", tmp_path / "b")  # the same tokenizer: the same store
    second = prepare(cfg, tmp_path / "b", quiet=True)
    assert second.directory == first.directory and first.directory.parent == tmp_path / "cache"
    assert "using the prepared store" in (tmp_path / "b" / "train.log").read_text()


def test_a_full_disk_while_preparing_is_one_line_and_leaves_no_store(tmp_path, synthetic_dir, capsys, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny_config_dict(synthetic_dir)))
    real = format_module.Writer.write
    calls = {"n": 0}

    def write(self, side, seqs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, side, seqs)

    monkeypatch.setattr(format_module.Writer, "write", write)
    run = tmp_path / "run"
    assert main(["prepare", "--config", str(config), "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full while writing the prepared store" in err[0]
    assert "data.cache_dir" in err[0]
    assert not RunDir(run).prepared.exists() and not list(run.glob(".prepared.tmp*"))
    with pytest.raises(TrainingError):
        prepare(config_from_dict(tiny_config_dict(synthetic_dir)), run, quiet=True)


def test_a_real_full_filesystem_while_preparing_is_one_line_and_leaves_no_store(tmp_path, synthetic_dir, capsys):
    with small_filesystem(tmp_path / "fs", "64k") as fs:
        config = tmp_path / "c.yaml"
        config.write_text(json.dumps(tiny_config_dict(synthetic_dir, data={"cache_dir": str(fs / "cache")})))
        assert main(["prepare", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "the disk is full while writing the prepared store" in err[0], err
        assert str(fs / "cache") in err[0] and "free space there" in err[0]
        assert list((fs / "cache").iterdir()) == [], "nothing half-written may stay"


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), OSError(errno.EROFS, "Read-only file system")],
                         ids=["EIO", "EROFS"])
def test_any_failure_while_writing_the_store_is_one_line(tmp_path, synthetic_dir, capsys, monkeypatch, error):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny_config_dict(synthetic_dir)))

    def write(self, side, seqs):
        raise error

    monkeypatch.setattr(format_module.Writer, "write", write)
    run = tmp_path / "run"
    assert main(["prepare", "--config", str(config), "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{RunDir(run).prepared}: cannot write the prepared store ({error.strerror})" in err[0]
    assert not RunDir(run).prepared.exists() and not list(run.glob(".prepared.tmp*"))


def test_a_model_too_large_for_memory_is_one_line(tmp_path, synthetic_dir, capsys, monkeypatch):
    import seq2seq.start as start_module
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny_config_dict(synthetic_dir)))

    def too_large(*args, **kwargs):  # what torch raises when the CPU allocator gives up
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 85899345920 bytes. Error code 12")

    monkeypatch.setattr(start_module, "build_model", too_large)
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0] and "tokenizer.vocab_size" in err[0]
