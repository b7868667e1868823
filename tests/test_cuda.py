"""On a CUDA GPU (scripts/gpu_check.sh runs these with `pytest -m cuda`; they skip elsewhere):
placement, training in each precision, GPU checkpoints on a CPU, GPU search equal to CPU search,
and DDP over NCCL."""
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import expected_translation, tiny_config_dict
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.trainer import train
from seq2seq.translator import Translator

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, synthetic_dir):
    run = tmp_path_factory.mktemp("gpu_run")
    train(config_from_dict(tiny_config_dict(synthetic_dir, training={"device": "cuda"})), run, quiet=True)
    return run


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_the_gpu_in_each_precision(tmp_path, synthetic_dir, precision):
    run = tmp_path / precision
    raw = tiny_config_dict(synthetic_dir, training={"device": "cuda", "precision": precision, "max_steps": 30})
    result = train(config_from_dict(raw), run, quiet=True)
    assert result["step"] == 30
    last = load_checkpoint(run / "last.pt")  # loads on the CPU
    assert all(w.device.type == "cpu" and torch.isfinite(w).all() for w in last["model"].values())
    assert (last["scaler"] is not None) == (precision == "fp16")


def test_a_gpu_run_learns_and_decodes_on_the_cpu_as_on_the_gpu(gpu_run, synthetic_dir):
    sources = (synthetic_dir / "test.src").read_text().splitlines()
    gpu = Translator.load(gpu_run, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    cpu = Translator.load(gpu_run, device="cpu")
    for beam in (1, 5):
        on_gpu, on_cpu = gpu.translate(sources, beam_size=beam), cpu.translate(sources, beam_size=beam)
        assert sum(a == b for a, b in zip(on_gpu, on_cpu)) >= 0.95 * len(sources), beam
    exact = sum(h == expected_translation(s) for h, s in zip(on_gpu, sources)) / len(sources)
    assert exact >= 0.8


def test_ddp_over_nccl_in_one_process(tmp_path, synthetic_dir):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(synthetic_dir, training={"device": "cuda", "max_steps": 20})))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "seq2seq",
           "train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 20
