"""The `seq2seq` command, run as `python -m seq2seq` in a subprocess like a user would."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
import yaml

from conftest import expected_translation, tiny_config_dict, write_synthetic
from seq2seq import cli
from seq2seq.run.checkpoint import load_checkpoint
from seq2seq.errors import CheckpointError, DecodingError, DeviceError, TrainingError
from seq2seq.decoding.search import Sampling
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.decoding.translator import Translator

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
    (["--set", "tokenizer.vocab_size=10000000000"], ["tokenizer.vocab_size: must be at most 1952257860"]),
    (["--set", "training.betas=[0.9, 0.98"], ["training.betas: value '[0.9, 0.98': not valid YAML"]),
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


def test_yaml_syntax_errors_and_duplicate_keys_are_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  lr: 0.1\n  betas: [0.9, 0.98\nmodel: {}\n")
    assert_one_line_error(run_cli("train", "--config", config, "--run-dir", tmp_path / "run"), "train",
                          f"{config}:4:6: not valid YAML")
    config.write_text("training:\n  lr: 0.1\n  lr: 0.2\n")
    assert_one_line_error(run_cli("train", "--config", config, "--run-dir", tmp_path / "run"), "train",
                          f"{config}:3:3: training.lr: duplicate key (first at line 2)")
    assert not (tmp_path / "run").exists()


def test_a_vocabulary_smaller_than_the_alphabet_is_one_line(tmp_path):
    data = write_synthetic(tmp_path / "data", train=100, valid=5, test=2)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(data, tokenizer={"vocab_size": 8})))
    proc = run_cli("train", "--config", config, "--run-dir", tmp_path / "run", "--quiet")
    assert_one_line_error(proc, "train", "tokenizer.vocab_size: 8 is too small", "characters")


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
    assert "warning" not in proc.stderr  # blank inputs give blank outputs: nothing to warn about
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


def test_a_model_that_writes_empty_translations_is_warned_about(tmp_path, trained_run, sources):
    # A model that ends every sentence at once, as one trained for too few updates does: translate
    # and evaluate still do their job, line for line, and say on stderr that something is wrong.
    import shutil

    from seq2seq.run.checkpoint import save_checkpoint
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    payload = load_checkpoint(run / "best.pt")
    payload["model"]["decoder.output.bias"][3] = 1e4  # EOS (id 3) before anything else
    save_checkpoint(run / "best.pt", payload)
    src, out, ref = tmp_path / "in.txt", tmp_path / "out.txt", tmp_path / "ref.txt"
    src.write_text("\n".join(["", *sources[:5]]) + "\n")
    ref.write_text("\n".join(["", *(expected_translation(s) for s in sources[:5])]) + "\n")
    proc = run_cli("translate", "--model", run, "--input", src, "--output", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "\n" * 6
    assert f"warning: 5 of 5 non-empty input lines got an empty translation in {out}" in proc.stderr
    proc = run_cli("evaluate", "--hyp", out, "--ref", ref)
    assert proc.returncode == 0 and "BLEU" in proc.stdout
    assert f"warning: 5 of 6 hypotheses in {out} are empty" in proc.stderr
    good = tmp_path / "good.txt"
    good.write_text(ref.read_text())
    assert "warning" not in run_cli("evaluate", "--hyp", good, "--ref", ref).stderr


def test_translate_stdout_equals_file_output(tmp_path, trained_run, sources):
    piped = run_cli("translate", "--model", trained_run, "--beam-size", 1, "--device", "cpu",
                    input_text="\n".join(sources[:4]) + "\n")
    assert piped.returncode == 0, piped.stderr
    expected = Translator.load(trained_run, device="cpu").translate(sources[:4], beam_size=1)
    assert piped.stdout.split("\n") == expected + [""]


def test_translate_sample_is_reproducible_line_for_line_and_independent_of_batching(tmp_path, trained_run, sources):
    lines = [sources[0], "", *sources[1:8], "  "]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    outputs = {}
    for name, args in (("a", ["--temperature", 2, "--batch-size", 1]), ("b", ["--temperature", 2, "--batch-size", 64]),
                       ("seed", ["--temperature", 2, "--seed", 2]), ("top", ["--top-k", 2, "--temperature", 3])):
        proc = run_cli("translate", "--model", trained_run, "--input", src, "--sample", "--device", "cpu", *args)
        assert proc.returncode == 0, proc.stderr
        outputs[name] = proc.stdout.split("\n")[:-1]
        assert len(outputs[name]) == len(lines)
        assert outputs[name][1] == "" and outputs[name][-1] == ""  # empty in, empty out
    assert outputs["a"] == outputs["b"] != outputs["seed"]
    # The CLI draws what the library draws for the same line numbers.
    expected = Translator.load(trained_run, device="cpu").translate(lines, sampling=Sampling(seed=1, temperature=2.0))
    assert outputs["a"] == expected
    # --scores (TSV) draws the same translations.
    scored = run_cli("translate", "--model", trained_run, "--input", src, "--sample", "--temperature", 2, "--scores",
                     "--batch-size", 2, "--device", "cpu")
    assert scored.returncode == 0, scored.stderr
    assert [line.split("\t")[0] for line in scored.stdout.split("\n")[:-1]] == expected


@pytest.mark.parametrize("args, words", [
    (["--sample", "--beam-size", 4], ["--sample", "--beam-size"]),
    (["--sample", "--nbest", 2], ["--sample", "--nbest"]),
    (["--top-k", 5], ["--top-k: only used with --sample"]),
    (["--seed", 5], ["--seed: only used with --sample"]),
    (["--sample", "--top-k", 0], ["--top-k: must be at least 1"]),
    (["--sample", "--temperature", 0], ["--temperature: must be a number above 0"]),
    (["--sample", "--temperature", "nan"], ["--temperature"]),
    (["--sample", "--seed", -1], ["--seed: must be from 0"]),
])
def test_translate_sample_option_errors_are_one_line(trained_run, args, words):
    assert_one_line_error(run_cli("translate", "--model", trained_run, "--device", "cpu", *args, input_text="ka\n"),
                          "translate", *words)


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


def test_evaluate_shows_the_literature_bleu_under_its_own_label(tmp_path, capsys):
    pytest.importorskip("sacremoses")
    from seq2seq.metrics import literature_bleu
    from test_metrics import HYPS, REFS
    hyp, ref, ref_txt = tmp_path / "hyp.de", tmp_path / "ref.de", tmp_path / "ref.txt"
    hyp.write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    for path in (ref, ref_txt):
        path.write_text("\n".join(REFS) + "\n", encoding="utf-8")

    def literature_lines(*args):
        assert cli.main(["evaluate", "--hyp", str(hyp), *map(str, args)]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("BLEU (literature")]

    expected = literature_bleu(HYPS, REFS, "de")
    label = "BLEU (literature: lowercased, Moses-tokenized; not comparable to sacreBLEU)"
    assert literature_lines("--ref", ref) == [f"{label}: {expected:.2f} (Moses tokenizer: de)"]  # from ".de"
    assert literature_lines("--ref", ref_txt, "--lang", "de") == [f"{label}: {expected:.2f} (Moses tokenizer: de)"]
    [line] = literature_lines("--ref", ref_txt)  # no language to be found: said, no figure
    assert "--lang" in line and "not computed" in line
    assert cli.main(["evaluate", "--hyp", str(hyp), "--ref", str(ref), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["bleu_literature"] == expected and scores["bleu_literature_label"] == label
    assert scores["bleu_literature_lang"] == "de" and scores["bleu"] != expected


def test_evaluate_without_sacremoses_says_which_extra_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sacremoses", None)  # importing it fails, as when it is not installed
    hyp = tmp_path / "hyp.de"
    hyp.write_text("ein großer Hund läuft über die Wiese .\n", encoding="utf-8")
    assert cli.main(["evaluate", "--hyp", str(hyp), "--ref", str(hyp)]) == 0
    out = capsys.readouterr().out.splitlines()
    [line] = [line for line in out if "literature" in line]
    assert "pip install 'seq2seq-rnn[moses]'" in line and "100.00" not in line
    assert out[0].startswith("BLEU            100.00")  # the other scores are there as ever


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



# ---------------------------------------------------------------------------------------
# A run directory that holds a run is never overwritten silently (issue 28)


def small_run_config(tmp_path, **training) -> Path:
    data = write_synthetic(tmp_path / "data", train=200, valid=10, test=2)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(data, training={"max_steps": 2, **training})))
    return config


def test_train_into_a_run_refuses_unless_resume_or_overwrite(tmp_path):
    config = small_run_config(tmp_path)
    run = tmp_path / "run"
    assert run_cli("train", "--config", config, "--run-dir", run, "--quiet").returncode == 0
    before = {name: (run / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.jsonl", "spm.joint.model")}
    proc = run_cli("train", "--config", config, "--run-dir", run, "--quiet")
    assert_one_line_error(proc, "train", f"{run}: holds a run (", "last.pt", "--resume", "--overwrite",
                          "another --run-dir")
    proc = run_cli("prepare", "--config", config, "--run-dir", run, "--set", "tokenizer.vocab_size=48")
    assert_one_line_error(proc, "prepare", f"{run}: holds a run (", "another --run-dir")
    assert {name: (run / name).read_bytes() for name in before} == before, "nothing may change"

    proc = run_cli("train", "--config", config, "--run-dir", run, "--resume", "--set", "training.max_steps=4",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(run / "last.pt")["step"] == 4

    proc = run_cli("train", "--config", config, "--run-dir", run, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert f"--overwrite: removed from {run}: " in proc.stderr and "last.pt" in proc.stderr
    assert load_checkpoint(run / "last.pt")["step"] == 2  # a fresh run
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_prepare_then_train_on_the_same_run_dir_reuses_the_tokenizer(tmp_path):
    config = small_run_config(tmp_path)
    run = tmp_path / "run"
    assert run_cli("prepare", "--config", config, "--run-dir", run, "--quiet").returncode == 0
    tokenizer = (run / "spm.joint.model").read_bytes()
    proc = run_cli("train", "--config", config, "--run-dir", run)
    assert proc.returncode == 0, proc.stderr
    assert (run / "spm.joint.model").read_bytes() == tokenizer
    assert "using the prepared store" in proc.stderr and "training it again" not in proc.stderr


def test_a_tokenizer_whose_settings_or_data_changed_is_not_reused_silently(tmp_path):
    config = small_run_config(tmp_path)
    run = tmp_path / "run"
    assert run_cli("prepare", "--config", config, "--run-dir", run, "--quiet").returncode == 0
    first = (run / "spm.joint.model").read_bytes()
    proc = run_cli("prepare", "--config", config, "--run-dir", run, "--set", "tokenizer.vocab_size=48")
    assert proc.returncode == 0, proc.stderr
    assert "tokenizer.vocab_size changed (64 -> 48)" in proc.stderr and "training it again" in proc.stderr
    assert (run / "spm.joint.model").read_bytes() != first
    assert len(Tokenizer(run / "spm.joint.model")) <= 48

    data = tmp_path / "data" / "train.src"
    data.write_text(data.read_text().replace("ka", "kax"))
    second = (run / "spm.joint.model").read_bytes()
    proc = run_cli("train", "--config", config, "--run-dir", run, "--set", "tokenizer.vocab_size=48")
    assert proc.returncode == 0, proc.stderr
    assert f"the training data changed ({data})" in proc.stderr and "training it again" in proc.stderr
    assert (run / "spm.joint.model").read_bytes() != second

    # --resume keeps the tokenizer the model was trained with, and says that the data changed
    data.write_text(data.read_text().replace("lo", "la"))
    trained = (run / "spm.joint.model").read_bytes()
    proc = run_cli("train", "--run-dir", run, "--resume", "--set", "training.max_steps=3")
    assert proc.returncode == 0, proc.stderr
    assert (run / "spm.joint.model").read_bytes() == trained
    assert f"the training data changed ({data})" in proc.stderr and "--resume keeps" in proc.stderr


def test_the_commands_behind_the_readme_results_do_not_share_a_run_directory():
    # The README's Results table links docs/reproducing.md for the commands behind each row.
    readme = (ROOT / "README.md").read_text()
    results = readme[readme.index("## Results"):]
    assert "docs/reproducing.md" in results[:results.index("\n## ")]
    guide = (ROOT / "docs" / "reproducing.md").read_text()
    block = guide[guide.index("# [1] train"):]
    block = block[:block.index("```")]
    commands = [line for line in block.replace("\\\n", " ").splitlines() if "seq2seq train" in line]
    starts = [c for c in commands if "--resume" not in c]
    run_dirs = [c.split("--run-dir")[1].split()[0] for c in starts]
    assert len(starts) >= 2 and len(run_dirs) == len(starts) and len(set(run_dirs)) == len(run_dirs), commands


# ---------------------------------------------------------------------------------------
# A newcomer's path (issue 28)


def test_version():
    import seq2seq
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"seq2seq {seq2seq.__version__}"


def test_train_takes_the_config_as_a_positional_argument(tmp_path):
    config = small_run_config(tmp_path)
    proc = run_cli("train", config, "--run-dir", tmp_path / "run", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text())
    assert_one_line_error(run_cli("train", config, "--config", other), "train", "two configs given")


def test_a_checkpoint_file_given_as_model_hints_at_the_directory_and_checkpoint(trained_run):
    proc = run_cli("translate", "--model", trained_run / "best.pt", "--device", "cpu", input_text="ka lo\n")
    assert_one_line_error(proc, "translate", f"{trained_run / 'best.pt'}: is a checkpoint file, not a run directory",
                          f"--model {trained_run} --checkpoint best.pt")
    proc = run_cli("serve", "--model", trained_run / "last.pt", "--device", "cpu")
    assert_one_line_error(proc, "serve", f"--model {trained_run} --checkpoint last.pt")


def test_training_without_its_data_points_to_the_download_script(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text((ROOT / "configs" / "tiny.yaml").read_text())
    proc = run_cli("train", config, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_one_line_error(proc, "train", "data/multi30k/train.en: file not found", "scripts/get_multi30k.sh")
    proc = run_cli("prepare", "--config", config, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_one_line_error(proc, "prepare", "file not found", "scripts/get_multi30k.sh")


def test_the_package_has_a_name_of_its_own_on_the_package_index():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = project["name"]
    # "seq2seq" on PyPI is an unrelated project; ours is installed as seq2seq-rnn, imported as seq2seq.
    assert name == "seq2seq-rnn"
    assert project["scripts"] == {"seq2seq": "seq2seq.cli:main"}
    assert any(dep.startswith(f"{name}[") for dep in project["optional-dependencies"]["dev"])
    hints = []
    for path in [ROOT / "README.md", ROOT / "pyproject.toml", *(ROOT / "docs").glob("*.md"),
                 *(ROOT / "seq2seq").rglob("*.py"), *(ROOT / "scripts").glob("*"), *(ROOT / "experiments").glob("*")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            hints += [(path.name, m) for m in re.findall(r"(?<![-\w])seq2seq\[[a-z,]+\]", text)]
    assert hints == [], hints  # `pip install 'seq2seq[serve]'` would install the unrelated project


def shell_commands(text: str) -> list[str]:
    """The commands of a shell script or code block: comment lines and trailing comments left out."""
    return [line.split(" #")[0].strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_setup_starts_with_a_virtual_environment_and_ci_runs_the_same_commands():
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up"):]
    block = setup[setup.index("```bash\n") + 8:]
    commands = shell_commands(block[:block.index("```")])
    # A virtual environment first, so that set-up never installs into whichever python3 comes first.
    assert commands == ["python3 -m venv .venv", ". .venv/bin/activate", "scripts/setup.sh"], commands
    ignored = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert {".venv", ".venv/", "/.venv", "/.venv/"} & set(ignored), "the virtual environment must be git-ignored"
    script = ROOT / "scripts" / "setup.sh"
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text()
    assert "-c constraints.txt" in text and "npm ci --prefix web" in text and "chromium" in text
    tests = readme[readme.index("## Tests"):]
    test_command = shell_commands(tests[tests.index("```bash\n") + 8:tests.index("```", tests.index("```bash\n") + 8)])
    # -rs: a reader of the output (CI's above all) sees which tests did not run, and why.
    assert test_command == ["python3 -m pytest -q -rs"], test_command
    # CI runs the README's set-up commands in the README's order, then its test command, and
    # installs nothing on its own. It sets CI when the service has not, before set-up: with it,
    # set-up and the tests fail where a tool the tests need is missing (the README says so).
    steps = shell_commands((ROOT / ".ci" / "run").read_text())
    assert [step for step in steps if step in commands] == commands, steps
    assert test_command[0] in steps and steps.index(test_command[0]) > steps.index(commands[-1]), steps
    assert not any("pip install" in step or "npm ci" in step or "apt-get" in step for step in steps), steps
    assert 'export CI="${CI:-true}"' in steps and steps.index('export CI="${CI:-true}"') < steps.index(commands[-1])
    assert "`CI`" in tests[:tests.index("\n## ")] and "fails instead" in tests[:tests.index("\n## ")]


def table_row(text: str, label: str) -> list[str]:
    """The cells after the first of the Markdown table row whose first cell is `label` (bold left out)."""
    for line in text.splitlines():
        cells = [cell.strip().strip("*") for cell in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no table row {label!r}")


def figures(pattern: str, text: str, what: str) -> tuple[str, ...]:
    found = re.search(pattern, text)
    assert found, f"{what}: nothing matches {pattern!r}"
    return found.groups()


def test_the_quickstart_figures_are_those_of_the_write_ups_behind_them():
    # Each time and score the Quickstart promises is read from the README and must be the one in
    # the measurement it comes from (the write-up it links, or the one its Results row links), so
    # a figure edited on one side only, or a write-up that moved, fails here.
    readme = (ROOT / "README.md").read_text()
    prose = " ".join(readme.split())  # sentences whatever their line breaks
    quickstart = prose[prose.index("## Quickstart"):prose.index("## Results")]
    results = readme[readme.index("## Results"):readme.index("## Guides")]

    def results_row(config: str) -> str:
        rows = [line for line in results.splitlines() if line.startswith("|") and f"`{config}`" in line]
        assert rows, f"no Results row names {config}"
        return rows[0]

    def write_up(row: str) -> str:
        [path] = figures(r"\[write-up\]\(([^)]+)\)", row, "the Results row's write-up")
        return (ROOT / path).read_text()

    # The tiny recipe: its updates, beam 5 and greedy BLEU, in the quickstart run it links.
    updates, beam5, greedy, path = figures(
        r"trains 4 epochs \(([\d,]+) updates.*? reaches (\d+\.\d+) BLEU on test_2016_flickr with beam 5 "
        r"\((\d+\.\d+) greedy; \[[^\]]*\]\(([^)]+)\)", quickstart, "the tiny recipe")
    tiny = " ".join((ROOT / path).read_text().split())
    assert figures(r"beam 5 \(the README's translate command\): BLEU (\d+\.\d+)", tiny, path) == (beam5,)
    assert figures(r"beam 1 \(greedy\): BLEU (\d+\.\d+)", tiny, path) == (greedy,)
    assert figures(r"\(4 epochs: ([\d,]+) updates\)", tiny, path) == (updates,)

    # The recipe: epochs and minutes of the README's command, that run's BLEU (cased, lowercased),
    # and the mean of three seeds; the Results row says the same.
    config, epochs, minutes, bleu, lowercased, mean = figures(
        r"`([^`]+)`, trains its (\d+) epochs in (\d+\.\d+) minutes and reached (\d+\.\d+) BLEU "
        r"\((\d+\.\d+) lowercased; three seeds: (\d+\.\d+) on average", quickstart, "the recipe")
    assert config == "configs/multi30k_en_de_tied_ema.yaml"
    row = results_row(config)
    text = write_up(row)
    assert figures(r"Training: (\d+) epochs, [\d,]+ updates, \*\*(\d+\.\d+) minutes\*\*", " ".join(text.split()),
                   "the recipe's write-up") == (epochs, minutes)
    assert table_row(text, "seed 3, the README's command")[:2] == [bleu, lowercased]
    assert table_row(text, "mean of 3")[0] == mean
    assert f"{epochs} epochs ({minutes} minutes of training)" in row and f"**{mean}**" in row, row

    # Its base: BLEU of best.pt with beam 5, and the minutes of training.
    config, bleu, minutes = figures(r"`([^`]+)`, reached (\d+\.\d+) after (\d+\.\d+) minutes", quickstart, "the base")
    assert config == "configs/multi30k_en_de.yaml"
    row = results_row(config)
    text = write_up(row)
    assert f"{minutes} minutes of training" in " ".join(text.split())
    assert table_row(text, "`best.pt` (step 9,080), beam 5")[0] == bleu
    assert f"{minutes} minutes of training" in row and f"**{bleu}**" in row, row
