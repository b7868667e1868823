"""`seq2seq info` names a run's training data, whatever shape the config stored in its
checkpoint gives data.train: a list of weighted corpora, or an old checkpoint's single path."""
import shutil
from pathlib import Path

import pytest

from conftest import tiny_config_dict
from seq2seq.run.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.config import TrainCorpus, config_from_dict, to_dict
from seq2seq.run.info import format_info, run_info
from seq2seq.model.model import build_model
from seq2seq.run.rundir import RunDir, open_run
from seq2seq.training.begin import prepare


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory, synthetic_dir) -> Path:
    """A run directory with tokenizers and an untrained model's best.pt (info needs no training)."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = config_from_dict(tiny_config_dict(synthetic_dir))
    prepare(cfg, run_dir, quiet=True)
    src_tok, tgt_tok = RunDir(run_dir).open_tokenizers(cfg)
    model = build_model(cfg.model, src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok))
    save_checkpoint(RunDir(run_dir).best, {"config": to_dict(cfg), "model": model.state_dict(), "step": 0})
    return run_dir


def with_stored_train(run: Path, run_dir: Path, train) -> Path:
    """A copy of `run` whose best.pt stores `train` as its data.train."""
    shutil.copytree(run, run_dir)
    path = RunDir(run_dir).best
    ckpt = load_checkpoint(path)
    ckpt["config"]["data"]["train"] = train
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    return run_dir


def test_info_names_every_corpus_of_a_run_trained_on_several(untrained_run, tmp_path):
    train = [{"path": "data/a/train", "weight": 0.7}, {"path": "data/b/train", "weight": 0.3}]
    info = run_info(with_stored_train(untrained_run, tmp_path / "run", train))
    expected = "data/a/train.{src,tgt} (weight 0.7), data/b/train.{src,tgt} (weight 0.3)"
    assert info["config"]["data"] == expected
    assert f"data      {expected}" in format_info(info)


def test_an_old_checkpoint_whose_config_has_one_path_still_opens(untrained_run, tmp_path):
    run_dir = with_stored_train(untrained_run, tmp_path / "run", "data/old/train")
    assert open_run(run_dir).config.data.train == [TrainCorpus("data/old/train", 1.0)]
    assert run_info(run_dir)["config"]["data"] == "data/old/train.{src,tgt}"
