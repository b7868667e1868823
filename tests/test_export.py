"""seq2seq export: ONNX graphs that onnxruntime decodes exactly as PyTorch does, through the
same search code; checksums; int8; the self-check."""
from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import expected_translation, tiny_config_dict
from seq2seq.config import config_from_dict
from seq2seq.errors import CheckpointError, ExportError
from seq2seq.run.rundir import open_run

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from seq2seq.deploy.export import export_run, summary  # noqa: E402
from seq2seq.deploy.export_check import INT8_AGREEMENT  # noqa: E402
from seq2seq.decoding.onnx_model import OnnxModel, verify  # noqa: E402
from seq2seq.decoding.search import translate_ids  # noqa: E402

# Every cell x attention x input feeding x bidirectional the trainer builds, each at one and at two
# layers (48 tiny models, about a second each).
COMBOS = list(itertools.product(("lstm", "gru"), ("additive", "dot", "general"), (True, False), (True, False), (1, 2)))


def combo_id(combo) -> str:
    cell, attention, feeding, bidi, layers = combo
    return f"{cell}-{attention}-{'feed' if feeding else 'nofeed'}-{'bi' if bidi else 'uni'}-{layers}l"


def train_combo(root: Path, data: Path, combo, **layer_norm) -> Path:
    """A tiny model of this architecture, trained briefly on the synthetic task; `layer_norm`:
    {"encoder": bool, "decoder": bool}."""
    from seq2seq.training.loop import train
    cell, attention, feeding, bidi, layers = combo
    enc_hidden = 16 if bidi else 32  # dot attention needs the encoder's output size = the decoder's
    raw = tiny_config_dict(data, model={
        "encoder": {"cell": cell, "emb_size": 16, "hidden_size": enc_hidden, "bidirectional": bidi,
                    "num_layers": layers, "layer_norm": layer_norm.get("encoder", False)},
        "decoder": {"cell": cell, "emb_size": 16, "hidden_size": 32, "attention": attention,
                    "input_feeding": feeding, "num_layers": layers,
                    "layer_norm": layer_norm.get("decoder", False)}},
        training={"max_epochs": 1, "max_steps": 40})
    run_dir = root / combo_id(combo)
    train(config_from_dict(raw), run_dir, quiet=True)
    return run_dir


def both_ways(run_dir: Path, export_dir: Path, src_ids, **options):
    pytorch = open_run(run_dir).model.eval().for_decoding()
    onnx = OnnxModel(export_dir / "encoder.onnx", export_dir / "decoder_step.onnx", threads=1)
    settings = dict(batch_size=7, alpha=1.0, max_len_ratio=1.5, max_len_offset=5, **options)
    return translate_ids(pytorch, src_ids, **settings), translate_ids(onnx, src_ids, **settings)


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_every_architecture_decodes_the_same_with_onnxruntime(combo, synthetic_dir, tmp_path):
    run_dir = train_combo(tmp_path, synthetic_dir, combo)
    manifest = export_run(run_dir, tmp_path / "export", page=False)
    check = manifest["check"]
    assert check["graphs"] == "float32" and check["max_abs_difference"] <= check["tolerance"]
    # Every output of both graphs was compared, the states and the input feed included.
    encoder = [f"encoder.onnx:{n}" for n in ("memory", "keys", "mask", "h", "c", "feed")]
    step = [f"decoder_step.onnx:{n}" for n in ("log_probs", "h_out", "c_out", "feed_out", "attention")]
    assert sorted(check["outputs"]) == sorted(encoder + step)
    assert max(check["outputs"].values()) == check["max_abs_difference"]
    run = open_run(run_dir)
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:20]
    src_ids = [run.src_tok.encode(line) for line in lines]
    greedy_pt, greedy_onnx = both_ways(run_dir, tmp_path / "export", src_ids, beam_size=1)
    assert [h[0].tokens for h in greedy_pt] == [h[0].tokens for h in greedy_onnx]
    beam_pt, beam_onnx = both_ways(run_dir, tmp_path / "export", src_ids, beam_size=3, nbest=3)
    # The best hypothesis is the same everywhere. A model trained for 40 updates repeats pieces, and
    # its many near-equal candidates can make the two runtimes' float differences (within the
    # export's 1e-3) finish a different 2nd or 3rd hypothesis now and then: most n-best lists agree.
    assert [hyps[0].tokens for hyps in beam_pt] == [hyps[0].tokens for hyps in beam_onnx]
    same = [[h.tokens for h in a] == [h.tokens for h in b] for a, b in zip(beam_pt, beam_onnx)]
    assert sum(same) >= 0.9 * len(same), same
    for a, b in zip(beam_pt, beam_onnx):
        found = {tuple(h.tokens): h.score for h in b}
        for h in a:
            if tuple(h.tokens) in found:
                assert h.score == pytest.approx(found[tuple(h.tokens)], abs=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_layer_normalized_decoder_decodes_the_same_with_onnxruntime(cell, synthetic_dir, tmp_path):
    run_dir = train_combo(tmp_path, synthetic_dir, (cell, "general", True, True, 2), decoder=True)
    manifest = export_run(run_dir, tmp_path / "export", page=False)
    assert manifest["check"]["max_abs_difference"] <= manifest["check"]["tolerance"]
    run = open_run(run_dir)
    assert any("gains" in name for name in run.checkpoint["model"])
    src_ids = [run.src_tok.encode(line) for line in (synthetic_dir / "test.src").read_text().splitlines()[:20]]
    for beam in (1, 3):
        pytorch, onnx = both_ways(run_dir, tmp_path / "export", src_ids, beam_size=beam)
        assert [h[0].tokens for h in pytorch] == [h[0].tokens for h in onnx]


def test_the_tied_shared_moving_average_recipe_decodes_the_same_with_onnxruntime(synthetic_dir, tmp_path):
    # configs/multi30k_en_de_tied_ema.yaml's shape: one embedding matrix for source, target and
    # output, and checkpoints that hold the moving average of the weights.
    from seq2seq.training.loop import train
    raw = tiny_config_dict(synthetic_dir, model={
        "share_embeddings": True, "tie_embeddings": True,
        "encoder": {"emb_size": 64}, "decoder": {"emb_size": 64, "hidden_size": 64}},
        training={"max_epochs": 1, "max_steps": 40, "ema_decay": 0.99})
    train(config_from_dict(raw), tmp_path / "run", quiet=True)
    manifest = export_run(tmp_path / "run", tmp_path / "export", page=False)
    assert manifest["check"]["max_abs_difference"] <= manifest["check"]["tolerance"]
    run = open_run(tmp_path / "run")
    src_ids = [run.src_tok.encode(line) for line in (synthetic_dir / "test.src").read_text().splitlines()[:20]]
    for beam in (1, 3):
        pytorch, onnx = both_ways(tmp_path / "run", tmp_path / "export", src_ids, beam_size=beam)
        assert [h[0].tokens for h in pytorch] == [h[0].tokens for h in onnx]


def test_a_layer_normalized_encoder_is_refused_by_name(synthetic_dir, tmp_path):
    run_dir = train_combo(tmp_path, synthetic_dir, ("gru", "additive", True, True, 1), encoder=True)
    with pytest.raises(ExportError, match="model.encoder.layer_norm"):
        export_run(run_dir, tmp_path / "export", page=False)
    assert not (tmp_path / "export").exists()


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> tuple[Path, Path]:
    """The shared trained run (it has learned the task), exported in float32 and in int8."""
    root = tmp_path_factory.mktemp("export")
    export_run(trained_run, root / "fp32", page=False)
    export_run(trained_run, root / "int8", quantize="int8", page=False)
    return root / "fp32", root / "int8"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "seq2seq", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_int8_export_is_smaller_keeps_every_line_and_solves_the_task(exported, trained_run, synthetic_dir):
    fp32, int8 = exported
    size = lambda d, names=("encoder.onnx", "decoder_step.onnx"): sum((d / n).stat().st_size for n in names)  # noqa: E731
    assert size(int8) < 0.5 * size(fp32)
    manifest = json.loads((int8 / "manifest.json").read_text())
    assert manifest["quantized"] == "int8"
    # The manifest's check is the int8 graphs' own: their greedy agreement with float32 PyTorch and
    # their differences, which are far beyond the float32 tolerance (not the float32 figures).
    check, fp32_check = manifest["check"], json.loads((fp32 / "manifest.json").read_text())["check"]
    assert check["graphs"] == "int8" and check["min_greedy_agreement"] == INT8_AGREEMENT
    assert check["greedy_agreement"] >= INT8_AGREEMENT and check["decisions"] >= 50
    assert check["outputs"]["decoder_step.onnx:log_probs"] > fp32_check["tolerance"] > fp32_check["max_abs_difference"]
    assert "int8 graphs choose float32 PyTorch's greedy piece at" in summary(manifest, int8, quantize="int8")
    run = open_run(trained_run)
    lines = (synthetic_dir / "test.src").read_text().splitlines()
    src_ids = [run.src_tok.encode(line) for line in lines]
    onnx = OnnxModel(int8 / "encoder.onnx", int8 / "decoder_step.onnx", threads=1)
    hyps = translate_ids(onnx, src_ids, beam_size=3, batch_size=16, alpha=1.0, max_len_ratio=1.5, max_len_offset=5)
    assert len(hyps) == len(lines)
    correct = sum(run.tgt_tok.decode(h[0].tokens) == expected_translation(line) for h, line in zip(hyps, lines))
    assert correct >= 0.8 * len(lines)


@pytest.mark.parametrize("damage", ["modify", "truncate", "delete"])
def test_a_damaged_export_file_is_refused_by_name(exported, tmp_path, damage):
    import shutil
    folder = tmp_path / "copy"
    shutil.copytree(exported[0], folder)
    target = folder / "decoder_step.onnx"
    data = target.read_bytes()
    if damage == "modify":
        target.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
    elif damage == "truncate":
        target.write_bytes(data[:len(data) // 2])
    else:
        target.unlink()
    with pytest.raises(CheckpointError, match="decoder_step.onnx"):
        verify(folder)


def test_export_into_a_folder_that_holds_other_files_is_refused(trained_run, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an export folder"):
        export_run(trained_run, tmp_path, page=False)


@pytest.mark.parametrize("where", ["under_a_file", "in_proc"])
def test_export_into_a_place_that_cannot_be_created_is_one_line(trained_run, tmp_path, where):
    # /proc accepts no new folders (as a read-only filesystem would not), and a file cannot hold one.
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "export" if where == "under_a_file" else Path("/proc/seq2seq_nowhere/export")
    proc = run_cli("export", "--model", trained_run, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"seq2seq export: error: {out}: cannot create the export folder (")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_graph_that_disagrees_with_pytorch_fails_the_export(trained_run, tmp_path, monkeypatch):
    import seq2seq.deploy.export as export
    original = export.StepGraph.forward

    def off_by_a_little(self, *inputs):
        log_probs, *rest = original(self, *inputs)
        return (log_probs + 0.01, *rest)

    monkeypatch.setattr(export.StepGraph, "forward", off_by_a_little)
    with pytest.raises(ExportError, match=r"differ from PyTorch by up to 0\.01"):
        export_run(trained_run, tmp_path / "bad", page=False)


@pytest.mark.parametrize("graph, index, output", [("EncoderGraph", 4, "encoder.onnx:c"),
                                                  ("StepGraph", 2, "decoder_step.onnx:c_out")])
def test_an_output_that_no_search_reads_is_checked_too(trained_run, tmp_path, monkeypatch, graph, index, output):
    # The shared run is a GRU, whose c nothing reads: only a check of every output sees it differ
    # (the step passes c through, so its offset grows by 0.01 a step).
    import seq2seq.deploy.export as export
    wrapper = getattr(export, graph)
    original = wrapper.forward

    def off_by_a_little(self, *inputs):
        outputs = list(original(self, *inputs))
        outputs[index] = outputs[index] + 0.01
        return tuple(outputs)

    monkeypatch.setattr(wrapper, "forward", off_by_a_little)
    with pytest.raises(ExportError, match=rf"differ from PyTorch by up to 0\.0\d+ \(in {output};"):
        export_run(trained_run, tmp_path / "bad", page=False)
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_int8_graphs_that_choose_other_pieces_fail_the_export(trained_run, tmp_path, monkeypatch):
    import numpy as np
    import onnx
    from onnx import numpy_helper
    import seq2seq.deploy.export as export
    quantize = export.quantize_graphs

    def quantize_and_scramble(out: Path) -> None:
        quantize(out)  # then reverse the order of every int8 weight of the step graph
        model = onnx.load(str(out / "decoder_step.onnx"))
        for weights in model.graph.initializer:
            w = numpy_helper.to_array(weights)
            if w.dtype == np.int8 and w.size > 1:
                weights.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w.reshape(-1)[::-1].reshape(w.shape)),
                                                         weights.name))
        onnx.save(model, str(out / "decoder_step.onnx"))

    monkeypatch.setattr(export, "quantize_graphs", quantize_and_scramble)
    with pytest.raises(ExportError, match=r"int8 graphs choose float32 PyTorch's greedy piece at only .*"
                                          r"\(required 90%\); export without --quantize"):
        export_run(trained_run, tmp_path / "bad", quantize="int8", page=False)
    assert not (tmp_path / "bad" / "manifest.json").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("files"), "lists no files"),
    (lambda m: m.update(files=[]), "lists no files"),
    (lambda m: m["files"].update({"../run/best.pt": "0" * 64}), "'../run/best.pt', a path outside the export folder"),
    (lambda m: m["files"].update({"/etc/hostname": "0" * 64}), "'/etc/hostname', a path outside the export folder"),
    (lambda m: m["files"].update({"sub\\..\\..\\x": "0" * 64}), "a path outside the export folder"),
    (lambda m: m["files"].update({"C:/x": "0" * 64}), "a path outside the export folder"),
    (lambda m: m["files"].pop("decoder_step.onnx"), "does not list decoder_step.onnx among its files"),
], ids=["no-files", "files-not-a-map", "dot-dot", "absolute", "backslashes", "drive", "unlisted-graph"])
def test_a_manifest_without_a_file_list_or_with_a_path_outside_its_folder_is_refused(exported, tmp_path, edit,
                                                                                      message):
    import shutil
    from seq2seq.decoding.translator import Translator
    folder = tmp_path / "copy"
    shutil.copytree(exported[0], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for load in (verify, lambda f: Translator.load(f, device="cpu")):
        with pytest.raises(CheckpointError, match=re.escape(message)) as refused:
            load(folder)
        assert str(refused.value).startswith(f"{folder / 'manifest.json'}: ") and "\n" not in str(refused.value)


def test_the_manifest_lists_the_pieces_never_written(exported, synthetic_dir, tmp_path):
    from seq2seq.decoding.translator import tag_pieces
    from seq2seq.training.loop import train
    assert json.loads((exported[0] / "manifest.json").read_text())["banned"] == []
    raw = tiny_config_dict(synthetic_dir, training={"max_steps": 5})
    train_path = str(synthetic_dir / "train")
    raw["data"]["train"] = [{"path": train_path}, {"path": train_path, "tag": "<bt>"}]
    train(config_from_dict(raw), tmp_path / "run", quiet=True)
    manifest = export_run(tmp_path / "run", tmp_path / "export", page=False)
    tgt_tok = open_run(tmp_path / "run").tgt_tok
    assert manifest["banned"] == tag_pieces(tgt_tok, ["\u2581<bt>"]) == [tgt_tok.piece_to_id("\u2581<bt>")]
    assert json.loads((tmp_path / "export" / "manifest.json").read_text())["banned"] == manifest["banned"]


def test_translate_and_serve_take_an_export_folder(exported, trained_run, synthetic_dir, tmp_path):
    fp32, _ = exported
    src = synthetic_dir / "test.src"
    lines = src.read_text().splitlines()[:30]
    (tmp_path / "in.txt").write_text("\n".join(lines[:20] + ["", "  ", "ka ¤ 漢字 lo"]) + "\n", encoding="utf-8")
    outputs = {}
    for name, model in (("run", trained_run), ("export", fp32)):
        out = tmp_path / f"{name}.tsv"
        proc = run_cli("translate", "--model", model, "--input", tmp_path / "in.txt", "--output", out,
                       "--beam-size", "3", "--nbest", "2", "--scores", "--quiet")
        assert proc.returncode == 0, proc.stderr
        outputs[name] = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert {int(r[0]) for r in outputs["export"]} == set(range(23))  # every input line is answered
    assert [r[:2] + [r[3]] for r in outputs["export"]] == [r[:2] + [r[3]] for r in outputs["run"]]
    assert [float(r[2]) for r in outputs["export"]] == pytest.approx([float(r[2]) for r in outputs["run"]], abs=1e-3)

    from starlette.testclient import TestClient
    from seq2seq.deploy.serve import Limits, Service, build_app
    service = Service([str(fp32)], load_options={"device": "cpu"}, limits=Limits(), beam_size=None, max_batch=8,
                      max_wait=0.002)
    with TestClient(build_app(service)) as client:
        assert service.loaded.wait(60)
        got = client.post("/translate", json={"texts": lines[:5], "beam_size": 1}).json()["translations"]
        from seq2seq.decoding.translator import Translator
        assert got == Translator.load(trained_run, device="cpu").translate(lines[:5], beam_size=1)


def test_an_export_folder_samples_as_the_run_does(exported, trained_run, synthetic_dir):
    from seq2seq.decoding.search import Sampling
    from seq2seq.decoding.translator import Translator
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:40]
    sampling = Sampling(seed=3, temperature=1.5)
    export = Translator.load(exported[0], device="cpu")
    drawn = export.translate(lines, sampling=sampling, batch_size=64)
    assert export.translate(lines, sampling=sampling, batch_size=1) == drawn
    # The same draws as PyTorch's, but where the runtimes' float differences (within 1e-3) tip a
    # draw between two nearly equal candidates.
    run = Translator.load(trained_run, device="cpu").translate(lines, sampling=sampling)
    assert sum(a == b for a, b in zip(drawn, run)) >= 0.9 * len(lines)
    assert drawn != export.translate(lines, beam_size=1)


def test_export_options_that_do_not_apply_are_one_line_errors(exported, synthetic_dir):
    proc = run_cli("translate", "--model", exported[0], "--input", synthetic_dir / "test.src", "--quantize", "int8")
    assert proc.returncode == 2 and "seq2seq export --quantize int8" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
