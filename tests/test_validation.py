"""Validation reads text exactly as `seq2seq translate` does, so the BLEU it logs for a
checkpoint is what `translate` + `evaluate` print for that checkpoint."""
import json
import shutil

from conftest import tiny_config_dict
from seq2seq.cli import main
from seq2seq.config import config_from_dict
from seq2seq.training.loop import train


def test_validation_bleu_equals_translate_then_evaluate(tmp_path, synthetic_dir, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    # Sources as users' files have them: stray spaces around lines, some already tagged (after
    # a space), and one longer than data.max_src_len (cut, with a warning, by translate).
    sources = (data / "valid.src").read_text().splitlines()
    for i in range(0, len(sources), 3):
        sources[i] = f"  {sources[i]} "
    for i in range(1, len(sources), 7):
        sources[i] = f" <2tgt> {sources[i]}"
    sources[2] = " ".join([sources[2].strip()] * 8)
    (data / "valid.src").write_text("\n".join(sources) + "\n")
    raw = tiny_config_dict(data, data={"src_prefix_tag": True},
                           training={"max_steps": 150, "valid_every": 75, "valid_at_epoch_end": False,
                                     "num_threads": 1})
    run_dir = tmp_path / "run"
    train(config_from_dict(raw), run_dir, quiet=True)

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = [r for r in records if r.get("best")][-1]
    assert 5.0 < best["bleu"] < 100.0  # learned something, and not everything: a real comparison

    hyp = tmp_path / "valid.hyp"
    assert main(["translate", "--model", str(run_dir), "--input", str(data / "valid.src"), "--output", str(hyp),
                 "--beam-size", str(raw["decoding"]["valid_beam_size"]), "--device", "cpu", "--quiet"]) == 0
    assert (run_dir / "valid.best.hyp").read_text() == hyp.read_text()
    capsys.readouterr()
    assert main(["evaluate", "--hyp", str(hyp), "--ref", str(data / "valid.tgt"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["bleu"] == best["bleu"]
    assert scores["chrf"] == best["chrf"]
