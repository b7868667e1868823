"""The run directory: its paths, the one checkpoint fallback rule, and opening a run."""
import shutil

import pytest
import torch

from conftest import tiny_config_dict
from seq2seq.run.checkpoint import load_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.errors import CheckpointError
from seq2seq.run.rundir import RunDir, open_run


def test_tokenizer_files_follow_the_config(tmp_path, synthetic_dir):
    joint = config_from_dict(tiny_config_dict(synthetic_dir))
    separate = config_from_dict(tiny_config_dict(synthetic_dir, tokenizer={"joint": False}))
    rd = RunDir(tmp_path)
    assert rd.tokenizer_files(joint) == (tmp_path / "spm.joint.model",) * 2
    assert rd.tokenizer_files(separate) == (tmp_path / "spm.src.model", tmp_path / "spm.tgt.model")


def test_best_falls_back_to_last_and_nothing_else_does(tmp_path):
    rd = RunDir(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"x")
    assert rd.checkpoint("best.pt") == tmp_path / "last.pt"  # stopped before its first validation
    with pytest.raises(CheckpointError, match=r"averaged.pt: checkpoint not found: .* has no averaged.pt \(found: last.pt\)"):
        rd.checkpoint("averaged.pt")
    (tmp_path / "best.pt").write_bytes(b"y")
    assert rd.checkpoint() == tmp_path / "best.pt"
    with pytest.raises(CheckpointError, match="is not a run directory"):
        RunDir(tmp_path / "missing").checkpoint()


def test_kept_checkpoints_are_ordered_by_step(tmp_path):
    for step in (100, 20, 3):
        (tmp_path / f"best.step{step}.pt").write_bytes(b"")
    (tmp_path / "best.stepX.pt").write_bytes(b"")
    assert [p.name for p in RunDir(tmp_path).kept_checkpoints()] == ["best.step3.pt", "best.step20.pt",
                                                                     "best.step100.pt"]


def test_open_run_gives_the_checkpoints_model_and_names_what_is_missing(tmp_path, trained_run):
    run = open_run(trained_run)
    saved = load_checkpoint(trained_run / "best.pt")["model"]
    assert run.path == trained_run / "best.pt"
    assert all(torch.equal(w, saved[k]) for k, w in run.model.state_dict().items())
    assert len(run.src_tok) == saved["encoder.embed.weight"].shape[0]
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    (copy / "spm.joint.model").unlink()
    with pytest.raises(CheckpointError, match="missing its tokenizer spm.joint.model"):
        open_run(copy)
