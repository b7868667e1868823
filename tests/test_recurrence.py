"""Deferred weight gradients (recurrence.StepLinear) must equal plain autograd."""
import itertools

import pytest
import torch

from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
from seq2seq.model import build_model
from seq2seq.recurrence import StepLinear


def test_step_linear_matches_plain_linear_in_a_recurrence():
    torch.manual_seed(0)
    weight = torch.randn(8, 4, requires_grad=True)
    bias = torch.randn(8, requires_grad=True)
    h0 = torch.randn(3, 4, requires_grad=True)

    def run(linear):
        h, total = h0, 0.0
        for _ in range(6):
            y = linear(h)
            h = torch.tanh(y[:, :4] * y[:, 4:])
            total = total + h.pow(2).sum()
        return total

    run(lambda x: torch.nn.functional.linear(x, weight, bias)).backward()
    expected = [t.grad.clone() for t in (weight, bias, h0)]
    for t in (weight, bias, h0):
        t.grad = None
    step = StepLinear(weight, bias)
    run(step).backward()
    for got, want in zip((weight.grad, bias.grad, h0.grad), expected):
        torch.testing.assert_close(got, want)
    assert step.store == []  # pairs are released once the weight gradient is formed


def _plain_decoder_logits(model, src, lengths, tgt_in):
    """Teacher forcing through the same step function, but with every StepLinear turned into
    a plain autograd linear, as the reference for gradients."""
    dec = model.decoder
    enc = model.encoder(src, lengths)
    memory, state = dec.make_memory(enc), dec.init_state(enc)
    outputs = []
    for t in range(tgt_in.size(1)):
        ops = dec._step_ops()
        products = [x for layer in ops.layers for x in layer.values()]
        for linear in [ops.combine, ops.query] + products:
            if linear is not None:
                linear.deferred = False
        att, state, _ = dec._advance(dec._embed_gates(tgt_in[:, t]), state, memory, ops)
        outputs.append(att)
    return dec.output(torch.stack(outputs, dim=1))


@pytest.mark.parametrize("cell,attention,feeding,layers",
                         list(itertools.product(["lstm", "gru"], ["additive", "dot", "general"], [True, False], [1, 2])))
def test_decoder_gradients_equal_plain_autograd(cell, attention, feeding, layers):
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=EncoderConfig(cell=cell, emb_size=8, hidden_size=6, num_layers=layers, dropout=0.0),
        decoder=DecoderConfig(cell=cell, emb_size=8, hidden_size=12, num_layers=layers, attention=attention,
                              input_feeding=feeding, dropout=0.0))
    model = build_model(cfg, src_vocab_size=20, tgt_vocab_size=22)
    src = torch.randint(4, 20, (3, 5))
    lengths = torch.tensor([5, 3, 4])
    tgt_in = torch.randint(4, 22, (3, 6))

    def grads(forward):
        model.zero_grad()
        logits = forward(model, src, lengths, tgt_in)
        logits.pow(2).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast_logits, fast = grads(lambda m, *a: m(*a))
    plain_logits, plain = grads(_plain_decoder_logits)
    torch.testing.assert_close(fast_logits, plain_logits)
    assert fast.keys() == plain.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-4, atol=1e-5, msg=name)

    # Step-by-step decoding (no gradients) gives the same distributions as teacher forcing.
    decoding = model.eval().for_decoding()
    with torch.no_grad():
        memory, state = decoding.start(src, lengths)
        steps = []
        for t in range(tgt_in.size(1)):
            log_probs, state, _ = decoding.step(tgt_in[:, t], state, memory)
            steps.append(log_probs)
    torch.testing.assert_close(torch.stack(steps, 1), torch.log_softmax(fast_logits, -1), rtol=1e-4, atol=1e-5)
