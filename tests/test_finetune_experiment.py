"""scripts/finetune_experiment.py: every mode is trained once per seed, and the gains over
scratch it reports are those of its own results."""
import json
import subprocess
import sys
from pathlib import Path

from conftest import write_synthetic
from seq2seq.config import load_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "finetune_experiment.py"


def test_each_seed_is_a_run_and_gains_are_per_seed(tmp_path, trained_run):
    data = write_synthetic(tmp_path / "data", train=200, valid=20, test=20, seed=7, src="en", tgt="fr")
    for lang in ("en", "fr"):  # the script reads Multi30k's split names
        (data / f"valid.{lang}").rename(data / f"val.{lang}")
        (data / f"test.{lang}").rename(data / f"test_2016_flickr.{lang}")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(trained_run), "1", "--data", str(data), "--out", str(out),
                           "--sizes", "100", "--modes", "transfer", "keep_source", "scratch", "--seeds", "1", "2",
                           "--set", "training.max_steps=6", "--set", "training.num_threads=1"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    for seed in (1, 2):
        for mode in ("transfer", "keep_source", "scratch"):
            assert (out / f"seed{seed}" / f"{mode}_100" / "best.pt").exists()
            cfg = load_config(out / f"seed{seed}" / f"{mode}_100.yaml")
            assert cfg.training.seed == seed
            assert (cfg.init_from is None) == (mode == "scratch")
            # Scratch keeps the parent's joint tokenizer whatever the config's vocabulary mode.
            assert cfg.tokenizer.joint == (mode != "keep_source")

    results = json.loads((out / "results.json").read_text())
    assert sorted((r["seed"], r["mode"]) for r in results) == [
        (1, "keep_source"), (1, "scratch"), (1, "transfer"), (2, "keep_source"), (2, "scratch"), (2, "transfer")]
    bleu = {(r["seed"], r["mode"]): r["test_bleu"] for r in results}
    per_seed = [round(bleu[s, "transfer"] - bleu[s, "scratch"], 2) for s in (1, 2)]
    report = (out / "results.md").read_text()
    assert f"| 100 | transfer | 1: {per_seed[0]:+.2f}, 2: {per_seed[1]:+.2f} | **{sum(per_seed) / 2:+.2f}** |" in report
