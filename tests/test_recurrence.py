"""Deferred weight gradients (recurrence.StepLinear) and the cells' own backward passes
(recurrence.lstm_cell, gru_cell) must equal plain autograd."""
import itertools

import pytest
import torch

from seq2seq.model import decoder as decoder_module
from seq2seq.model.decoder import attend_with
from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
from seq2seq.model.model import build_model
from seq2seq.model.recurrence import StepLinear, gru_cell, gru_pointwise, lstm_cell, lstm_pointwise


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


def plain_lstm_cell(input_gates, hidden_gates, c, train=True):
    return lstm_pointwise(input_gates if hidden_gates is None else input_gates + hidden_gates, c)


def plain_gru_cell(input_gates, hidden_gates, h, train=True):
    return gru_pointwise(input_gates, hidden_gates, h)


def _plain_decoder_logits(model, src, lengths, tgt_in):
    """Teacher forcing through the same step function, but with every StepLinear turned into
    a plain autograd linear, and the cells and attention into plain tensor maths, as the
    reference for gradients."""
    dec = model.decoder
    enc = model.encoder(src, lengths)
    memory, state = dec.make_memory(enc), dec.init_state(enc)
    outputs = []
    for t in range(tgt_in.size(1)):
        ops = dec._step_ops(memory)
        products = [x for layer in ops.layers for x in layer.values()]
        for linear in [ops.combine, ops.query] + products:
            if linear is not None:
                linear.deferred = False
        ops.attend = attend_with(dec.attention)  # the attention module's own maths, as decoding runs it
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
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decoder_module, "lstm_cell", plain_lstm_cell)
        patch.setattr(decoder_module, "gru_cell", plain_gru_cell)
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


@pytest.mark.parametrize("with_hidden", [True, False])
def test_lstm_cell_backward_equals_autograd_of_the_plain_maths(with_hidden):
    torch.manual_seed(1)
    gi, gh = (torch.randn(5, 4 * 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    c = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    hidden = gh if with_hidden else None
    torch.autograd.gradcheck(lambda *a: lstm_cell(a[0], a[1] if with_hidden else None, a[2]), (gi, gh, c))
    h, new_c = lstm_cell(gi, hidden, c)
    plain_h, plain_c = plain_lstm_cell(gi, hidden, c)
    torch.testing.assert_close((h, new_c), (plain_h, plain_c))
    with torch.no_grad():  # decoding (and an export) runs the plain maths
        torch.testing.assert_close(lstm_cell(gi, hidden, c), (plain_h, plain_c))


def test_gru_cell_backward_equals_autograd_of_the_plain_maths():
    torch.manual_seed(2)
    gi, gh = (torch.randn(5, 3 * 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(gru_cell, (gi, gh, h))
    torch.testing.assert_close(gru_cell(gi, gh, h), gru_pointwise(gi, gh, h))


def test_step_linear_without_bias_and_unused():
    weight = torch.randn(6, 4, requires_grad=True)
    step = StepLinear(weight)
    x = torch.randn(2, 4, requires_grad=True)
    (step(x).sum() + step(2 * x).sum()).backward()
    torch.testing.assert_close(weight.grad, torch.ones(2, 6).t() @ (3 * x.detach()))
    weight.grad = None
    unused = StepLinear(weight)
    (unused.weight.sum() * 0 + x.sum()).backward()  # no step used it: autograd's own gradient passes through
    torch.testing.assert_close(weight.grad, torch.zeros_like(weight))


# -- layer-normalized cells -----------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layer_normalized_decoder_cells_match_finite_differences(cell):
    # Two steps of two layer-normalized layers as training runs them (StepLinear products, the
    # normalization through autograd, the cells' own backward pass), checked in double precision
    # against finite differences for every input, weight, gain and shift.
    from functools import partial

    from seq2seq.model.decoder import CELL_LAYERS, DecoderState
    from seq2seq.model.recurrence import normalize
    lstm = cell == "lstm"
    hidden, feed_size, gates = 3, 2, (4 if lstm else 3) * 3
    torch.manual_seed(3)

    def t(*shape, scale=1.0):
        return (scale * torch.randn(*shape, dtype=torch.float64)).requires_grad_()

    emb = (t(2, gates), t(2, gates))  # two steps' embedding shares
    feed, h0, h1, c0, c1 = t(2, feed_size), t(2, hidden), t(2, hidden), t(2, hidden), t(2, hidden)
    weights = [t(gates, feed_size), t(gates, hidden), t(gates, hidden), t(gates, hidden)]  # in/hidden per layer
    gains = [t(gates, scale=0.3) for _ in range(4)]
    biases = [t(gates, scale=0.3) for _ in range(4)]
    inputs = (*emb, feed, h0, h1, c0, c1, *weights, *gains, *biases)

    def two_steps(e0, e1, feed, h0, h1, c0, c1, wi0, wh0, wi1, wh1, gi0, gh0, gi1, gh1, bi0, bh0, bi1, bh1):
        layers = [{"input": StepLinear(wi0), "hidden": StepLinear(wh0),
                   "norm_input": partial(normalize, gain=gi0, bias=bi0),
                   "norm_hidden": partial(normalize, gain=gh0, bias=bh0)},
                  {"input": StepLinear(wi1), "hidden": StepLinear(wh1),
                   "norm_input": partial(normalize, gain=gi1, bias=bi1),
                   "norm_hidden": partial(normalize, gain=gh1, bias=bh1)}]
        state = DecoderState((h0, h1), (c0, c1) if lstm else None, feed)
        outputs = []
        for e in (e0, e1):
            h, c = CELL_LAYERS[cell, True](e, state, layers, dropout=lambda x: x, train=True)
            state = DecoderState(h, c, h[-1][:, :feed_size])  # fed back, as input feeding does
            outputs += [*h, *(c or ())]
        return tuple(outputs)

    assert torch.autograd.gradcheck(two_steps, inputs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layer_normalized_encoder_steps_match_finite_differences(cell):
    # The written-out encoder's step with a normalized recurrent product (recurrence.lstm_step / gru_step).
    from functools import partial

    from seq2seq.model.recurrence import gru_step, lstm_step, normalize
    lstm = cell == "lstm"
    gates = (4 if lstm else 3) * 3
    torch.manual_seed(4)
    share, share2 = (torch.randn(2, gates, dtype=torch.float64, requires_grad=True) for _ in range(2))
    h, c = (torch.randn(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    weight = torch.randn(gates, 3, dtype=torch.float64, requires_grad=True)
    gain, bias = (0.3 * torch.randn(gates, dtype=torch.float64) for _ in range(2))
    gain.requires_grad_(), bias.requires_grad_()

    def two_steps(share, share2, h, c, weight, gain, bias):
        recurrent, norm = StepLinear(weight), partial(normalize, gain=gain, bias=bias)
        if lstm:
            h1, c1 = lstm_step(recurrent, share, h, c, norm)
            return lstm_step(recurrent, share2, h1, c1, norm)
        return gru_step(recurrent, share2, gru_step(recurrent, share, h, norm), norm)

    assert torch.autograd.gradcheck(two_steps, (share, share2, h, c, weight, gain, bias))
