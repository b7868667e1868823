"""Mixed precision: what auto picks, gradients under autocast, the fp16 scaler across a resume, a
model that learns in bf16, and checkpoints that load in any precision."""
import itertools

import pytest
import torch

from conftest import expected_translation, tiny_config_dict
from seq2seq.model import precision
from seq2seq.run.checkpoint import load_checkpoint
from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig, config_from_dict
from seq2seq.data import ParallelData, make_batch
from seq2seq.model.model import build_model
from seq2seq.training.loop import train
from seq2seq.decoding.translator import Translator
from seq2seq.training.update import token_loss


def test_auto_picks_bf16_only_where_it_pays(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})
    assert precision.resolve("auto", cpu)[0] == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})  # not measured faster
    assert precision.resolve("auto", cpu)[0] == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: set())
    assert precision.resolve("auto", cpu) == ("fp32", "auto: no bf16 units measured faster on this CPU")
    assert precision.resolve("bf16", cpu) == ("bf16", "asked for")
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert precision.resolve("auto", gpu)[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision.resolve("auto", gpu)[0] == "fp16"
    assert precision.grad_scaler("fp16", cpu) is not None and precision.grad_scaler("bf16", cpu) is None


def gradients(model, batch, dtype):
    model.zero_grad()
    with precision.autocast(dtype, torch.device("cpu")):
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        loss = token_loss(logits, batch.tgt_out, 0.1)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("cell, attention", list(itertools.product(["lstm", "gru"], ["additive", "dot", "general"])))
def test_bf16_gradients_are_close_to_float32(cell, attention):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(cell=cell, emb_size=16, hidden_size=16, dropout=0.0),
                      decoder=DecoderConfig(cell=cell, emb_size=16, hidden_size=32, attention=attention,
                                            dropout=0.0))
    model = build_model(cfg, src_vocab_size=40, tgt_vocab_size=50)
    g = torch.Generator().manual_seed(1)
    src = [torch.randint(4, 40, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    tgt = [torch.randint(4, 50, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    batch = make_batch(ParallelData(src, tgt), list(range(8)))
    loss32, grads32 = gradients(model, batch, "fp32")
    loss16, grads16 = gradients(model, batch, "bf16")
    assert abs(loss16 - loss32) < 0.02 * loss32
    largest = max(g.norm() for g in grads32.values())
    for name, g32 in grads32.items():
        g16 = grads16[name]
        assert g16.dtype == torch.float32, name  # master weights get float32 gradients
        # bf16 keeps 8 bits of mantissa: every error is small next to the gradient's scale ...
        assert (g16 - g32).norm() < 0.02 * largest, name
        if g32.norm() < 1e-3 * largest:
            continue  # ... though a near-zero gradient (an untrained attention query) is mostly rounding
        cos = torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0)
        assert cos > 0.98, (name, float(cos))
        assert abs(g16.norm() / g32.norm() - 1) < 0.1, name


def test_a_tiny_model_learns_in_bf16_and_its_checkpoint_is_float32(tmp_path, synthetic_dir):
    run = tmp_path / "run"
    train(config_from_dict(tiny_config_dict(synthetic_dir, training={"precision": "bf16"})), run, quiet=True)
    weights = load_checkpoint(run / "best.pt")["model"]
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    sources = (synthetic_dir / "test.src").read_text().splitlines()
    for p in ("fp32", "bf16"):  # the checkpoint decodes in either precision
        translator = Translator.load(run, device="cpu", precision=p)
        assert translator.precision == p
        hyps = translator.translate(sources, beam_size=3)
        exact = sum(h == expected_translation(s) for h, s in zip(hyps, sources)) / len(sources)
        assert exact >= 0.8, (p, exact)


def test_fp16_loss_scale_is_saved_and_resumed_exactly(tmp_path, synthetic_dir):
    raw = tiny_config_dict(synthetic_dir, training={"precision": "fp16", "max_steps": 24, "valid_every": 12,
                                                    "valid_at_epoch_end": False})
    whole = tmp_path / "whole"
    train(config_from_dict(raw), whole, quiet=True)
    scale = load_checkpoint(whole / "last.pt")["scaler"]
    assert scale is not None and scale["scale"] > 0
    half = tmp_path / "half"
    first = {**raw, "training": {**raw["training"], "max_steps": 12}}
    train(config_from_dict(first), half, quiet=True)
    assert load_checkpoint(half / "last.pt")["scaler"]["scale"] > 0
    train(config_from_dict(raw), half, resume=True, quiet=True)
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(half / "last.pt")
    assert a["scaler"] == b["scaler"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_int8_and_a_low_precision_do_not_combine(trained_run):
    with pytest.raises(ValueError, match="precision bf16: int8 quantization"):
        Translator.load(trained_run, device="cpu", quantize="int8", precision="bf16")
    assert Translator.load(trained_run, device="cpu", quantize="int8", precision="auto").precision == "fp32"


def test_validation_decodes_in_the_decoding_precision(tmp_path, trained_run, synthetic_dir):
    # A float32 run's checkpoint, decoded by validation's settings in bf16, gives what translate
    # gives in bf16: the same function decodes both.
    from seq2seq.training.validation import read_validation, validation_set
    from seq2seq.training.validation import validate
    cfg = config_from_dict(tiny_config_dict(synthetic_dir, decoding={"precision": "bf16"}))
    translator = Translator.load(trained_run, device="cpu", precision="bf16")
    src, tgt = read_validation(cfg.data)
    valid = validation_set(cfg.data, src, tgt, translator.src_tok, translator.tgt_tok)
    from seq2seq.run.rundir import open_run
    model = open_run(trained_run).model  # as training holds it: no decoding-only copies
    result = validate(model, valid, cfg.decoding, translator.tgt_tok, torch.device("cpu"))
    assert result["hypotheses"] == translator.translate(src, beam_size=1)
