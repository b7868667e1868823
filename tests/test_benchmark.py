"""scripts/benchmark.py: its FLOP count agrees with torch's counter, and the script runs end to end."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import tiny_config_dict
from seq2seq.config import config_from_dict
from seq2seq.model.model import build_model

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
EXPERIMENTS = SCRIPTS.parent / "experiments"
sys.path.insert(0, str(SCRIPTS))
from benchmark import forward_macs  # noqa: E402


# torch's counter sees the GRU encoder's matrix products but not the fused LSTM kernel, so the
# encoder is a GRU here; the decoder does its own gate math and is counted for both cells.
@pytest.mark.parametrize("dec_cell", ["lstm", "gru"])
@pytest.mark.parametrize("attention", ["additive", "general", "dot"])
def test_forward_macs_match_torch_flop_counter(tmp_path, dec_cell, attention):
    raw = tiny_config_dict(tmp_path, model={
        "encoder": {"cell": "gru", "num_layers": 2},
        "decoder": {"cell": dec_cell, "attention": attention, "num_layers": 2, "hidden_size": 64}})
    cfg = config_from_dict(raw)
    model = build_model(cfg.model, src_vocab_size=100, tgt_vocab_size=120).eval()
    src, tgt = torch.randint(4, 100, (3, 9)), torch.randint(4, 120, (3, 7))  # equal lengths: no padding
    with FlopCounterMode(display=False) as counter:
        model(src, torch.tensor([9, 9, 9]), tgt)
    macs = forward_macs(cfg, src_vocab=100, tgt_vocab=120, src_lens=[9, 9, 9], tgt_lens=[7, 7, 7])
    assert 2 * macs == counter.get_total_flops()


def test_benchmark_script_runs_end_to_end(tmp_path, synthetic_dir):
    data = tmp_path / "data"
    data.mkdir()
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test")):
        for lang in ("src", "tgt"):
            shutil.copy(synthetic_dir / f"{split}.{lang}", data / f"{name}.{lang}")
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(tiny_config_dict(data)))  # JSON is YAML
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPTS / "benchmark.py"), "--config", str(config), "--data", str(data),
                           "--test-name", "test", "--steps", "12", "--warmup", "2", "--threads", "1",
                           "--decode-limit", "30", "--quantize", "int8", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "RESULT.json").read_text())
    tr = result["training"]
    assert tr["steps"] == 12 and len(tr["step_seconds"]) == 12
    assert tr["tgt_tok_s_incl_eos"] > tr["tgt_tok_s"] > 0 and tr["src_tgt_tok_s"] > tr["tgt_tok_s_incl_eos"]
    assert 0 < tr["mfu"] and tr["train_peak_rss_mb"] > 0
    runs = {(d["quantize"], d["beam"]): d for d in result["decoding"]}
    assert set(runs) == {("float32", 1), ("float32", 5), ("int8", 1), ("int8", 5)}
    assert all(d["sentences"] == 30 and d["sent_s"] > 0 and "bleu" in d for d in runs.values())
    assert result["peer_compatible"]["beam5_bleu"] == runs[("float32", 5)]["bleu"]
    table = (out / "RESULT.md").read_text()
    assert "| int8 | beam 5 |" in table and "target tok/s, EOS excluded" in table


def test_profile_decoding_script_profiles_a_run(trained_run, synthetic_dir):
    proc = subprocess.run([sys.executable, str(SCRIPTS / "profile_decoding.py"), "--model", str(trained_run),
                           "--input", str(synthetic_dir / "test.src"), "--sentences", "40", "--beam", "3",
                           "--batch-size", "16", "--threads", "1", "--top", "5"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "40 sentences, beam 3, batches of 16" in proc.stdout
    shares = [float(line.split("%")[0]) for line in proc.stdout.split("own CPU time by kind:")[1].split("top")[0]
              .strip().splitlines()]
    assert "matrix products" in proc.stdout and sum(shares) == pytest.approx(100, abs=0.5)
    assert "operator calls per sentence" in proc.stdout


def test_ab_configs_script_compares_a_config_with_its_override(tmp_path, synthetic_dir):
    from seq2seq.data.tokenizer import train_tokenizer
    data = tmp_path / "data"
    data.mkdir()
    for lang, name in (("src", "en"), ("tgt", "de")):  # the script reads Multi30k's en-de file names
        shutil.copy(synthetic_dir / f"train.{lang}", data / f"train.{name}")
    lines = (data / "train.en").read_text().splitlines() + (data / "train.de").read_text().splitlines()
    train_tokenizer(lines, tmp_path / "spm.model", vocab_size=64, model_type="bpe", character_coverage=1.0)
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(tiny_config_dict(data)))
    proc = subprocess.run([sys.executable, str(EXPERIMENTS / "ab_configs.py"), "--config", str(config),
                           "--tokenizer", str(tmp_path / "spm.model"), "--data", str(data), "--threads", "1",
                           "--set", "tokenizer.drop_unseen=true", "--batches", "3", "--rounds", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = {line.split(":")[0]: int(line.split(": ")[1].split(" parameters")[0].replace(",", ""))
              for line in proc.stdout.splitlines() if "parameters" in line}
    assert params["overridden"] < params["config"]  # each side dropped the other language's pieces
    assert len([line for line in proc.stdout.splitlines() if line.startswith("round ")]) == 2
    assert "ratio" in proc.stdout.splitlines()[-1]
