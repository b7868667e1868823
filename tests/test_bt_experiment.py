"""experiments/bt_experiment.py: the reverse model back-translates only the monolingual lines, each
setting trains on the corpora it names (tagged or not, with or without subword sampling), and
the gains it reports are those of its own results."""
import json
import subprocess
import sys
from pathlib import Path

from conftest import write_multi30k_like
from seq2seq.config import load_config

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
