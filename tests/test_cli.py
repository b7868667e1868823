"""The `seq2seq` command, run as `python -m seq2seq` in a subprocess like a user would."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
import yaml

from conftest import expected_translation, tiny_config_dict, write_synthetic
from seq2seq import cli
from seq2seq.checkpoint import load_checkpoint
from seq2seq.errors import CheckpointError, DecodingError, DeviceError, TrainingError
from seq2seq.translator import Translator

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, input_text=None, cwd=None) -> subprocess.CompletedProcess:
    # This checkout's package, whatever the working directory of the command.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "seq2seq", *map(str, args)], input=input_text, capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def assert_one_line_error(proc, command: str, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback
    assert lines[0].startswith(f"seq2seq {command}: error: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]


def test_train_with_overrides_and_default_run_dir(tmp_path):
    data = write_synthetic(tmp_path / "data", train=200, valid=10, test=2)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(data)))
    proc = run_cli("train", "--config", config, "--set", "training.max_steps=3", "--set", "training.lr=2e-3",
                   "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "small"  # runs/CONFIG_NAME by default
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["max_steps"] == 3 and saved["training"]["lr"] == 2e-3
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 3 and last["config"]["training"]["lr"] == 2e-3
    for name in ("spm.joint.model", "best.pt", "train.log", "metrics.jsonl"):
        assert (run_dir / name).exists(), name


@pytest.mark.parametrize("args, words", [
    (["--set", "model.encoder.cell=lstn"], ["model.encoder.cell: 'lstn' is not one of: lstm, gru"]),
    (["--set", "model.encoder.hiden_size=8"], ["model.encoder.hiden_size: unknown key, did you mean hidden_size?"]),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, args, words):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path)))
    proc = run_cli("train", "--config", config, "--run-dir", tmp_path / "run", *args)
    assert_one_line_error(proc, "train", *words)
    assert not (tmp_path / "run").exists()  # stopped before any work


def test_bad_config_file_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  decoder:\n    attention: luong\n")
    assert_one_line_error(run_cli("train", "--config", config, "--run-dir", tmp_path / "run"), "train",
                          "model.decoder.attention: 'luong' is not one of: additive, dot, general")
    assert_one_line_error(run_cli("train", "--config", tmp_path / "none.yaml"), "train", "none.yaml",
                          "not found")


@pytest.fixture(scope="module")
def sources(synthetic_dir) -> list[str]:
    return (synthetic_dir / "test.src").read_text().splitlines()[:12]


def test_translate_is_line_for_line(tmp_path, trained_run, sources):
    lines = ["", sources[0], "", "   ", *sources[1:6], ""]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n" + sources[6])  # the last line has no newline
    out = tmp_path / "out.txt"
    proc = run_cli("translate", "--model", trained_run, "--input", src, "--output", out, "--beam-size", 2,
                   "--batch-size", 3, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")
    hyps = text.split("\n")[:-1]
    assert len(hyps) == len(lines) + 1
    for line, hyp in zip(lines + [sources[6]], hyps):
        if not line.strip():
            assert hyp == ""
        else:
            assert hyp.strip() != ""
    # The command gives what the library gives, in input order.
    expected = Translator.load(trained_run, device="cpu").translate(lines + [sources[6]], beam_size=2)
    assert hyps == expected
    learned = [h == expected_translation(s) for h, s in zip(hyps, lines + [sources[6]]) if s.strip()]
    assert sum(learned) >= len(learned) // 2  # the order is really kept: most lines match their source


def test_translate_stdout_equals_file_output(tmp_path, trained_run, sources):
    piped = run_cli("translate", "--model", trained_run, "--beam-size", 1, "--device", "cpu",
                    input_text="\n".join(sources[:4]) + "\n")
    assert piped.returncode == 0, piped.stderr
    expected = Translator.load(trained_run, device="cpu").translate(sources[:4], beam_size=1)
    assert piped.stdout.split("\n") == expected + [""]


def test_translate_missing_input_is_a_one_line_error(tmp_path, trained_run):
    missing = tmp_path / "missing.txt"
    assert_one_line_error(run_cli("translate", "--model", trained_run, "--input", missing, "--device", "cpu"),
                          "translate", str(missing), "file not found")
    assert_one_line_error(run_cli("translate", "--model", trained_run, "--beam-size", 0), "translate",
                          "--beam-size")


def test_evaluate_bleu_equals_sacrebleu(tmp_path, synthetic_dir):
    sources = (synthetic_dir / "test.src").read_text().splitlines()[:30]
    refs = [expected_translation(s) for s in sources]
    # Imperfect hypotheses: drop a word from every third line, so BLEU is neither 0 nor 100.
    hyps = [" ".join(r.split()[1:]) if i % 3 == 0 else r for i, r in enumerate(refs)]
    hyp_file, ref_file = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp_file.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    ref_file.write_text("\n".join(refs) + "\n", encoding="utf-8")
    proc = run_cli("evaluate", "--hyp", hyp_file, "--ref", ref_file, "--json")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert 0 < bleu < 100
    assert scores["bleu"] == bleu
    assert scores["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert scores["bleu_lowercase"] == sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score
    assert "nrefs:1" in scores["bleu_signature"]

    text = run_cli("evaluate", "--hyp", hyp_file, "--ref", ref_file)
    assert text.returncode == 0, text.stderr
    assert f"{bleu:.2f}" in text.stdout.splitlines()[0] and "BLEU" in text.stdout


def test_evaluate_errors_are_one_line(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("a\nb\n")
    ref.write_text("a\n")
    assert_one_line_error(run_cli("evaluate", "--hyp", hyp, "--ref", ref), "evaluate", "hyp.txt", "2", "1")
    assert_one_line_error(run_cli("evaluate", "--hyp", tmp_path / "nohyp.txt", "--ref", ref), "evaluate",
                          "nohyp.txt", "file not found")


def test_device_and_decoding_option_errors_are_one_line(trained_run):
    assert_one_line_error(run_cli("translate", "--model", trained_run, "--quantize", "int8", "--precision", "bf16",
                                  "--device", "cpu", input_text="a\n"),
                          "translate", "precision bf16", "--quantize int8")
    assert_one_line_error(run_cli("translate", "--model", trained_run, "--nbest", 0, input_text="a\n"),
                          "translate", "--nbest")
    if not torch.cuda.is_available():
        assert_one_line_error(run_cli("translate", "--model", trained_run, "--device", "cuda", input_text="a\n"),
                              "translate", "torch sees no CUDA GPU", "--device cpu")


@pytest.mark.parametrize("error, words", [
    (DeviceError("device 'cuda' was asked for"), ["device 'cuda'"]),
    (DecodingError("precision bf16: int8 quantization"), ["precision bf16"]),
    (CheckpointError("run/best.pt: checkpoint not found"), ["best.pt"]),
    (TrainingError("the disk is full"), ["disk is full"]),
    (MemoryError(), ["out of memory (MemoryError)", "--batch-size"]),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"),
     ["out of memory (DefaultCPUAllocator", "--batch-size"]),
])
def test_user_errors_are_told_apart_by_their_type(monkeypatch, capsys, error, words):
    def fail(args):
        raise error
    monkeypatch.setattr(cli, "cmd_translate", fail)
    assert cli.main(["translate", "--model", "RUN"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seq2seq translate: error: ")
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("error", [ValueError("device and precision are words of a bug here"),
                                   RuntimeError("CUDA error: device-side assert triggered")])
def test_other_errors_keep_their_traceback(monkeypatch, error):
    def fail(args):
        raise error
    monkeypatch.setattr(cli, "cmd_translate", fail)
    with pytest.raises(type(error)):
        cli.main(["translate", "--model", "RUN"])

