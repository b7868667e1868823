"""Fault injection: every promise of the reliability issue, each checked by making it fail."""
from __future__ import annotations

import builtins
import errno
import json
import logging
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
import yaml

from conftest import (expected_translation, fill_filesystem, needs_root, small_filesystem, tiny_config_dict,
                      write_synthetic)
from seq2seq.run import checkpoint as checkpoint_module
from seq2seq.training import checkpoints as checkpoints_module
from seq2seq.training import update as update_module
from seq2seq.run.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from seq2seq.cli import main as cli_main
from seq2seq.config import config_from_dict
from seq2seq.data import encode_parallel, read_parallel
from seq2seq.model.model import Seq2Seq
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.training.loop import TrainingError, train
from seq2seq.decoding.translator import Translator

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """A smaller synthetic task: a run of a few dozen steps crosses an epoch in seconds."""
    return write_synthetic(tmp_path_factory.mktemp("small"), train=600, valid=30, test=30)


def small_config(data_dir: Path, dropout: float = 0.1, **training) -> dict:
    # One thread and some dropout: bitwise comparisons then also cover the restored RNG state.
    return tiny_config_dict(data_dir, training={"batch_size": 16, "log_every": 1, "num_threads": 1,
                                                "max_steps": 30, **training},
                            model={"encoder": {"dropout": dropout}})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """The CLI in-process: exit code and stderr. An exception escaping main fails the test,
    so passing means the user saw no traceback."""
    code = cli_main(argv)
    return code, capsys.readouterr().err


def one_line_error(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"seq2seq {command}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def train_log(run_dir: Path) -> str:
    return (run_dir / "train.log").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------
# Training never loses work


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, small_data) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(config_from_dict(small_config(small_data, max_steps=45)), run_dir, quiet=True)
    return run_dir


# Slows each step down (without touching the numbers) so the signal surely lands mid-run.
SLOW_TRAIN = """
import sys, time
import seq2seq.training.update as U
real = U.forward_backward
def slow(*args, **kwargs):
    time.sleep(0.05)
    return real(*args, **kwargs)
U.forward_backward = slow
from seq2seq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def slow_training_until(config: Path, run_dir: Path, logged: str, env: dict) -> subprocess.Popen:
    """`seq2seq train` slowed down in a subprocess, returned once train.log holds `logged`."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, "train", "--config", str(config),
                             "--run-dir", str(run_dir), "--quiet"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        log_file = run_dir / "train.log"
        if log_file.exists() and logged in log_file.read_text():
            break
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_last_and_resume_matches_uninterrupted_run(tmp_path, small_data, uninterrupted_run, sig):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(small_data, max_steps=45)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = slow_training_until(config, run_dir, "step 5 epoch 1", env)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"seq2seq train --run-dir {run_dir} --resume" in err
    stopped = load_checkpoint(run_dir / "last.pt")
    # Stopped mid-epoch 1 (an epoch has about 32 batches here), before its validation.
    assert stopped["progress"]["epoch"] == 1 and 5 <= stopped["step"] < 30
    assert stopped["progress"]["batch_in_epoch"] == stopped["step"]

    # Resume exactly as the message says (no --config: the run keeps its own limits).
    resumed = subprocess.run([sys.executable, "-m", "seq2seq", "train", "--run-dir", str(run_dir), "--resume",
                              "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "last.pt")["step"] == 45
    assert (run_dir / "spm.joint.model").read_bytes() == (uninterrupted_run / "spm.joint.model").read_bytes()
    assert_same_weights(weights(run_dir / "last.pt"), weights(uninterrupted_run / "last.pt"))


def test_a_moving_average_resumes_exactly_after_a_signal(tmp_path, small_data):
    # training.ema_decay: last.pt written on SIGTERM holds the average and the trained weights.
    options = small_config(small_data, max_steps=45, ema_decay=0.9, ema_start=2)
    train(config_from_dict(options), tmp_path / "uninterrupted", quiet=True)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(options))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = slow_training_until(config, run_dir, "step 5 epoch 1", env)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped = load_checkpoint(run_dir / "last.pt")
    assert 5 <= stopped["step"] < 30 and "raw_model" in stopped
    resumed = subprocess.run([sys.executable, "-m", "seq2seq", "train", "--run-dir", str(run_dir), "--resume",
                              "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    done, reference = load_checkpoint(run_dir / "last.pt"), load_checkpoint(tmp_path / "uninterrupted" / "last.pt")
    assert done["step"] == 45
    assert_same_weights(done["model"], reference["model"])
    assert_same_weights(done["raw_model"], reference["raw_model"])


def test_sigkill_loses_only_the_updates_since_the_last_periodic_save(tmp_path, small_data, uninterrupted_run):
    # Validation is 10,000 steps away and the epoch ends near step 32: before that, only the
    # periodic save can put a last.pt on disk, and SIGKILL leaves no chance to write one.
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(small_data, max_steps=45, save_every_steps=4,
                                                  save_every_minutes=None)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = slow_training_until(config, run_dir, "step 8: saved", env)
    assert proc.poll() is None, "training ended (or never saved at step 8) before it could be killed"
    proc.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    stopped = load_checkpoint(run_dir / "last.pt")
    assert stopped["step"] % 4 == 0 and 8 <= stopped["step"] < 30
    assert stopped["progress"]["last_valid_step"] == -1, "written by the periodic save, not by a validation"

    resumed = subprocess.run([sys.executable, "-m", "seq2seq", "train", "--run-dir", str(run_dir), "--resume",
                              "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "last.pt")["step"] == 45
    # The uninterrupted run saved only at validations: saving more often changed nothing.
    assert_same_weights(weights(run_dir / "last.pt"), weights(uninterrupted_run / "last.pt"))


def test_save_every_minutes_writes_last_pt_between_validations(tmp_path, small_data):
    # A clock far shorter than any update: last.pt is due after every update, except where a
    # validation (steps 5 and 10) or the end of training (step 12) writes it anyway.
    run_dir = tmp_path / "clock"
    train(config_from_dict(small_config(small_data, max_steps=12, valid_every=5, save_every_minutes=1e-9)),
          run_dir, quiet=True)
    saved = [int(step) for step in re.findall(r"step (\d+): saved \S*last\.pt", train_log(run_dir))]
    assert saved == [1, 2, 3, 4, 6, 7, 8, 9, 11]
    # With the default (10 minutes) a run of seconds writes last.pt at validations only.
    run_dir = tmp_path / "default"
    train(config_from_dict(small_config(small_data, max_steps=6, valid_every=5)), run_dir, quiet=True)
    assert "saved" not in train_log(run_dir) and load_checkpoint(run_dir / "last.pt")["step"] == 6


def test_crash_while_writing_checkpoint_keeps_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    old = {"config": {}, "model": {"w": torch.arange(1000.0)}}
    save_checkpoint(path, old)

    real_save = torch.save

    def half_then_crash(obj, f):  # the disk fills up half-way through the new file
        real_save(obj, f)
        f.truncate(f.tell() // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", half_then_crash)
    with pytest.raises(TrainingError, match="the disk is full"):
        save_checkpoint(path, {"config": {}, "model": {"w": torch.zeros(1000)}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], old["model"]["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"], "no temporary file may be left behind"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_real_full_device_gives_the_disk_full_error(tmp_path):
    # /dev/full answers every write with ENOSPC, as a full disk does; the temporary file that
    # atomic_write is about to create points there. (torch.save given a path would turn this
    # into a RuntimeError without an errno.)
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"config": {}, "model": {"w": torch.ones(3)}})
    (tmp_path / f".last.pt.tmp{os.getpid()}").symlink_to("/dev/full")
    with pytest.raises(TrainingError, match="the disk is full"):
        save_checkpoint(path, {"config": {}, "model": {"w": torch.zeros(3)}})
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@needs_root
def test_a_real_full_filesystem_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    # On a real filesystem torch's zip writer turns the full disk into its own RuntimeError
    # ("[enforce fail at inline_container.cc...] unexpected pos ..."), without an errno.
    with small_filesystem(tmp_path / "fs", "2m") as fs:
        path = fs / "last.pt"
        save_checkpoint(path, {"config": {}, "model": {"w": torch.ones(10_000)}})
        with pytest.raises(TrainingError) as info:
            save_checkpoint(path, {"config": {}, "model": {"w": torch.zeros(1_000_000)}})  # 4 MB
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: the disk is full")
        assert "the previous last.pt is intact" in message and f"Free space on the filesystem of {fs}" in message
        assert "needs about 4.0 MB" in message and "MB free" in message
        assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(10_000))
        assert sorted(p.name for p in fs.iterdir()) == ["last.pt"], "nothing half-written may stay"


@needs_root
def test_training_on_a_filesystem_that_fills_up_is_one_line(tmp_path, small_data, capsys, monkeypatch):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(small_data, max_steps=20, save_every_steps=3,
                                                  save_every_minutes=None)))
    real_save = checkpoints_module.save_checkpoint

    def fill_after_the_first_last_pt(path, payload):  # the disk fills up while training goes on
        real_save(path, payload)
        if Path(path).name == "last.pt" and not (Path(path).parent / "filler").exists():
            fill_filesystem(Path(path).parent, leave=64 * 1024)

    monkeypatch.setattr(checkpoints_module, "save_checkpoint", fill_after_the_first_last_pt)
    with small_filesystem(tmp_path / "fs", "8m") as fs:
        run_dir = fs / "run"
        code, err = run_main(["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"], capsys)
        assert code == 2
        line = one_line_error(err, "train")
        assert f"{run_dir / 'last.pt'}: the disk is full" in line and "the previous last.pt is intact" in line
        assert load_checkpoint(run_dir / "last.pt")["step"] == 3
        assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name], "nothing half-written may stay"


def test_full_disk_during_training_is_one_line_and_keeps_the_previous_last_pt(tmp_path, small_data, capsys,
                                                                               monkeypatch):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(small_data, max_steps=20, save_every_steps=3,
                                                  save_every_minutes=None)))
    run_dir = tmp_path / "run"
    real_save = torch.save
    last_writes = {"n": 0}

    def full_on_second_last_pt(obj, f):  # last.pt is written at steps 3 and 6; the disk fills at 6
        if Path(f.name).name.startswith(".last.pt.tmp"):
            last_writes["n"] += 1
            if last_writes["n"] == 2:
                f.write(b"PK\x03\x04 the first bytes of a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_on_second_last_pt)
    code, err = run_main(["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"], capsys)
    monkeypatch.undo()
    assert code == 2 and last_writes["n"] == 2
    line = one_line_error(err, "train")
    assert f"{run_dir / 'last.pt'}: the disk is full" in line
    assert "the previous last.pt is intact" in line and str(run_dir) in line and "--run-dir" in line
    assert load_checkpoint(run_dir / "last.pt")["step"] == 3
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name], "no temporary file may be left behind"


def test_unwritable_run_dir_is_found_before_training(tmp_path, small_data, capsys):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(small_data)))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    # A path below a regular file cannot be created even by root (chmod would not stop root).
    code, err = run_main(["train", "--config", str(config), "--run-dir", str(blocker / "run"), "--quiet"], capsys)
    assert code == 2
    assert "run directory is not writable" in one_line_error(err, "train")
    assert str(blocker / "run") in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_run_dir_is_found_before_training(tmp_path, small_data, capsys):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(small_data)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o500)
    try:
        code, err = run_main(["train", "--config", str(config), "--run-dir", str(run_dir), "--quiet"], capsys)
    finally:
        run_dir.chmod(0o700)
    assert code == 2 and "run directory is not writable" in one_line_error(err, "train")


def nan_loss_on(calls: set[int] | range, monkeypatch) -> None:
    """Make the training loss NaN on the given (1-based) calls of token_loss."""
    real = update_module.token_loss
    count = {"n": 0}

    def loss(logits, target, label_smoothing):
        count["n"] += 1
        value = real(logits, target, label_smoothing)
        return value * float("nan") if count["n"] in calls else value

    monkeypatch.setattr(update_module, "token_loss", loss)


def test_nonfinite_loss_skips_the_update_with_a_warning(tmp_path, small_data, monkeypatch):
    nan_loss_on({3, 4}, monkeypatch)
    run_dir = tmp_path / "run"
    result = train(config_from_dict(small_config(small_data, max_steps=10)), run_dir, quiet=True)
    last = load_checkpoint(run_dir / "last.pt")
    # A skipped update counts as a step (whether it was skipped is read only at log lines).
    assert result["step"] == 10 and last["progress"]["batch_in_epoch"] == 10
    assert train_log(run_dir).count("not finite; update skipped") == 2
    assert "step 3: loss or gradients not finite" in train_log(run_dir)
    records = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    assert [r["skipped_updates"] for r in records] == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert all(math.isfinite(r["loss"]) for r in records[:2] + records[4:])  # a NaN loss is left out
    assert all(torch.isfinite(w).all() for w in last["model"].values())


def test_nonfinite_losses_in_a_row_stop_naming_step_and_checkpoint(tmp_path, small_data, monkeypatch):
    nan_loss_on(range(6, 1000), monkeypatch)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(config_from_dict(small_config(small_data)), run_dir, quiet=True)
    message = str(info.value)
    # Updates 6 to 10 were skipped; the fifth in a row stops training.
    assert "step 10:" in message and "5 updates in a row" in message
    assert f"{run_dir / 'last.pt'} (step 10)" in message
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 10 and all(torch.isfinite(w).all() for w in last["model"].values())
    assert last["progress"]["nonfinite_in_a_row"] == 5


def test_nonfinite_weights_are_never_saved_as_best(tmp_path, small_data, monkeypatch):
    real_validate = checkpoints_module.validate
    calls = {"n": 0}

    def validate(model, *args):
        calls["n"] += 1
        result = real_validate(model, *args)
        if calls["n"] == 2:  # the second validation sees broken weights and an unbeatable score
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
            result = {**result, "bleu": 100.0}
        return result

    monkeypatch.setattr(checkpoints_module, "validate", validate)
    run_dir = tmp_path / "run"
    train(config_from_dict(small_config(small_data, max_steps=20, valid_every=10)), run_dir, quiet=True)
    assert calls["n"] == 2
    best = load_checkpoint(run_dir / "best.pt")
    assert best["step"] == 10
    assert all(torch.isfinite(w).all() for w in best["model"].values())
    assert "weights are not finite" in train_log(run_dir)


def oom_above(monkeypatch, *, max_rows: int | None = None, max_src_len: int | None = None,
              error: type = torch.cuda.OutOfMemoryError) -> None:
    """Training forward passes raise out-of-memory for batches above a size, as a GPU would."""
    real = Seq2Seq.forward

    def forward(self, src, src_lengths, tgt_in):
        if self.training and ((max_rows and src.size(0) > max_rows) or (max_src_len and src.size(1) > max_src_len)):
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(self, src, src_lengths, tgt_in)

    monkeypatch.setattr(Seq2Seq, "forward", forward)


def test_out_of_memory_batches_are_split_with_the_same_result(tmp_path, small_data, monkeypatch):
    # No dropout: halves would draw different dropout masks than the whole batch.
    reference = tmp_path / "reference"
    train(config_from_dict(small_config(small_data, dropout=0.0, max_steps=8)), reference, quiet=True)
    oom_above(monkeypatch, max_rows=5)
    run_dir = tmp_path / "split"
    train(config_from_dict(small_config(small_data, dropout=0.0, max_steps=8)), run_dir, quiet=True)
    assert "retrying it in halves" in train_log(run_dir)
    assert load_checkpoint(run_dir / "last.pt")["progress"]["oom_skipped"] == 0
    ref, split = weights(reference / "last.pt"), weights(run_dir / "last.pt")
    for name in ref:  # sums in a different order: equal up to rounding
        torch.testing.assert_close(split[name], ref[name], rtol=1e-4, atol=1e-5)


def test_out_of_memory_on_single_long_pairs_skips_and_counts_them(tmp_path, small_data, monkeypatch):
    oom_above(monkeypatch, max_src_len=8, error=RuntimeError)
    run_dir = tmp_path / "run"
    train(config_from_dict(small_config(small_data, max_steps=None, max_epochs=1)), run_dir, quiet=True)
    tok = Tokenizer(run_dir / "spm.joint.model")
    pairs = read_parallel(small_data / "train.src", small_data / "train.tgt")
    data = encode_parallel(*pairs, tok, tok, max_src_len=20, max_tgt_len=20)  # what training saw
    too_long = sum(len(ids) > 8 for ids in data.src)
    assert too_long > 0
    assert load_checkpoint(run_dir / "last.pt")["progress"]["oom_skipped"] == too_long
    assert f"{too_long} training pairs were skipped" in train_log(run_dir)


# ---------------------------------------------------------------------------------------
# Data problems are reported, never silently absorbed


def broken_data(tmp_path: Path, src: bytes, tgt: bytes) -> Path:
    """A data dir whose training files are the given bytes (validation files are fine)."""
    d = write_synthetic(tmp_path / "data", train=50, valid=10, test=10)
    (d / "train.src").write_bytes(src)
    (d / "train.tgt").write_bytes(tgt)
    return d


def train_cli(tmp_path: Path, data_dir: Path, capsys, **data) -> tuple[int, str]:
    raw = small_config(data_dir, max_steps=2)
    raw["data"].update(data)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    return run_main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"], capsys)


def test_different_line_counts_name_both_files_and_counts(tmp_path, capsys):
    d = broken_data(tmp_path, b"ka lo\nmi nu\npe ri\n", b"LO KA\nNU MI\n")
    code, err = train_cli(tmp_path, d, capsys)
    line = one_line_error(err, "train")
    assert code == 2
    assert f"{d / 'train.src'} has 3 lines" in line and f"{d / 'train.tgt'} has 2" in line


def test_invalid_utf8_is_an_error_naming_file_and_line_or_skipped_on_request(tmp_path, capsys):
    src = "\n".join(["ka lo", "mi nu"] * 20).encode() + b"\npe \xff ri\n"
    tgt = "\n".join(["LO KA", "NU MI"] * 20).encode() + b"\nRI PE\n"
    d = broken_data(tmp_path, src, tgt)
    code, err = train_cli(tmp_path, d, capsys)
    assert code == 2
    assert f"{d / 'train.src'}:41: not valid UTF-8" in one_line_error(err, "train")

    code, err = train_cli(tmp_path, d, capsys, skip_invalid_utf8=True)
    assert code == 0, err
    assert "skipped 1 pairs with invalid UTF-8" in train_log(tmp_path / "run")


def test_empty_and_overlong_pairs_are_dropped_with_counts(tmp_path, capsys):
    pairs = [("ka lo", "LO KA")] * 30 + [("", "LO KA"), ("mi", "   "), (" \t ", "\t")] + \
            [(" ".join(["ka"] * 40), " ".join(["ALPHA"] * 40))] * 2
    d = broken_data(tmp_path, "\n".join(p[0] for p in pairs).encode() + b"\n",
                    "\n".join(p[1] for p in pairs).encode() + b"\n")
    code, err = train_cli(tmp_path, d, capsys)
    assert code == 0, err
    assert "dropped 3 empty pairs and 2 pairs over the length limit (20/20 pieces); 30 remain" in \
        train_log(tmp_path / "run")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b" \t\n\n"], ids=["empty", "blank", "whitespace"])
def test_training_set_that_ends_up_empty_is_an_error(tmp_path, capsys, content):
    d = broken_data(tmp_path, content, b"\n" * content.count(b"\n"))
    code, err = train_cli(tmp_path, d, capsys)
    assert code == 2
    assert "no non-empty sentence pairs" in one_line_error(err, "train")


def test_all_pairs_over_the_limit_is_an_error(tmp_path, capsys):
    long = " ".join(["ka"] * 40)
    d = broken_data(tmp_path, (long + "\n").encode() * 5, (long.upper() + "\n").encode() * 5)
    code, err = train_cli(tmp_path, d, capsys)
    assert code == 2
    assert "no sentence pairs left after dropping 0 empty and 5 over-long pairs" in one_line_error(err, "train")


@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_missing_files_and_directories_are_one_line_errors(tmp_path, capsys, problem):
    d = write_synthetic(tmp_path / "data", train=50, valid=10, test=10)
    (d / "train.tgt").unlink()
    if problem == "directory":
        (d / "train.tgt").mkdir()
    code, err = train_cli(tmp_path, d, capsys)
    line = one_line_error(err, "train")
    assert code == 2 and str(d / "train.tgt") in line
    assert ("file not found" if problem == "missing" else "is a directory") in line


def test_unreadable_files_are_one_line_errors(tmp_path, capsys, monkeypatch):
    d = write_synthetic(tmp_path / "data", train=50, valid=10, test=10)
    real = builtins.open

    def refusing_open(file, *args, **kwargs):  # chmod does not stop root, so the refusal is injected
        if str(file).endswith("train.src"):
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    code, err = train_cli(tmp_path, d, capsys)
    assert code == 2
    assert f"{d / 'train.src'}: cannot read (Permission denied)" in one_line_error(err, "train")


def test_translate_input_problems_are_one_line_errors(tmp_path, trained_run, capsys):
    for path, expected in ((tmp_path / "nope.txt", "file not found"), (tmp_path, "is a directory")):
        code, err = run_main(["translate", "--model", str(trained_run), "--input", str(path), "--device", "cpu"],
                             capsys)
        assert code == 2 and f"{path}: {expected}" in one_line_error(err, "translate")
    source = tmp_path / "in.txt"
    source.write_text("ka lo\n")
    code, err = run_main(["translate", "--model", str(trained_run), "--input", str(source),
                          "--output", str(tmp_path / "no_dir" / "out.txt"), "--device", "cpu"], capsys)
    assert code == 2 and "cannot write" in one_line_error(err, "translate")


# ---------------------------------------------------------------------------------------
# Translation is line-for-line, whatever comes in

ODD_LINES = [
    "ka lo mi",
    "",
    "   \t  ",
    "ka\x00lo\x07mi\x1b[0m",
    "ka lo Привет 世界 مرحبا mi",
    "🙂🚀 ka 👍🏽 nu",
    "ka lo\rmi nu",  # a lone carriage return inside a line
    "pe\u2028ri su",  # a Unicode line separator inside a line
    " ".join(["ka", "lo", "mi"] * 60),  # far longer than anything in training
    "su ta vo",
]


def test_odd_lines_come_back_one_for_one_in_order(trained_run, caplog):
    translator = Translator.load(trained_run, device="cpu")
    package_log = logging.getLogger("seq2seq")  # training set it not to propagate to the root
    package_log.addHandler(caplog.handler)
    try:
        out = list(translator.translate_stream(iter(ODD_LINES * 3), chunk_lines=4, beam_size=2))
    finally:
        package_log.removeHandler(caplog.handler)
    assert len(out) == len(ODD_LINES) * 3
    assert all("\n" not in o and "\r" not in o and len(o.splitlines()) <= 1 for o in out)
    for k in range(3):
        block = out[k * len(ODD_LINES):(k + 1) * len(ODD_LINES)]
        assert block[0] == expected_translation("ka lo mi")
        assert block[1] == "" and block[2] == ""
        assert block[-1] == expected_translation("su ta vo")
    truncations = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    # Line numbers count across chunks: the long line is line 9, 19 and 29 of the stream.
    assert [m.split()[2] for m in truncations] == ["9", "19", "29"]


def test_cli_translates_raw_bytes_line_for_line(tmp_path, trained_run):
    raw = "\n".join(ODD_LINES).encode("utf-8") + b"\nka \xff\xfe lo\nmi \xc3 nu\n" + b"ta vo\n"
    source = tmp_path / "in.txt"
    source.write_bytes(raw)
    out = tmp_path / "out.txt"
    proc = subprocess.run([sys.executable, "-m", "seq2seq", "translate", "--model", str(trained_run), "--input",
                           str(source), "--output", str(out), "--beam-size", "2", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    hyps = out.read_bytes().decode("utf-8").split("\n")
    assert hyps[-1] == "" and len(hyps[:-1]) == raw.count(b"\n")
    assert hyps[0] == expected_translation("ka lo mi") and hyps[-2] == expected_translation("ta vo")
    assert "input line 9 has" in proc.stderr and "truncated" in proc.stderr


def test_translate_stream_memory_does_not_grow_with_input(trained_run):
    translator = Translator.load(trained_run, device="cpu")

    def peak(n: int) -> int:
        # A generator of fresh strings: nothing is held up front, and holding lines would cost.
        lines = (" ".join(["ka", "lo", "mi", "nu", "pe", "ri", "su", "ta"]) for _ in range(n))
        tracemalloc.start()
        count = sum(1 for _ in translator.translate_stream(lines, beam_size=1, batch_size=50))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == n
        return top

    peak(100)  # warm-up: one-off allocations (caches, lazy imports) are not growth
    small, large = peak(500), peak(2000)
    # Streaming grows by ~10 kB here; holding the 1500 extra inputs and outputs would add ~200 kB.
    assert large - small < 1500 * 50, (small, large)


def test_stdin_output_appears_before_input_ends(trained_run):
    proc = subprocess.Popen([sys.executable, "-m", "seq2seq", "translate", "--model", str(trained_run),
                             "--beam-size", "2", "--device", "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
                            bufsize=0)  # unbuffered: select() then sees every line that is not read yet
    try:
        sources = ["ka lo mi", "nu pe", "ri su ta vo"]
        proc.stdin.write(("\n".join(sources) + "\n").encode())
        proc.stdin.flush()
        got = []
        for _ in sources:  # stdin stays open: these lines must arrive anyway
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            assert ready, "no translation came back while stdin was still open"
            got.append(proc.stdout.readline().decode().rstrip("\n"))
        assert got == [expected_translation(s) for s in sources]
        proc.stdin.write(b"dor bai\n")
        proc.stdin.close()
        assert proc.stdout.read().decode() == expected_translation("dor bai") + "\n"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------
# Checkpoints are safe and checked


def damaged_run(tmp_path: Path, trained_run: Path, damage: str) -> Path:
    """A copy of the trained run with one thing wrong."""
    run = tmp_path / damage
    run.mkdir()
    for f in ("spm.joint.model", "config.yaml"):
        (run / f).write_bytes((trained_run / f).read_bytes())
    good = (trained_run / "best.pt").read_bytes()
    best = run / "best.pt"
    if damage == "truncated":
        best.write_bytes(good[:len(good) // 2])
    elif damage == "corrupted":
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF  # one flipped byte inside the weights
        best.write_bytes(bytes(bad))
    elif damage == "text":
        best.write_text("this is not a checkpoint\n")
    elif damage == "foreign":
        torch.save(torch.zeros(3), best)
    elif damage == "other_architecture":
        ckpt = load_checkpoint(trained_run / "best.pt")
        ckpt["config"]["model"]["decoder"]["hidden_size"] = 48
        torch.save(ckpt, best)
    elif damage == "newer_version":
        ckpt = load_checkpoint(trained_run / "best.pt")
        ckpt["format_version"] = FORMAT_VERSION + 1
        torch.save(ckpt, best)
    elif damage == "no_tokenizer":
        best.write_bytes(good)
        (run / "spm.joint.model").unlink()
    elif damage == "no_checkpoint":
        pass
    return run


@pytest.mark.parametrize("damage, expected", [
    ("truncated", "not a readable seq2seq checkpoint"),
    ("corrupted", "corrupted checkpoint (checksum mismatch"),
    ("text", "not a readable seq2seq checkpoint"),
    ("foreign", "not a seq2seq checkpoint"),
    ("other_architecture", "weights do not fit the model its config describes"),
    ("newer_version", f"format version {FORMAT_VERSION + 1} is newer"),
    ("no_tokenizer", "missing its tokenizer spm.joint.model"),
    ("no_checkpoint", "checkpoint not found"),
])
def test_bad_checkpoints_give_one_clear_message(tmp_path, trained_run, capsys, damage, expected):
    run = damaged_run(tmp_path, trained_run, damage)
    source = tmp_path / "in.txt"
    source.write_text("ka lo\n")
    code, err = run_main(["translate", "--model", str(run), "--input", str(source), "--device", "cpu"], capsys)
    assert code == 2
    assert expected in one_line_error(err, "translate")


def test_resume_from_a_damaged_last_checkpoint_is_a_clear_error(tmp_path, trained_run, capsys):
    run = damaged_run(tmp_path, trained_run, "truncated")
    (run / "best.pt").rename(run / "last.pt")
    code, err = run_main(["train", "--run-dir", str(run), "--resume", "--quiet"], capsys)
    assert code == 2
    assert f"{run / 'last.pt'}: not a readable seq2seq checkpoint" in one_line_error(err, "train")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loading_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format": "seq2seq-checkpoint", "format_version": 1, "config": {}, "model": exploit}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
