"""seq2seq distill (issue #40): the teachers' translations of every training line, one for one
and equal to `translate`; a killed distillation resumes without repeating or losing a line; a
resume that would mix teachers, beams or data is refused; a student trained on the distilled
corpus learns the task; an ensemble of teachers distills what `translate --model A --model B`
gives."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import expected_translation, tiny_config_dict, write_synthetic
from seq2seq.config import config_from_dict, load_run_config
from seq2seq.decoding.translator import Translator
from seq2seq.errors import ConfigError, DataError
from seq2seq.training.distill import Teachers, distill
from seq2seq.training.distill_record import RECORD_FILE
from seq2seq.training.loop import train

BEAM = 3


def cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    # One thread, as the test process runs: two threads on a busy 2-core machine decode several times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "seq2seq", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"seq2seq {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def student_yaml(path: Path, data_dir: Path, train: Path | None = None, **sections) -> Path:
    """A student config on the synthetic task, its data.train `train` (default: the task's)."""
    raw = tiny_config_dict(data_dir, **sections)
    if train is not None:
        raw["data"]["train"] = str(train)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def small_corpus(directory: Path, source: Path, lines: int) -> Path:
    """The first `lines` pairs of the synthetic training corpus as a corpus of its own."""
    directory.mkdir(parents=True, exist_ok=True)
    for lang in ("src", "tgt"):
        kept = (source / f"train.{lang}").read_text(encoding="utf-8").splitlines()[:lines]
        (directory / f"small.{lang}").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return directory / "small"


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, trained_run, synthetic_dir) -> Path:
    """The synthetic task's training corpus distilled by the tiny teacher; the student config
    has a tokenizer of another size than the teacher's, so the two tokenizers differ."""
    tmp = tmp_path_factory.mktemp("distill")
    config = student_yaml(tmp / "student.yaml", synthetic_dir, tokenizer={"vocab_size": 60})
    cli("distill", "--model", trained_run, "--config", config, "--out", tmp / "out", "--beam-size", BEAM,
        "--device", "cpu")
    return tmp / "out"


def test_distilling_gives_one_line_per_training_line_equal_to_translate(distilled, trained_run, synthetic_dir,
                                                                          tmp_path):
    source = synthetic_dir / "train.src"
    assert (distilled / "train.src").read_bytes() == source.read_bytes()  # the source beside it, one for one
    out = tmp_path / "translated.tgt"
    cli("translate", "--model", trained_run, "--input", source, "--output", out, "--beam-size", BEAM,
        "--device", "cpu")
    distilled_lines = (distilled / "train.tgt").read_text(encoding="utf-8").split("\n")
    assert len(distilled_lines) - 1 == len(source.read_text(encoding="utf-8").splitlines()) == 3000
    assert (distilled / "train.tgt").read_text(encoding="utf-8") == out.read_text(encoding="utf-8")

    student = load_run_config(distilled / "config.yaml")
    assert [(c.path, c.weight) for c in student.data.train] == [(str(distilled / "train"), 1.0)]
    assert student.data.valid == str(synthetic_dir / "valid")  # validation stays on the references
    assert student.tokenizer.vocab_size == 60
    record = json.loads((distilled / RECORD_FILE).read_text())
    assert record["corpora"][0]["lines"] == 3000 and record["corpora"][0]["done"]
    assert record["identity"]["beam_size"] == BEAM


def test_a_student_trained_on_the_distilled_corpus_learns_the_task(distilled, trained_run, synthetic_dir, tmp_path):
    run_dir = tmp_path / "student"
    cli("train", distilled / "config.yaml", "--run-dir", run_dir, "--quiet")
    # The student trained its own tokenizer on the distilled text; the teacher's is another.
    assert (run_dir / "spm.joint.model").read_bytes() != (trained_run / "spm.joint.model").read_bytes()
    translator = Translator.load(run_dir, device="cpu")
    sources = (synthetic_dir / "test.src").read_text(encoding="utf-8").splitlines()
    hyps = translator.translate(sources, beam_size=BEAM)
    exact = sum(h == expected_translation(s) for h, s in zip(hyps, sources)) / len(sources)
    assert exact >= 0.8, f"the student translated only {exact:.0%} of the test sentences exactly"


def wait_for_lines(out: Path, at_least: int, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Poll the progress record until it counts `at_least` lines; returns what it counts."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            lines = json.loads((out / RECORD_FILE).read_text())["corpora"][0]["lines"]
        except (OSError, ValueError):
            lines = 0  # not written yet (it is replaced atomically, so never half written)
        if lines >= at_least:
            return lines
        if proc.poll() is not None:
            raise AssertionError(f"distill ended ({proc.returncode}) before its record counted {at_least} lines")
        time.sleep(0.01)
    raise AssertionError(f"no {at_least} lines distilled within {timeout} s")


def test_a_killed_distillation_resumes_without_repeating_or_losing_lines(trained_run, tmp_path):
    data = write_synthetic(tmp_path / "data", train=4000, valid=10, test=10, seed=7)
    config = student_yaml(tmp_path / "student.yaml", data)
    options = ["--beam-size", BEAM, "--batch-size", 20, "--chunk-lines", 20, "--device", "cpu", "--quiet"]
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "seq2seq", "distill", "--model", trained_run, "--config", config, "--out", out,
            *options]
    proc = subprocess.Popen(list(map(str, args)), env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_lines(out, 40, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = json.loads((out / RECORD_FILE).read_text())["corpora"][0]
    assert 40 <= done["lines"] < 4000 and not done["done"], "the kill came too late to test a resume"
    # What a kill between writing a chunk and recording it leaves: a partial tail past the record.
    for name in ("train.src", "train.tgt"):
        with open(out / name, "ab") as f:
            f.write(b"half a chunk that the record does not count\nand no newli")

    resumed = distill(Teachers((str(trained_run),), device="cpu"), student_config=config, out=out, beam_size=BEAM,
                      batch_size=20, chunk_lines=20, quiet=True)
    assert resumed.new_lines == 4000 - done["lines"] and resumed.lines == 4000
    whole = tmp_path / "whole"
    distill(Teachers((str(trained_run),), device="cpu"), student_config=config, out=whole, beam_size=BEAM,
            batch_size=20, chunk_lines=20, quiet=True)
    for name in ("train.src", "train.tgt", "config.yaml"):
        assert (out / name).read_text().splitlines() == (whole / name).read_text().replace(
            str(whole), str(out)).splitlines(), name
    assert (out / "train.src").read_bytes() == (data / "train.src").read_bytes()


def test_a_resume_that_would_mix_teachers_beams_or_data_is_refused(trained_run, second_teacher, synthetic_dir,
                                                                   tmp_path):
    corpus = small_corpus(tmp_path / "data", synthetic_dir, 30)
    config = student_yaml(tmp_path / "student.yaml", synthetic_dir, train=corpus)
    out = tmp_path / "out"
    teacher = Teachers((str(trained_run),), device="cpu")
    distill(teacher, student_config=config, out=out, beam_size=BEAM, quiet=True)
    refused = cli("distill", "--model", trained_run, "--config", config, "--out", out, "--beam-size", 2, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"seq2seq distill: error: --beam-size 2: {out} was begun with beam {BEAM}; give the same, or a new --out "
        f"to start over"]
    with pytest.raises(DataError, match=r"^--model: .* was begun with other teachers"):
        distill(Teachers((str(second_teacher),), device="cpu"), student_config=config, out=out, beam_size=BEAM)
    other = student_yaml(tmp_path / "other.yaml", synthetic_dir)
    with pytest.raises(DataError, match=r"^--config: data.train is .* but .* was begun with"):
        distill(teacher, student_config=other, out=out, beam_size=BEAM)
    source = corpus.with_suffix(".src")
    source.write_text("ka " + source.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{source}: its first 30 lines changed since"):
        distill(teacher, student_config=config, out=out, beam_size=BEAM)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"holds files but no distillation"):
        distill(teacher, student_config=config, out=tmp_path / "busy", beam_size=BEAM)
    wrong_pair = student_yaml(tmp_path / "pair.yaml", synthetic_dir, data={"tgt_lang": "src", "src_lang": "tgt"})
    with pytest.raises(ConfigError, match=r"the student translates tgt->src .* but the teachers src->tgt"):
        distill(teacher, student_config=wrong_pair, out=tmp_path / "pair", beam_size=BEAM)


def test_references_are_listed_beside_the_distilled_corpora_with_their_weight(trained_run, synthetic_dir, tmp_path):
    corpus = small_corpus(tmp_path / "data", synthetic_dir, 20)
    config = student_yaml(tmp_path / "student.yaml", synthetic_dir, train=corpus)
    done = distill(Teachers((str(trained_run),), device="cpu"), student_config=config, out=tmp_path / "out",
                   beam_size=BEAM, references=0.5, quiet=True)
    student = load_run_config(done.config)
    assert [(c.path, c.weight) for c in student.data.train] == [(str(tmp_path / "out" / "small"), 1.0),
                                                                (str(corpus), 0.5)]
    with pytest.raises(ConfigError, match="--references"):
        distill(Teachers((str(trained_run),)), student_config=config, out=tmp_path / "out", references=0.0)


@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory, synthetic_dir) -> Path:
    """Another teacher of another size trained briefly on the same text: its tokenizer, trained
    on that text with the same settings, is the first teacher's, so the two make an ensemble."""
    run_dir = tmp_path_factory.mktemp("second_teacher")
    raw = tiny_config_dict(synthetic_dir, model={"encoder": {"hidden_size": 24}, "decoder": {"hidden_size": 48}},
                           training={"max_epochs": 3, "seed": 2})
    train(config_from_dict(raw), run_dir, quiet=True)
    return run_dir


def test_an_ensemble_of_teachers_distills_what_translate_gives_with_both(trained_run, second_teacher, synthetic_dir,
                                                                          tmp_path):
    corpus = small_corpus(tmp_path / "data", synthetic_dir, 300)
    config = student_yaml(tmp_path / "student.yaml", synthetic_dir, train=corpus)
    cli("distill", "--model", trained_run, "--model", second_teacher, "--config", config, "--out", tmp_path / "out",
        "--beam-size", BEAM, "--device", "cpu")
    out = tmp_path / "translated.tgt"
    cli("translate", "--model", trained_run, "--model", second_teacher, "--input", corpus.with_suffix(".src"),
        "--output", out, "--beam-size", BEAM, "--device", "cpu")
    ensemble = (tmp_path / "out" / "small.tgt").read_text(encoding="utf-8")
    assert ensemble == out.read_text(encoding="utf-8") and len(ensemble.splitlines()) == 300
    teachers = json.loads((tmp_path / "out" / RECORD_FILE).read_text())["identity"]["teachers"]
    assert [t["model"] for t in teachers] == [str(trained_run), str(second_teacher)]


def test_the_small_student_has_at_most_a_third_of_the_recipes_parameters():
    from seq2seq.config import load_config
    from seq2seq.model.model import build_model, count_parameters
    configs = Path(__file__).resolve().parents[1] / "configs"

    def size(name: str) -> int:
        cfg = load_config(configs / name)
        vocab = cfg.tokenizer.vocab_size  # joint and shared: one vocabulary of this many pieces
        return count_parameters(build_model(cfg.model, src_vocab_size=vocab, tgt_vocab_size=vocab))

    recipe = size("multi30k_en_de_tied_ema.yaml")
    assert size("multi30k_en_de_student.yaml") == recipe == 3_961_920
    assert size("multi30k_en_de_student_small.yaml") == 993_824 <= recipe / 3
