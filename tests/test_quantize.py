"""int8 dynamic quantization for CPU decoding."""
import subprocess
import sys

import torch
from torch import nn

from conftest import expected_translation, tiny_config_dict
from seq2seq.config import config_from_dict
from seq2seq.model.model import build_model
from seq2seq.decoding.quantize import quantize_int8, quantized_modules
from seq2seq.decoding.search import Sampling
from seq2seq.decoding.translator import Translator


def test_int8_translations_match_float(trained_run, synthetic_dir):
    sources = (synthetic_dir / "test.src").read_text().splitlines()
    fp32 = Translator.load(trained_run, device="cpu")
    int8 = Translator.load(trained_run, device="cpu", quantize="int8")
    names = quantized_modules(int8.model)
    assert {"encoder.rnn", "output", "combine", "attention.query_proj"} <= set(names)
    # the decoder cell's per-step products, the decoding object's own modules, run int8 too
    assert {"products.0.input", "products.0.hidden"} <= set(names)
    assert quantized_modules(fp32.model) == []

    for beam in (1, 3):
        a = fp32.translate(sources, beam_size=beam)
        b = int8.translate(sources, beam_size=beam)
        assert sum(x == y for x, y in zip(a, b)) >= 0.9 * len(sources)
        exact = sum(h == expected_translation(s) for h, s in zip(b, sources)) / len(sources)
        assert exact >= 0.8, exact


def test_int8_sampling_draws_per_line(trained_run, synthetic_dir):
    lines = (synthetic_dir / "test.src").read_text().splitlines()[:40]
    int8 = Translator.load(trained_run, device="cpu", quantize="int8")
    sampling = Sampling(seed=2)
    one = int8.translate(lines, sampling=sampling, batch_size=1)
    # Line numbers, not positions in a call, seed the draws: the lines given in two calls draw the same.
    assert int8.translate(lines[:15], sampling=sampling, batch_size=1) + \
        int8.translate(lines[15:], sampling=sampling, batch_size=1, first_line=16) == one
    assert one != int8.translate(lines, sampling=Sampling(seed=3, temperature=2.0), batch_size=1)  # it samples
    # Dynamic quantization scales a batch's activations by that batch's range, so an int8 model's
    # probabilities (even its greedy choices, now and then) move a little with the batch; the
    # draws' random numbers do not, and most lines draw the same in batches of 64.
    many = int8.translate(lines, sampling=sampling, batch_size=64)
    assert sum(a == b for a, b in zip(one, many)) >= 0.85 * len(lines)


def test_int8_lstm_model_scores_close_to_float(synthetic_dir):
    raw = tiny_config_dict(synthetic_dir, model={"encoder": {"cell": "lstm"}, "decoder": {"cell": "lstm"},
                                                 "tie_embeddings": True})
    raw["model"]["decoder"]["emb_size"] = 64  # tying the output layer needs emb_size == hidden_size
    torch.manual_seed(0)
    decoding = build_model(config_from_dict(raw).model, src_vocab_size=50, tgt_vocab_size=50).eval().for_decoding()
    qdecoding = quantize_int8(decoding)
    modules = dict(qdecoding.named_modules())
    assert isinstance(modules["encoder.rnn"], torch.ao.nn.quantized.dynamic.LSTM)
    assert isinstance(modules["products.0.gates"], torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(decoding.output, nn.Linear)  # the float model is left as it was
    src = torch.randint(4, 50, (6, 9))
    lengths = torch.tensor([9, 8, 7, 5, 3, 1])
    tgt = torch.randint(4, 50, (6, 7))

    def teacher_forced(model):
        memory, state = model.start(src, lengths)
        steps = []
        for t in range(tgt.size(1)):
            log_probs, state, _ = model.step(tgt[:, t], state, memory)
            steps.append(log_probs)
        return torch.stack(steps, dim=1)  # (batch, tgt_len, vocab)

    with torch.no_grad():
        ref, got = teacher_forced(decoding), teacher_forced(qdecoding)
    assert not torch.equal(ref, got)
    assert (ref - got).abs().max() < 0.05 * ref.abs().max()


def test_translate_cli_quantize(trained_run, synthetic_dir, tmp_path):
    sources = (synthetic_dir / "test.src").read_text().splitlines()[:20]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(sources) + "\n")
    proc = subprocess.run([sys.executable, "-m", "seq2seq", "translate", "--model", str(trained_run), "--input",
                           str(src), "--quantize", "int8", "--beam-size", "2"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    hyps = proc.stdout.splitlines()
    assert sum(h == expected_translation(s) for h, s in zip(hyps, sources)) >= 16
    bad = subprocess.run([sys.executable, "-m", "seq2seq", "translate", "--model", str(trained_run), "--input",
                          str(src), "--quantize", "int4"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--quantize" in bad.stderr
