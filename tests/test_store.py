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

from conftest import needs_root, small_filesystem, tiny_config_dict, write_synthetic
from seq2seq.cli import main
from seq2seq.config import config_from_dict
from seq2seq.data import epoch_batches, iterate_batches, tag_sources
from seq2seq.data import format as format_module
from seq2seq.data import prepare as prepare_module
from seq2seq.data.format import Store
from seq2seq.data.prepare import fingerprint, open_or_prepare
from seq2seq.data.sampling import epoch_pool
from seq2seq.errors import TrainingError
from seq2seq.run.rundir import RunDir
from seq2seq.decoding.search import Sampling, translate_ids
from seq2seq.training.begin import prepare


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
    real = prepare_module.encode_chunk
    calls = {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(prepare_module, "encode_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, run, quiet=True)
    assert not RunDir(run).prepared.exists()
    assert not list(run.glob(".prepared.tmp*"))
    # a kill -9 leaves its temporary directory: never read, and cleared by the next prepare
    (run / ".prepared.tmp999").mkdir()
    (run / ".prepared.tmp999" / "meta.json").write_text("{}")
    monkeypatch.setattr(prepare_module, "encode_chunk", real)
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


@needs_root
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
    import seq2seq.training.begin as start_module
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny_config_dict(synthetic_dir)))

    def too_large(*args, **kwargs):  # what torch raises when the CPU allocator gives up
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 85899345920 bytes. Error code 12")

    monkeypatch.setattr(start_module, "build_model", too_large)
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0] and "tokenizer.vocab_size" in err[0]


# ---------------------------------------------------------------------------------------
# Corpus tags (tagged back-translation) and random segmentations (subword regularisation)


def two_corpora(tmp_path: Path, **sections) -> dict:
    """A config over a real corpus and a second one tagged <bt> (a stand-in for back-translations)."""
    real = write_synthetic(tmp_path / "real", train=400, valid=20, test=10, seed=1)
    synthetic = write_synthetic(tmp_path / "bt", train=300, valid=5, test=5, seed=2)
    raw = tiny_config_dict(real, **sections)
    raw["data"]["train"] = [{"path": str(real / "train")}, {"path": str(synthetic / "train"), "tag": "<bt>"}]
    return raw


def test_a_corpus_tag_is_the_first_piece_of_exactly_that_corpus_s_sources(tmp_path):
    cfg = config_from_dict(two_corpora(tmp_path))
    store = prepare(cfg, tmp_path / "run", quiet=True)
    src_tok, tgt_tok = RunDir(tmp_path / "run").open_tokenizers(cfg)
    tag = src_tok.piece_to_id("\u2581<bt>")
    assert src_tok.encode("<bt>") == [tag] and src_tok.id_to_piece(tag) == "\u2581<bt>"
    (real_start, real_end), (bt_start, bt_end) = store.corpus_ranges()
    assert bt_end - bt_start > 200 and real_end - real_start > 300
    assert all(tag not in store.pair(i)[0] for i in range(real_start, real_end))
    # A tagged source is the tag, then the source's own pieces, exactly as encoded alone.
    pairs = zip(lines(tmp_path / "bt" / "train.src"), lines(tmp_path / "bt" / "train.tgt"))
    expected = [[tag] + src_tok.encode(s) for s, t in pairs
                if len(src_tok.encode(s)) < 20 and len(tgt_tok.encode(t)) <= 20]
    assert [store.pair(i)[0] for i in range(bt_start, bt_end)] == expected


def test_the_tags_are_part_of_the_store_s_fingerprint(tmp_path, caplog):
    raw = two_corpora(tmp_path)
    untagged = {**raw, "data": {**raw["data"], "train": [{"path": c["path"]} for c in raw["data"]["train"]]}}
    plain = fingerprint(config_from_dict(untagged).data, [])
    assert set(plain) == {"version", "inputs", "tokenizers", "settings"}  # stores prepared before tags stay valid
    tagged = fingerprint(config_from_dict(raw).data, [])
    assert tagged["tags"] == [None, "<bt>"] and {k: v for k, v in tagged.items() if k != "tags"} == plain
    cfg = config_from_dict(raw)
    first = prepare(cfg, tmp_path / "run", quiet=True)
    caplog.set_level(logging.INFO, logger="seq2seq")
    logging.getLogger("seq2seq").propagate = True
    raw["data"]["train"][1]["tag"] = "<BT>"
    # (the tokenizer was trained for <bt>: only the store is compared here, with the same tokenizer files)
    again = prepared(config_from_dict(raw), tmp_path / "run")
    assert "out of date (tags changed)" in caplog.text and again.meta["fingerprint"]["tags"] == [None, "<BT>"]
    assert again.meta["fingerprint"] != first.meta["fingerprint"]


def test_a_tokenizer_without_the_tag_is_refused_in_one_line(tmp_path, capsys):
    raw = two_corpora(tmp_path)
    tag = raw["data"]["train"][1].pop("tag")
    run = tmp_path / "run"
    prepare(config_from_dict(raw), run, quiet=True)
    RunDir(run).tokenizer_record.unlink()  # tokenizers of unknown origin are used as they are
    raw["data"]["train"][1]["tag"] = tag
    config = tmp_path / "tagged.yaml"
    config.write_text(json.dumps(raw))
    assert main(["prepare", "--config", str(config), "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.train[1].tag: <bt> is not one piece of the source tokenizer" in err[0], err
    # With its record, the tokenizer is trained again for the tag.
    (tmp_path / "run2").mkdir()
    prepare(config_from_dict({**raw, "data": {**raw["data"], "train": [raw["data"]["train"][0]]}}), tmp_path / "run2",
            quiet=True)
    store = prepare(config_from_dict(raw), tmp_path / "run2", quiet=True)
    assert "training it again" in (tmp_path / "run2" / "train.log").read_text()
    assert store.pair(len(store) - 1)[0][0] == RunDir(tmp_path / "run2").open_tokenizers(
        config_from_dict(raw))[0].piece_to_id("\u2581<bt>")


def test_translation_never_adds_the_tag_nor_writes_it(tmp_path):
    from seq2seq.training.loop import train
    from seq2seq.decoding.translator import Translator, WithoutPieces
    cfg = config_from_dict(two_corpora(tmp_path, training={"max_steps": 5}))
    train(cfg, tmp_path / "run", quiet=True)
    translator = Translator.load(tmp_path / "run", device="cpu")
    tag = translator.src_tok.piece_to_id("\u2581<bt>")
    sources = lines(tmp_path / "real" / "test.src")
    assert all(tag not in ids for ids in translator.encode_sources(sources))
    assert translator.encode_sources(sources) == [translator.src_tok.encode(s) for s in sources]
    # A model that wants nothing but the tag (its output bias raised far above the rest) still never writes it.
    assert isinstance(translator.model, WithoutPieces)
    out_tag = translator.tgt_tok.piece_to_id("\u2581<bt>")
    with torch.no_grad():
        translator.model.inner.output.bias[out_tag] += 100.0
    raw = translate_ids(translator.model.inner, translator.encode_sources(sources[:3]), beam_size=1, batch_size=8,
                        alpha=0.0, max_len_ratio=1.0, max_len_offset=3)
    assert all(out_tag in h[0].tokens for h in raw)  # without the guard it would
    for options in ({"beam_size": 1}, {"beam_size": 3}, {"sampling": Sampling(seed=1)}):
        assert not any("<bt>" in text for text in translator.translate(sources, **options))


def sampled_config(tmp_path: Path, **sampling) -> dict:
    return two_corpora(tmp_path, tokenizer={"vocab_size": 100, **({"model_type": "unigram"} if "alpha" in sampling
                                                                   else {}), "sampling": sampling})


@pytest.mark.parametrize("sampling", [{"dropout": 0.3, "copies": 3}, {"alpha": 0.2, "copies": 2},
                                      {"alpha": 0.5, "nbest_size": 4, "copies": 2}])
def test_each_epoch_sees_another_segmentation_of_the_same_pairs(tmp_path, sampling):
    cfg = config_from_dict(sampled_config(tmp_path, **sampling))
    store = prepare(cfg, tmp_path / "run", quiet=True)
    src_tok, tgt_tok = RunDir(tmp_path / "run").open_tokenizers(cfg)
    copies = sampling["copies"]
    assert store.meta["sampled_copies"] == copies and store.for_epoch(1) is not store
    epochs = [store.for_epoch(e) for e in range(1, copies + 2)]
    assert epochs[copies] is epochs[0]  # epoch copies + 1 trains on copy 0 again
    tag = src_tok.piece_to_id("\u2581<bt>")
    bt_start, bt_end = store.corpus_ranges()[1]
    for a, b in zip(epochs, epochs[1:copies]):
        changed = [i for i in range(len(store)) if a.pair(i) != b.pair(i)]
        assert len(changed) > 0.1 * len(store)  # two epochs cut many sentences differently
    for e in epochs[:copies]:
        assert len(e) == len(store) and e.corpus_ranges() == store.corpus_ranges()
        src_lens, tgt_lens = e.lengths()
        for i in range(len(store)):
            src, tgt = e.pair(i)
            # the same text (and the tag still one piece, first) in other pieces, within the length limits
            assert src_tok.decode(src) == src_tok.decode(store.pair(i)[0])
            assert tgt_tok.decode(tgt) == tgt_tok.decode(store.pair(i)[1])
            assert (src[0] == tag) == (bt_start <= i < bt_end)
            assert len(src) == src_lens[i] <= 20 and len(tgt) == tgt_lens[i] <= 20
    # Random segmentations are longer: the pieces are smaller.
    assert sum(epochs[0].lengths()[0].tolist()) > sum(store.lengths()[0].tolist())
    # The settings and the seed are in the fingerprint: changing them prepares the store again.
    assert store.meta["fingerprint"]["sampling"]["copies"] == copies
    assert store.meta["fingerprint"]["sampling"]["seed"] == cfg.training.seed


def test_workers_draw_random_segmentations_of_the_same_pairs(tmp_path, monkeypatch):
    # (SentencePiece's draws are not reproducible from one process to another, so the copies that
    # workers draw are other random segmentations than one process draws: only their text must agree.)
    monkeypatch.setattr(prepare_module, "CHUNK", 150)  # several chunks, handed out to both workers
    raw = sampled_config(tmp_path, dropout=0.3, copies=2)
    raw["data"]["num_workers"] = 2
    cfg = config_from_dict(raw)
    store = prepare(cfg, tmp_path / "run", quiet=True)
    src_tok, tgt_tok = RunDir(tmp_path / "run").open_tokenizers(cfg)
    for k in (1, 2):
        copy = store.for_epoch(k)
        assert [src_tok.decode(copy.pair(i)[0]) for i in range(len(store))] == \
            [src_tok.decode(store.pair(i)[0]) for i in range(len(store))]
        assert [tgt_tok.decode(copy.pair(i)[1]) for i in range(len(store))] == \
            [tgt_tok.decode(store.pair(i)[1]) for i in range(len(store))]
        assert sum(copy.pair(i) != store.pair(i) for i in range(len(store))) > 0.3 * len(store)


def test_training_reads_the_epoch_s_segmentation_and_validation_the_deterministic_one(tmp_path, monkeypatch):
    import seq2seq.training.loop as trainer_module
    from seq2seq.training.begin import begin
    raw = sampled_config(tmp_path, dropout=0.3, copies=2)
    raw["training"].update(max_epochs=3, batch_size=200)
    read = []
    real = trainer_module.iterate_batches

    def recording(data, batches, start=0):
        read.append(data.directory.name)
        return real(data, batches, start)

    monkeypatch.setattr(trainer_module, "iterate_batches", recording)
    session = begin(config_from_dict(raw), tmp_path / "run", quiet=True)
    trainer_module.fit(session, quiet=True)
    assert read == ["sampled.0", "sampled.1", "sampled.0"]
    # Validation sources are cut as translate cuts them, whatever tokenizer.sampling says.
    valid_src = lines(tmp_path / "real" / "valid.src")
    assert session.valid.src_ids == [session.src_tok.encode(s) for s in valid_src]
    assert session.valid.src_ids == begin(config_from_dict(raw), tmp_path / "run", resume=True,
                                          quiet=True).valid.src_ids


def test_without_sampling_epochs_read_the_store_itself_and_batches_are_unchanged(tmp_path, synthetic_dir):
    cfg = config_from_dict(tiny_config_dict(synthetic_dir))
    store = prepare(cfg, tmp_path / "run", quiet=True)
    assert "sampled_copies" not in store.meta and not list(store.directory.glob("sampled.*"))
    assert "sampling" not in store.meta["fingerprint"]
    reopened = Store.open(store.directory)
    for epoch in (1, 2):
        assert store.for_epoch(epoch) is store
        new = epoch_batches(store.for_epoch(epoch), batch_tokens=None, batch_size=64, seed=1, epoch=epoch)
        old = epoch_batches(reopened, batch_tokens=None, batch_size=64, seed=1, epoch=epoch)
        assert list(new) == list(old)
        for a, b in zip(iterate_batches(store.for_epoch(epoch), new), iterate_batches(reopened, old)):
            assert torch.equal(a.src, b.src) and torch.equal(a.tgt_in, b.tgt_in) and torch.equal(a.tgt_out, b.tgt_out)
