"""experiments/finetune_experiment.py: every mode is trained once per seed, and the gains over
scratch it reports are those of its own results."""
import json
import subprocess
import sys
from pathlib import Path

from conftest import write_multi30k_like
from seq2seq.config import load_config

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "finetune_experiment.py"


def test_each_seed_is_a_run_and_gains_are_per_seed(tmp_path, trained_run):
    data = write_multi30k_like(tmp_path / "data", train=200, valid=20, test=20, seed=7, src="en", tgt="fr")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(trained_run), "--steps", "6", "--data", str(data),
                           "--out", str(out), "--sizes", "100", "--modes", "transfer", "keep_source", "spelled_warmup",
                           "scratch", "--seeds", "1", "2", "--warmup-steps", "3", "--converge", "--cap-steps", "12",
                           "--jobs", "2", "--set", "training.num_threads=1", "--set", "training.valid_every=3"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    for seed in (1, 2):
        for mode in ("transfer", "keep_source", "spelled_warmup", "scratch"):
            assert (out / f"seed{seed}" / f"{mode}_100" / "best.pt").exists()
            cfg = load_config(out / f"seed{seed}" / f"{mode}_100.yaml")
            assert cfg.training.seed == seed
            assert (cfg.init_from is None) == (mode == "scratch")
            # Scratch keeps the parent's joint tokenizer whatever the config's vocabulary mode.
            assert cfg.tokenizer.joint == (mode not in ("keep_source", "spelled_warmup"))
            assert cfg.finetune.warmup_steps == (3 if mode == "spelled_warmup" else 0)
            if mode != "scratch":
                assert cfg.finetune.new_pieces == ("spelled" if mode == "spelled_warmup" else "fresh")

    results = json.loads((out / "results.json").read_text())
    modes = ["keep_source", "scratch", "spelled_warmup", "transfer"]
    for budget in ("budget", "converged"):
        assert sorted((r["seed"], r["mode"]) for r in results if r["budget"] == budget) == [
            (s, m) for s in (1, 2) for m in modes]
    steps = {(r["budget"], r["seed"], r["mode"]): r["steps"] for r in results}
    assert all(steps["budget", s, m] == 6 for s in (1, 2) for m in modes)
    # Converging continued each run past the budget (the cap is 12 updates).
    assert all(6 < steps["converged", s, m] <= 12 for s in (1, 2) for m in modes)
    capped = {(r["seed"], r["mode"]): r["capped"] for r in results if r["budget"] == "converged"}
    assert all(capped[s, m] == (steps["converged", s, m] == 12) for s in (1, 2) for m in modes)
    report = (out / "results.md").read_text()
    for budget in ("budget", "converged"):
        bleu = {(r["seed"], r["mode"]): r["test_bleu"] for r in results if r["budget"] == budget}
        per_seed = [round(bleu[s, "transfer"] - bleu[s, "scratch"], 2) for s in (1, 2)]
        assert (f"| {budget} | 100 | transfer | 1: {per_seed[0]:+.2f}, 2: {per_seed[1]:+.2f} | "
                f"**{sum(per_seed) / 2:+.2f}** |") in report


def test_another_language_pair_reads_and_scores_its_own_files(tmp_path, trained_run):
    # --src de --tgt en: the child reads train.de/train.en, translates the German test file
    # and is scored against the English one (not Multi30k's default en->fr files).
    data = write_multi30k_like(tmp_path / "data", train=120, valid=10, test=12, seed=3, src="de", tgt="en")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(trained_run), "--steps", "4", "--data", str(data),
                           "--out", str(out), "--sizes", "100", "--modes", "keep_source", "scratch",
                           "--src", "de", "--tgt", "en", "--set", "training.num_threads=1",
                           "--set", "training.valid_every=2"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for mode in ("keep_source", "scratch"):
        cfg = load_config(out / "seed1" / f"{mode}_100.yaml")
        assert (cfg.data.src_lang, cfg.data.tgt_lang) == ("de", "en")
        hyp = out / "seed1" / f"{mode}_100" / "test_2016_flickr.hyp.en"
        assert len(hyp.read_text().splitlines()) == 12
    assert (out / "data" / "train100.de").read_text().splitlines() == (data / "train.de").read_text().splitlines()[:100]
    assert (out / "results.md").read_text().startswith("de->en on Multi30k")
