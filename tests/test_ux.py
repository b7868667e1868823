"""The commands around training and translation, each run through the CLI: translate options
(n-best, scores, attention, length limits, progress, interactive), plot, info, average, config,
TensorBoard, and the Python API example."""
import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
import torch
import yaml

from conftest import expected_translation, tiny_config_dict, write_synthetic
from seq2seq.run.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.config import Config, config_from_dict
from seq2seq.data.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SOURCES = ["ka lo mi", "su ta pe ri", "", "bai dor ze nu"]

try:
    import matplotlib  # noqa: F401
    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False
needs_matplotlib = pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib is not installed")


def env(extra_path: Path | None = None) -> dict:
    paths = ([str(extra_path)] if extra_path else []) + [str(ROOT)]
    # One thread: tiny models on a shared 2-core machine are slowed down, not sped up, by more.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}


def run_cli(*args, input_text=None, check=True, extra_path=None):
    proc = subprocess.run([sys.executable, "-m", "seq2seq", *map(str, args)], input=input_text,
                          capture_output=True, text=True, timeout=300, env=env(extra_path))
    if check and proc.returncode != 0:
        raise AssertionError(f"seq2seq {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def input_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("input") / "in.txt"
    path.write_text("\n".join(SOURCES) + "\n")
    return path


def assert_png(path: Path, min_bytes: int = 2000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > min_bytes, (path, len(data))
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 200 <= width <= 4000 and 200 <= height <= 4000, (width, height)


# ---------------------------------------------------------------------------------------
# translate options


def parse_tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def test_nbest_writes_k_rows_per_input_in_score_order(trained_run, input_file):
    from seq2seq import Translator
    proc = run_cli("translate", "--model", trained_run, "--input", input_file, "--nbest", 3, "--beam-size", 5,
                   "--device", "cpu")
    assert "translating" not in proc.stderr  # no progress bar: stderr is a pipe, not a terminal
    rows = parse_tsv(proc.stdout)
    plain = Translator.load(trained_run, device="cpu").translate(SOURCES, beam_size=5)
    assert all(len(r) == 4 for r in rows)
    by_input: dict[int, list] = {}
    for index, rank, score, text in rows:
        by_input.setdefault(int(index), []).append((int(rank), float(score), text))
    assert sorted(by_input) == [0, 1, 2, 3]
    for i, hyps in by_input.items():
        if SOURCES[i] == "":
            assert hyps == [(1, 0.0, "")]  # an empty input has one, empty, translation
            continue
        assert [r for r, _, _ in hyps] == [1, 2, 3]
        scores = [s for _, s, _ in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({t for _, _, t in hyps}) == 3  # distinct hypotheses
        assert hyps[0][2] == plain[i]  # rank 1 is what plain translate writes
    assert by_input[0][0][2] == expected_translation(SOURCES[0])


def test_scores_column_and_length_penalty(trained_run, input_file):
    scored = parse_tsv(run_cli("translate", "--model", trained_run, "--input", input_file, "--scores",
                               "--beam-size", 3, "--length-penalty", 1.0, "--device", "cpu").stdout)
    assert [len(r) for r in scored] == [2] * len(SOURCES)
    raw = parse_tsv(run_cli("translate", "--model", trained_run, "--input", input_file, "--scores",
                            "--beam-size", 3, "--length-penalty", 0.0, "--device", "cpu").stdout)
    tok = Tokenizer(trained_run / "spm.joint.model")
    assert len(raw) == len(scored)
    for (text, score), (raw_text, raw_score) in zip(scored, raw):
        assert float(score) <= 0.0
        if text and text == raw_text:
            # alpha 0 ranks by log-probability; alpha 1 divides it by ((5 + length) / 6).
            length = len(tok.encode(text)) + 1
            assert float(score) == pytest.approx(float(raw_score) / ((5 + length) / 6), abs=2e-4)


def test_max_len_ratio_limits_output_length(trained_run, tmp_path):
    from seq2seq import Translator
    src = tmp_path / "long.txt"
    src.write_text("ka lo mi nu pe ri su\n")
    full = Translator.load(trained_run, device="cpu").translate(["ka lo mi nu pe ri su"], beam_size=1)[0]
    short = run_cli("translate", "--model", trained_run, "--input", src, "--beam-size", 1,
                    "--max-len-ratio", 0.5, "--device", "cpu").stdout.strip()
    tok = Tokenizer(trained_run / "spm.joint.model")
    src_pieces = len(tok.encode("ka lo mi nu pe ri su"))
    offset = config_from_dict(yaml.safe_load((trained_run / "config.yaml").read_text())).decoding.max_len_offset
    limit = int(src_pieces * 0.5) + offset - 1  # pieces before the forced EOS
    assert len(tok.encode(full)) > limit  # the limit really cuts this sentence
    assert len(tok.encode(short)) <= limit
    assert full.startswith(short.split()[0])


@needs_matplotlib
def test_attention_heatmaps_one_png_per_sentence(trained_run, input_file, tmp_path):
    out_dir = tmp_path / "attention"
    proc = run_cli("translate", "--model", trained_run, "--input", input_file, "--attention", out_dir,
                   "--device", "cpu")
    assert proc.stdout.split("\n")[:-1][0] == expected_translation(SOURCES[0])
    # The empty input has no attention to draw.
    assert sorted(p.name for p in out_dir.iterdir()) == ["00000.png", "00001.png", "00003.png"]
    for p in out_dir.iterdir():
        assert_png(p)


# ---------------------------------------------------------------------------------------
# terminals: progress bars and interactive mode


def run_with_pty(args, *, stdin_path: Path | None = None, timeout=300, cwd=None) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; returns (rc, stdout, what the terminal saw)."""
    master, slave = pty.openpty()
    # A terminal of zero columns (the default of a fresh pty) makes tqdm draw nothing.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "seq2seq", *map(str, args)], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=slave, env=env(), cwd=cwd)
    os.close(slave)
    seen = bytearray()

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=timeout)
    reader.join(timeout=10)
    os.close(master)
    if stdin_path:
        stdin.close()
    return proc.returncode, out.decode(), seen.decode(errors="replace")


def test_translate_progress_bar_only_on_a_terminal_and_not_quiet(trained_run, input_file):
    rc, out, terminal = run_with_pty(["translate", "--model", trained_run, "--input", input_file,
                                      "--device", "cpu"], stdin_path=input_file)
    assert rc == 0 and "sent" in terminal and "translating" in terminal
    assert out.split("\n")[0] == expected_translation(SOURCES[0])  # the bar never reaches stdout
    rc, out, terminal = run_with_pty(["translate", "--model", trained_run, "--input", input_file,
                                      "--device", "cpu", "--quiet"], stdin_path=input_file)
    assert rc == 0 and "translating" not in terminal


def test_training_bar_stays_out_of_train_log(tmp_path):
    data = write_synthetic(tmp_path / "data", train=300, valid=20, test=5)
    config = tmp_path / "tiny.yaml"
    raw = tiny_config_dict(data, training={"max_epochs": 2, "log_every": 2, "valid_every": 4})
    config.write_text(yaml.safe_dump(raw))
    rc, _, terminal = run_with_pty(["train", "--config", config, "--run-dir", tmp_path / "run"])
    assert rc == 0, terminal[-2000:]
    assert "epoch 1" in terminal and "batch" in terminal  # the bar was drawn on the terminal
    log = (tmp_path / "run" / "train.log").read_text()
    assert "validation at step 4" in log
    assert "\r" not in log and "\x1b" not in log and "batch/s" not in log and "it/s" not in log


def test_interactive_mode_answers_each_line_at_once(trained_run):
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "seq2seq", "translate", "--model", str(trained_run),
                             "--device", "cpu", "--beam-size", "1"], stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env())
    os.close(slave)
    try:
        for src in ("ka lo mi", "su ta"):
            os.write(master, (src + "\n").encode())
            # The answer must come while stdin is still open: no waiting for a full chunk.
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            assert ready, "no translation while the terminal stays open"
            assert proc.stdout.readline().decode().rstrip("\n") == expected_translation(src)
        os.write(master, b"\x04")  # Ctrl-D ends the session
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


# ---------------------------------------------------------------------------------------
# plot, info, average, config


@needs_matplotlib
def test_plot_writes_learning_curves(trained_run, tmp_path):
    proc = run_cli("plot", trained_run, "--output", tmp_path / "plots")
    written = [Path(line) for line in proc.stdout.splitlines()]
    assert sorted(p.name for p in written) == ["bleu.png", "chrf.png", "loss.png", "lr.png", "ppl.png"]
    for p in written:
        assert_png(p, min_bytes=5000)


def test_plot_without_matplotlib_is_a_one_line_error(trained_run, tmp_path):
    # A matplotlib that fails to import stands in for one that is not installed.
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    proc = run_cli("plot", trained_run, check=False, extra_path=tmp_path / "fake")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "seq2seq plot: error: plotting needs matplotlib: pip install 'seq2seq-rnn[plot]' (or pip install matplotlib)"]


def test_plot_of_a_directory_without_metrics(tmp_path):
    proc = run_cli("plot", tmp_path, check=False)
    assert proc.returncode == 2 and "metrics.jsonl: not found" in proc.stderr


def test_info_reports_parameters_vocabulary_and_best_validation(trained_run):
    from seq2seq.decoding.translator import Translator
    from seq2seq.model.model import count_parameters
    from seq2seq.run.rundir import open_run
    info = json.loads(run_cli("info", trained_run, "--json").stdout)
    translator = Translator.load(trained_run, device="cpu")
    assert info["parameters"]["total"] == count_parameters(open_run(trained_run).model)
    assert info["parameters"]["encoder.rnn"] == sum(p.numel() for p in translator.model.encoder.rnn.parameters())
    assert info["vocabulary"]["source"] == len(translator.src_tok)
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    best = [r for r in records if r.get("best")][-1]
    assert info["best"]["step"] == best["step"] and info["best"]["bleu"] == best["bleu"]
    assert info["training"]["steps"] == records[-1]["step"]
    text = run_cli("info", trained_run).stdout
    assert f"{info['parameters']['total']:,}" in text and f"step {best['step']}" in text
    assert "additive attention" in text


def make_kept_checkpoints(run_dir: Path, steps: list[int]) -> list[dict]:
    """Write best.stepN.pt files holding different (random) weights; returns their weights."""
    base = load_checkpoint(run_dir / "best.pt")
    weights = []
    for n, step in enumerate(steps):
        torch.manual_seed(100 + n)
        model = {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in base["model"].items()}
        payload = {k: v for k, v in base.items() if k not in ("format", "format_version")}
        payload.update(model=model, step=step)
        save_checkpoint(run_dir / f"best.step{step}.pt", payload)
        weights.append(model)
    return weights


def test_average_equals_the_elementwise_mean(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    for old in run_dir.glob("best.step*.pt"):
        old.unlink()
    weights = make_kept_checkpoints(run_dir, [10, 20, 30])
    proc = run_cli("average", run_dir, "--last", 2)
    assert "best.step20.pt, best.step30.pt" in proc.stdout
    averaged = load_checkpoint(run_dir / "averaged.pt")
    assert averaged["averaged_from"] == ["best.step20.pt", "best.step30.pt"]
    assert averaged["model"].keys() == weights[0].keys()
    for k, v in averaged["model"].items():
        torch.testing.assert_close(v, (weights[1][k] + weights[2][k]) / 2)
    # The result is a checkpoint translate can load.
    from seq2seq import Translator
    assert len(Translator.load(run_dir, device="cpu", checkpoint="averaged.pt").translate(["ka lo"])) == 1
    out = tmp_path / "elsewhere.pt"
    run_cli("average", run_dir, "--last", 3, "--output", out)
    for k, v in load_checkpoint(out)["model"].items():
        torch.testing.assert_close(v, (weights[0][k] + weights[1][k] + weights[2][k]) / 3)
    proc = run_cli("average", run_dir, "--last", 4, check=False)
    assert proc.returncode == 2 and "only 3 best.stepN.pt files are kept" in proc.stderr


def test_config_defaults_load_back_as_the_default_config(tmp_path):
    text = run_cli("config", "--defaults").stdout
    assert "# units per direction" in text  # a comment per key
    raw = yaml.safe_load(text)
    assert config_from_dict(raw) == Config()
    for key in ("data", "tokenizer", "model", "training", "decoding"):
        assert key in raw
    path = tmp_path / "defaults.yaml"
    path.write_text(text)
    resolved = yaml.safe_load(run_cli("config", "--config", path, "--set", "training.lr=0.01").stdout)
    assert resolved["training"]["lr"] == 0.01 and resolved["model"] == raw["model"]
    proc = run_cli("config", "--config", path, "--set", "training.lrr=1", check=False)
    assert proc.returncode == 2 and "training.lrr" in proc.stderr


# ---------------------------------------------------------------------------------------
# TensorBoard and the Python API


def test_tensorboard_without_the_package_is_a_clear_error(monkeypatch, tmp_path):
    from seq2seq.training.tensorboard_log import open_writer
    from seq2seq.training.loop import TrainingError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(TrainingError, match="training.tensorboard: needs the tensorboard package"):
        open_writer(tmp_path)


def test_tensorboard_logs_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from seq2seq.run.rundir import RunDir
    from seq2seq.training.tensorboard_log import log_scalars, open_writer
    writer = open_writer(RunDir(tmp_path).tensorboard)
    log_scalars(writer, {"step": 5, "bleu": 12.5, "best": True, "valid_loss": 2.0}, 5, "valid")
    writer.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_translator_api_nbest_and_details(trained_run):
    from seq2seq import Translator
    translator = Translator.load(trained_run, device="cpu")
    assert translator.translate(["ka lo mi"], beam_size=3) == [expected_translation("ka lo mi")]
    nbest = translator.translate(["ka lo mi", "su ta"], beam_size=4, nbest=2)
    assert [len(x) for x in nbest] == [2, 2] and nbest[0][0] == expected_translation("ka lo mi")
    detailed = translator.translate_detailed(["ka lo mi"], beam_size=3, nbest=2, return_attention=True)[0]
    assert detailed[0].score >= detailed[1].score and detailed[0].text == nbest[0][0]
    assert detailed[0].attention.shape == (len(detailed[0].tgt_pieces) + 1, len(detailed[0].src_pieces))


def test_api_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "api_example.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ka lo mi  ->  GAMMA BETA ALPHA" in proc.stdout, proc.stdout
    assert "each row sums to 1" in proc.stdout
    assert (tmp_path / "run" / "best.pt").exists()
