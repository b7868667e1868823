"""scripts/tune_decoding.py: validation BLEU per length penalty, the best named, test data never read."""
import builtins
import sys
from pathlib import Path

from seq2seq.metrics import score_all
from seq2seq.training.validation import read_validation
from seq2seq.decoding.translator import Translator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import tune_decoding  # noqa: E402


def test_it_decodes_the_validation_set_with_each_alpha_and_names_the_best(trained_run, capsys, monkeypatch):
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: opened.append(str(file)) or real_open(file, *a, **k))
    assert tune_decoding.main(["--model", str(trained_run), "--alphas", "0,2.5", "--beam-size", "3",
                               "--device", "cpu"]) == 0
    monkeypatch.setattr(builtins, "open", real_open)
    out = capsys.readouterr().out
    translator = Translator.load(trained_run, device="cpu")
    sources, refs = read_validation(translator.config.data)
    bleu = {alpha: score_all(translator.translate(sources, beam_size=3, length_penalty=alpha), refs)["bleu"]
            for alpha in (0.0, 2.5)}
    for alpha, score in bleu.items():
        assert f"| {alpha:g} | {score:.2f} |" in out
    best = max(bleu, key=bleu.get)
    assert f"best: alpha {best:g} (validation BLEU {bleu[best]:.2f})" in out
    test_prefix = translator.config.data.test
    assert any(f.endswith("valid.src") for f in opened)
    assert not any(f.startswith(test_prefix) for f in opened), opened
