"""The whole path through the CLI: train on a synthetic task, translate, score."""
import json
import subprocess
import sys

import yaml

from conftest import expected_translation, tiny_config_dict


def run_cli(*args, input_text=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "seq2seq", *args], input=input_text, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"seq2seq {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def test_train_translate_evaluate_learns_the_task(tmp_path, synthetic_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(synthetic_dir)))
    run_dir = tmp_path / "run"
    run_cli("train", "--config", str(config), "--run-dir", str(run_dir), "--quiet")
    for name in ("config.yaml", "spm.joint.model", "best.pt", "last.pt", "train.log", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and all("bleu" in r and "valid_loss" in r for r in records)

    sources = (synthetic_dir / "test.src").read_text().splitlines()
    src_file = tmp_path / "input.txt"
    # An empty line in the middle must come back as an empty line, in place.
    src_file.write_text("\n".join(sources[:20] + [""] + sources[20:]) + "\n")
    out = tmp_path / "hyp.txt"
    run_cli("translate", "--model", str(run_dir), "--input", str(src_file), "--output", str(out),
            "--beam-size", "3", "--device", "cpu")
    hyps = out.read_text().split("\n")[:-1]
    assert len(hyps) == len(sources) + 1
    assert hyps[20] == ""
    hyps = hyps[:20] + hyps[21:]
    exact = sum(h == expected_translation(s) for h, s in zip(hyps, sources)) / len(sources)
    assert exact >= 0.8, f"only {exact:.0%} of test sentences translated exactly"

    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(expected_translation(s) for s in sources) + "\n")
    hyp_only = tmp_path / "hyp_only.txt"
    hyp_only.write_text("\n".join(hyps) + "\n")
    scores = json.loads(run_cli("evaluate", "--hyp", str(hyp_only), "--ref", str(ref), "--json").stdout)
    assert scores["bleu"] >= 80.0

    # stdin -> stdout gives the same lines.
    piped = run_cli("translate", "--model", str(run_dir), "--beam-size", "3", "--device", "cpu",
                    input_text="\n".join(sources[:5]) + "\n").stdout.split("\n")[:-1]
    assert piped == hyps[:5]
