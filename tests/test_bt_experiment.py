"""experiments/bt_experiment.py: the reverse model back-translates only the monolingual lines, each
setting trains on the corpora it names (tagged or not, with or without subword sampling), the
gains it reports are those of its own results, and a stored result is reused only for the
inputs that made it."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from conftest import write_multi30k_like
from seq2seq.config import load_config
from seq2seq.run.checkpoint import load_checkpoint, save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bt_experiment.py"


def test_settings_train_on_their_corpora_and_gains_are_per_seed(tmp_path, trained_run):
    data = write_multi30k_like(tmp_path / "data", train=160, valid=12, test=12, seed=5, src="en", tgt="fr")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(trained_run), str(trained_run), "--steps", "4",
                           "--data", str(data), "--out", str(out), "--sizes", "100", "--subword", "off", "on",
                           "--copies", "2", "--seeds", "1", "2", "--top-k", "3",
                           "--settings", "alone", "bt_sample_tag", "bt_beam", "bt_topk_tag", "bt_beam_tag",
                           "--jobs", "2", "--set", "training.num_threads=1", "--set", "training.valid_every=2"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    french = (data / "train.fr").read_text().splitlines()
    mono = (out / "data" / "mono.fr").read_text().splitlines()
    assert mono == french[100:]  # the lines after the real pairs, and only those
    sampled = (out / "data" / "bt_sample_100.en").read_text().splitlines()
    beam = (out / "data" / "bt_beam_100.en").read_text().splitlines()
    top_k = (out / "data" / "bt_topk_100.en").read_text().splitlines()
    assert len(sampled) == len(beam) == len(top_k) == len(mono)
    assert sampled != beam and top_k != beam and top_k != sampled
    assert (out / "data" / "bt_sample_100.fr").read_text().splitlines() == mono

    reverse = load_config(out / "reverse_100.yaml")
    assert (reverse.data.src_lang, reverse.data.tgt_lang, reverse.training.max_steps) == ("fr", "en", 4)
    for seed in (1, 2):
        for subword in ("off", "on"):
            for setting in ("alone", "bt_sample_tag", "bt_beam", "bt_topk_tag", "bt_beam_tag"):
                cfg = load_config(out / f"seed{seed}" / f"{setting}_{subword}_100.yaml")
                assert cfg.training.seed == seed and cfg.init_from == str(trained_run)
                corpora = [(Path(c.path).name, c.tag) for c in cfg.data.train]
                assert corpora == [("train100", None)] + {
                    "alone": [], "bt_sample_tag": [("bt_sample_100", "<bt>")], "bt_beam": [("bt_beam_100", None)],
                    "bt_topk_tag": [("bt_topk_100", "<bt>")], "bt_beam_tag": [("bt_beam_100", "<bt>")]}[setting]
                # The synthetic task's parent has a BPE tokenizer: BPE-dropout.
                assert (cfg.tokenizer.sampling.dropout, cfg.tokenizer.sampling.alpha) == (
                    (0.1, None) if subword == "on" else (None, None))
                assert cfg.tokenizer.sampling.copies == (2 if subword == "on" else 4)
                assert (out / f"seed{seed}" / f"{setting}_{subword}_100" / "best.pt").exists()

    results = json.loads((out / "results.json").read_text())
    assert len(results) == 20
    bleu = {(r["setting"], r["subword"], r["seed"]): r["test_bleu"] for r in results}
    report = (out / "results.md").read_text()
    gains = [bleu["bt_sample_tag", "on", s] - bleu["alone", "off", s] for s in (1, 2)]
    assert "| 100 | on | bt_sample_tag | 2 | " in report
    assert f"1: {gains[0]:+.2f}, 2: {gains[1]:+.2f} | **{sum(gains) / 2:+.2f}** |" in report


def test_a_stored_result_is_reused_only_for_the_parent_and_top_k_that_made_it(tmp_path, trained_run):
    data = write_multi30k_like(tmp_path / "data", train=130, valid=8, test=8, seed=7, src="en", tgt="fr")
    parent = tmp_path / "parent"  # a copy whose weights the test changes later
    shutil.copytree(trained_run, parent)
    out = tmp_path / "out"
    runs = {setting: out / "seed1" / f"{setting}_off_100" for setting in ("alone", "bt_topk_tag")}

    def experiment(top_k, forward_parent=parent):
        return subprocess.run([sys.executable, str(SCRIPT), str(forward_parent), str(trained_run), "--steps", "2",
                               "--data", str(data), "--out", str(out), "--sizes", "100", "--seeds", "1",
                               "--settings", "alone", "bt_topk_tag", "--top-k", str(top_k),
                               "--set", "training.valid_every=2"], capture_output=True, text=True, timeout=600, cwd=tmp_path)

    def stored():
        return {setting: (run_dir / "result.json").read_text() for setting, run_dir in runs.items()}

    proc = experiment(3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = stored()
    key = json.loads(first["bt_topk_tag"])["key"]
    # The key names what made the result: the parent (path and checksums), the config (steps,
    # seed, corpora, tag), the data files, and the synthetic corpus (search, monolingual text).
    assert key["parent"]["path"] == str(parent.resolve()) and set(key["parent"]["sha256"]) >= {"best.pt", "config.yaml"}
    assert (key["config"]["training"]["max_steps"], key["config"]["training"]["seed"]) == (2, 1)
    assert [c["tag"] for c in key["config"]["data"]["train"]] == [None, "<bt>"]
    assert key["synthetic"]["search"] == ["--sample", "--seed", "1", "--top-k", "3"]
    assert key["synthetic"]["mono"]["from_line"] == 101 and key["synthetic"]["mono"]["lines"] == 30
    assert key["synthetic"]["reverse"]["parent"]["path"] == str(trained_run.resolve())
    assert json.loads(first["alone"])["key"]["synthetic"] is None

    # The same inputs: every result is reused, nothing trained or translated.
    proc = experiment(3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "-m seq2seq" not in proc.stdout and stored() == first

    # Another --top-k: refused before anything runs, naming the top-k run only (`alone` does not
    # depend on it); no result is reused or overwritten.
    proc = experiment(4)
    assert proc.returncode != 0 and "-m seq2seq" not in proc.stdout
    assert f"{runs['bt_topk_tag']}: made with other inputs: synthetic.search:" in proc.stderr, proc.stderr
    assert f"{runs['alone']}:" not in proc.stderr and "reverse_100" not in proc.stderr
    assert stored() == first

    # Another parent directory (the same weights): refused too.
    proc = experiment(3, forward_parent=trained_run)
    assert proc.returncode != 0 and "-m seq2seq" not in proc.stdout
    assert all(f"{run_dir}: made with other inputs:" in proc.stderr for run_dir in runs.values()), proc.stderr
    assert "parent.path:" in proc.stderr and stored() == first

    # The top-k run deleted, the other top-k trains it again from a new back-translation and
    # reuses `alone`.
    shutil.rmtree(runs["bt_topk_tag"])
    proc = experiment(4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("-m seq2seq train") == 1 and "--top-k 4" in proc.stdout
    assert json.loads((out / "data" / "bt_topk_100.key.json").read_text())["search"][-1] == "4"
    assert json.loads(stored()["bt_topk_tag"])["key"]["synthetic"]["search"][-1] == "4"
    assert stored()["alone"] == first["alone"]
    second = stored()
    listed = json.loads((out / "results.json").read_text())
    assert sorted(r["setting"] for r in listed) == ["alone", "bt_topk_tag"] and all("key_sha256" in r for r in listed)

    # The parent's weights changed in place (same path, same config): neither forward result is
    # reused; the reverse run, from another parent, is not named.
    checkpoint = load_checkpoint(parent / "best.pt")
    with torch.no_grad():
        next(iter(checkpoint["model"].values())).add_(0.01)
    save_checkpoint(parent / "best.pt", checkpoint)
    proc = experiment(4)
    assert proc.returncode != 0 and "-m seq2seq" not in proc.stdout
    assert all(f"{run_dir}: made with other inputs: parent.sha256.best.pt:" in proc.stderr
               for run_dir in runs.values()), proc.stderr
    assert "reverse_100" not in proc.stderr and stored() == second
