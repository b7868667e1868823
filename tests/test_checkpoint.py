"""Checkpoints: a reload gives identical outputs, weights carry no wrapper prefixes, and
loading never runs code from the file."""
import errno
import os

import pytest
import torch
from torch import nn

from seq2seq.run import checkpoint as checkpoint_module
from seq2seq.run.checkpoint import (FORMAT, FORMAT_VERSION, CheckpointError, atomic_write, load_checkpoint,
                                save_checkpoint, training_payload, unwrap)
from seq2seq.config import Config, config_from_dict, to_dict
from seq2seq.data import pad
from seq2seq.errors import TrainingError
from seq2seq.model.model import build_model
from seq2seq.training.state import Progress


def small_config() -> Config:
    return config_from_dict({"model": {"encoder": {"cell": "lstm", "emb_size": 8, "hidden_size": 8},
                                       "decoder": {"cell": "lstm", "emb_size": 8, "hidden_size": 16,
                                                   "attention": "general"}}})


def make_model(cfg: Config, seed: int):
    torch.manual_seed(seed)
    return build_model(cfg.model, src_vocab_size=30, tgt_vocab_size=31)


def outputs(model):
    model.eval()
    src, lengths = pad([[4, 5, 6, 7], [8, 9]]), torch.tensor([4, 2])
    with torch.no_grad():
        return model(src, lengths, torch.tensor([[2, 10, 11], [2, 12, 0]]))


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: the real model sits under `.module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)


@pytest.mark.parametrize("wrap", [lambda m: m, Wrapper, lambda m: Wrapper(Wrapper(m)), torch.compile],
                         ids=["plain", "ddp-like", "nested", "compiled"])
def test_reloaded_checkpoint_gives_identical_outputs_and_plain_names(tmp_path, wrap):
    cfg = small_config()
    model = make_model(cfg, seed=0)
    wrapped = wrap(model)
    assert unwrap(wrapped) is model
    optimizer = torch.optim.Adam(model.parameters())
    payload = training_payload(wrapped, to_dict(cfg), progress=vars(Progress(step=7)), optimizer=optimizer,
                               scheduler=None)
    save_checkpoint(tmp_path / "c.pt", payload)
    data = load_checkpoint(tmp_path / "c.pt")
    assert list(data["model"]) == list(model.state_dict())  # no "module." or "_orig_mod." prefixes
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in data["model"])
    assert data["format"] == FORMAT and data["format_version"] == FORMAT_VERSION
    assert data["step"] == 7 and data["progress"]["step"] == 7
    assert config_from_dict(data["config"]) == cfg

    fresh = make_model(cfg, seed=1)
    assert not torch.equal(outputs(fresh), outputs(model))
    fresh.load_state_dict(data["model"])
    assert torch.equal(outputs(fresh), outputs(model))


def test_trained_run_checkpoints_are_self_describing(trained_run):
    for name in ("best.pt", "last.pt"):
        data = load_checkpoint(trained_run / name)
        cfg = config_from_dict(data["config"])
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in data["model"])
        model = build_model(cfg.model, src_vocab_size=data["model"]["encoder.embed.weight"].size(0),
                            tgt_vocab_size=data["model"]["decoder.output.weight"].size(0))
        model.load_state_dict(data["model"])  # strict: exactly the plain model's names
    assert "optimizer" in load_checkpoint(trained_run / "last.pt")
    assert "optimizer" not in load_checkpoint(trained_run / "best.pt")  # best.pt is weights only


class CodePayload:
    """Unpickling this runs os.mkdir(path): the kind of payload a hostile file carries."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_code_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "config": {}, "model": CodePayload(marker)}, evil)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(evil)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(evil, weights_only=False)
    assert marker.is_dir()


def test_unusable_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a seq2seq checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "good.pt", {"config": to_dict(Config()), "model": {}})
    truncated = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(truncated[:len(truncated) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION + 1, "config": {}, "model": {}},
               tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "future.pt")
    save_checkpoint(tmp_path / "nomodel.pt", {"config": {}})
    with pytest.raises(CheckpointError, match="'model'"):
        load_checkpoint(tmp_path / "nomodel.pt")


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"config": {}, "model": {"w": torch.ones(3)}})

    def broken(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(TrainingError, match=f"^{path}: cannot write it \\(disk full\\); the previous last.pt is intact"):
        atomic_write(path, broken)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726"),  # torch's zip writer
    OSError(errno.EIO, "Input/output error"),
    OSError(errno.EROFS, "Read-only file system"),
], ids=["torch zip writer", "EIO", "EROFS"])
def test_any_failure_while_writing_is_one_line_naming_the_path(tmp_path, monkeypatch, error):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"config": {}, "model": {"w": torch.ones(3)}})

    def failing(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise error

    monkeypatch.setattr(checkpoint_module.torch, "save", failing)
    with pytest.raises(TrainingError) as info:
        save_checkpoint(path, {"config": {}, "model": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    cause = error.strerror if isinstance(error, OSError) else str(error)
    assert f"cannot write it ({cause})" in message and "the previous best.pt is intact" in message
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"], "nothing half-written may stay"
