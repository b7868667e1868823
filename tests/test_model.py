"""Model wiring: shapes of every combination, shared/tied embeddings, initialisation."""
import itertools

import pytest
import torch
from torch import nn

from seq2seq.config import config_from_dict
from seq2seq.data import pad
from seq2seq.model.decoder import DecoderState, Memory
from seq2seq.model.step import DecodingModel
from seq2seq.model.model import build_model, count_parameters, init_weights, resolve_device

SRC_V, TGT_V = 19, 23


def model_config(*, cell="gru", bidirectional=True, attention="additive", input_feeding=True, init="bridge",
                 num_layers=1, **extra):
    enc_hidden = 6
    enc_out = enc_hidden * (2 if bidirectional else 1)
    raw = {"model": {"encoder": {"cell": cell, "emb_size": 5, "hidden_size": enc_hidden, "num_layers": num_layers,
                                 "bidirectional": bidirectional, "dropout": 0.1},
                     # dot attention needs the decoder size to equal the encoder output size
                     "decoder": {"cell": cell, "emb_size": 7, "hidden_size": enc_out, "num_layers": num_layers,
                                 "attention": attention, "input_feeding": input_feeding, "init": init,
                                 "dropout": 0.1}, **extra}}
    return config_from_dict(raw).model


COMBINATIONS = list(itertools.product(["lstm", "gru"], [True, False], ["additive", "dot", "general"],
                                      [True, False], ["bridge", "zeros"], [1, 2]))


@pytest.mark.parametrize("cell, bidirectional, attention, input_feeding, init, num_layers", COMBINATIONS,
                         ids=["-".join(map(str, c)) for c in COMBINATIONS])
def test_output_shapes(cell, bidirectional, attention, input_feeding, init, num_layers):
    torch.manual_seed(0)
    cfg = model_config(cell=cell, bidirectional=bidirectional, attention=attention, input_feeding=input_feeding,
                       init=init, num_layers=num_layers)
    model = build_model(cfg, src_vocab_size=SRC_V, tgt_vocab_size=TGT_V)
    hidden = cfg.decoder.hidden_size
    src = pad([[4, 5, 6, 7], [8, 9]])
    lengths = torch.tensor([4, 2])
    tgt_in = torch.tensor([[2, 4, 5], [2, 6, 0]])
    logits = model(src, lengths, tgt_in)
    assert logits.shape == (2, 3, TGT_V)
    logits.sum().backward()  # every part is connected to the output
    decoding = model.eval().for_decoding()
    memory, state = decoding.start(src, lengths)
    assert isinstance(memory, Memory) and isinstance(state, DecoderState)
    assert memory.states.shape == (2, 4, 6 * (2 if bidirectional else 1))
    assert memory.mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert len(state.h) == num_layers and all(h.shape == (2, hidden) for h in state.h)
    assert (state.c is not None) == (cell == "lstm")
    assert (state.feed is not None) == input_feeding
    if init == "zeros":
        assert all(torch.all(h == 0) for h in state.h)
    else:
        assert any(torch.any(h != 0) for h in state.h)
    log_probs, new_state, weights = decoding.step(torch.tensor([2, 2]), state, memory)
    assert log_probs.shape == (2, TGT_V) and weights.shape == (2, 4)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2))
    picked = new_state.select(torch.tensor([1, 1, 0]))
    assert len(picked.h) == num_layers and picked.h[0].shape == (3, hidden)
    assert torch.equal(picked.h[0][2], new_state.h[0][0])
    assert memory.select(torch.tensor([1, 0, 1])).states.shape[0] == 3


STEP_CASES = list(itertools.product(["lstm", "gru"], [1, 2], [True, False], ["additive", "dot", "general"]))


@pytest.mark.parametrize("cell, num_layers, input_feeding, attention", STEP_CASES,
                         ids=["-".join(map(str, c)) for c in STEP_CASES])
def test_decoding_steps_give_the_teacher_forced_distributions(cell, num_layers, input_feeding, attention):
    # The decoding object's own products and step functions, fed the reference prefix, give
    # the training forward pass's distributions at every position.
    torch.manual_seed(0)
    model = build_model(model_config(cell=cell, num_layers=num_layers, input_feeding=input_feeding,
                                     attention=attention), src_vocab_size=SRC_V, tgt_vocab_size=TGT_V).eval()
    src, lengths = pad([[4, 5, 6], [7, 8]]), torch.tensor([3, 2])
    tgt_in = torch.tensor([[2, 9, 10, 11, 12], [2, 13, 14, 15, 0]])
    decoding = model.for_decoding()
    with torch.no_grad():
        expected = torch.log_softmax(model(src, lengths, tgt_in), dim=-1)  # (batch, tgt_len, vocab)
        memory, state = decoding.start(src, lengths)
        for t in range(tgt_in.size(1)):
            log_probs, state, attention_weights = decoding.step(tgt_in[:, t], state, memory)
            torch.testing.assert_close(log_probs, expected[:, t], rtol=1e-5, atol=1e-5)
            assert attention_weights.shape == (2, 3) and torch.all(attention_weights[1, 2] == 0)
    # Its products are its own nn.Linear modules, one product of [input, h] per LSTM layer.
    names = {name for name, m in decoding.named_modules() if isinstance(m, nn.Linear) and "products" in name}
    if cell == "lstm":
        assert names == {f"products.{i}.gates" for i in range(num_layers)}
    else:
        assert names == ({f"products.{i}.hidden" for i in range(num_layers)}
                         | {f"products.{i}.input" for i in range(num_layers) if i > 0 or input_feeding})


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_decoding_uses_its_own_products_and_training_its_cells(cell):
    torch.manual_seed(0)
    model = build_model(model_config(cell=cell, num_layers=2), src_vocab_size=SRC_V, tgt_vocab_size=TGT_V)
    src, lengths = pad([[4, 5, 6], [7, 8]]), torch.tensor([3, 2])
    tgt_in = torch.tensor([[2, 9, 10, 11], [2, 12, 13, 0]])
    before = count_parameters(model)
    with pytest.raises(ValueError, match="eval"):
        model.for_decoding()  # dropout would apply
    decoding = model.eval().for_decoding()
    assert isinstance(decoding, DecodingModel)
    # Not part of the training model: nothing to filter out of its parameters or checkpoints.
    assert count_parameters(model) == before
    assert not any("products" in name for name in model.state_dict())

    def first_step():
        memory, state = decoding.start(src, lengths)
        return decoding.step(tgt_in[:, 0], state, memory)[0]

    with torch.no_grad():
        reference = first_step()
        logits = model(src, lengths, tgt_in)
    # Grad mode chooses nothing: the step and the forward pass give the same with gradients on.
    torch.testing.assert_close(first_step(), reference, rtol=0, atol=0)
    torch.testing.assert_close(model(src, lengths, tgt_in), logits, rtol=0, atol=0)
    # The step reads the products: replacing one changes decoding, and not the training forward.
    product = decoding.products[0]["gates" if cell == "lstm" else "hidden"]
    product.weight = nn.Parameter(product.weight * 2, requires_grad=False)
    with torch.no_grad():
        assert not torch.allclose(first_step(), reference)
        torch.testing.assert_close(model(src, lengths, tgt_in), logits, rtol=0, atol=0)
    # Training goes through the cells' own weights.
    model.train()
    model(src, lengths, tgt_in).sum().backward()
    assert model.decoder.cells[0].weight_hh.grad.abs().sum() > 0


def test_bidirectional_hidden_size_is_per_direction():
    model = build_model(model_config(bidirectional=True), src_vocab_size=SRC_V, tgt_vocab_size=TGT_V)
    assert model.encoder.rnn.hidden_size == 6 and model.encoder.output_size == 12


def test_share_embeddings_uses_one_tensor():
    cfg = config_from_dict({"model": {"share_embeddings": True, "encoder": {"emb_size": 8, "hidden_size": 4},
                                      "decoder": {"emb_size": 8, "hidden_size": 8}}}).model
    model = build_model(cfg, src_vocab_size=20, tgt_vocab_size=20)
    assert model.encoder.embed.weight is model.decoder.embed.weight
    unshared = build_model(config_from_dict({"model": {"encoder": {"emb_size": 8, "hidden_size": 4},
                                                       "decoder": {"emb_size": 8, "hidden_size": 8}}}).model,
                           src_vocab_size=20, tgt_vocab_size=20)
    assert count_parameters(unshared) - count_parameters(model) == 20 * 8
    # Training updates the one matrix for both sides.
    model(torch.tensor([[5, 6]]), torch.tensor([2]), torch.tensor([[2, 7]])).sum().backward()
    assert model.encoder.embed.weight.grad is model.decoder.embed.weight.grad
    with pytest.raises(ValueError, match="joint vocabulary"):
        build_model(cfg, src_vocab_size=20, tgt_vocab_size=21)


def test_tie_embeddings_uses_one_tensor():
    cfg = config_from_dict({"model": {"tie_embeddings": True, "encoder": {"hidden_size": 4},
                                      "decoder": {"emb_size": 8, "hidden_size": 8}}}).model
    model = build_model(cfg, src_vocab_size=20, tgt_vocab_size=30)
    assert model.decoder.output.weight is model.decoder.embed.weight
    assert model.decoder.output.weight.data_ptr() == model.decoder.embed.weight.data_ptr()
    names = [n for n, _ in model.named_parameters()]
    assert "decoder.output.weight" not in names  # counted once
    state = model.state_dict()
    assert torch.equal(state["decoder.output.weight"], state["decoder.embed.weight"])


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("gru", 3)])
def test_orthogonal_rnn_init_gives_orthogonal_blocks(cell, gates):
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"rnn_init": "orthogonal",
                                      "encoder": {"cell": cell, "hidden_size": 8, "num_layers": 2},
                                      "decoder": {"cell": cell, "hidden_size": 16}}}).model
    model = build_model(cfg, src_vocab_size=20, tgt_vocab_size=20)
    checked = 0
    for name, p in model.named_parameters():
        if "weight_hh" in name:
            blocks = p.detach().chunk(gates, dim=0)
            assert len(blocks) == gates
            for block in blocks:
                n = block.size(0)
                torch.testing.assert_close(block @ block.T, torch.eye(n), atol=1e-5, rtol=0)
            checked += 1
    assert checked == 4 + 1  # 2 layers x 2 directions in the encoder, 1 decoder cell
    # ... which Xavier does not give.
    xavier = build_model(config_from_dict({"model": {"encoder": {"cell": cell, "hidden_size": 8}}}).model,
                         src_vocab_size=20, tgt_vocab_size=20)
    block = xavier.encoder.rnn.weight_hh_l0.detach().chunk(gates, dim=0)[0]
    assert not torch.allclose(block @ block.T, torch.eye(8), atol=1e-2)


def test_init_weights_zeroes_biases_and_padding_rows():
    model = build_model(model_config(), src_vocab_size=SRC_V, tgt_vocab_size=TGT_V)
    init_weights(model, init="uniform", rnn_init="xavier_uniform")
    for name, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.all(p == 0), name
        elif "embed" in name:
            assert torch.all(p[0] == 0), name
            assert p[1:].abs().max() <= 0.1
    assert torch.all(model.encoder.embed.weight[0] == 0)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            resolve_device("cuda")


@pytest.mark.parametrize("cell, num_layers, bidirectional",
                         list(itertools.product(["lstm", "gru"], [1, 2], [True, False])))
def test_the_written_out_encoder_equals_torchs_rnn_module(cell, num_layers, bidirectional):
    # Training on the CPU runs the recurrence written out (Encoder.train_pass); decoding runs the
    # module: same outputs, final states and gradients, whatever the lengths in the batch.
    from seq2seq.model.encoder import Encoder
    torch.manual_seed(0)
    encoder = Encoder(vocab_size=30, emb_size=6, hidden_size=5, num_layers=num_layers, cell=cell,
                      bidirectional=bidirectional, dropout=0.0, emb_dropout=0.0, output_dropout=0.0)
    src = pad([[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16], [17], [18, 19, 20, 21, 22, 23]])
    lengths = torch.tensor([6, 2, 4, 1, 6])

    def run(encode):
        encoder.zero_grad()
        enc = encode(src, lengths)
        outputs = [enc.states, enc.final_h] + ([enc.final_c] if enc.final_c is not None else [])
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outputs).backward()
        return outputs, {n: p.grad.clone() for n, p in encoder.named_parameters()}

    module, module_grads = run(encoder.forward)
    written, written_grads = run(encoder.train_pass)
    assert len(written) == len(module)  # final_c too, where one has it and the other not
    for a, b in zip(module, written):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert written[0][1, 2:].abs().sum() == 0  # padding stays zero
    for name, grad in module_grads.items():
        torch.testing.assert_close(written_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


# -- separate dropouts: each key acts where its name says -------------------------------------

def dropout_model(**sides):
    """A GRU model with no dropout but the given {side: {key: p}}."""
    raw = {"model": {"encoder": {"cell": "gru", "emb_size": 5, "hidden_size": 6, "dropout": 0.0,
                                 **sides.get("encoder", {})},
                     "decoder": {"cell": "gru", "emb_size": 7, "hidden_size": 8, "dropout": 0.0,
                                 **sides.get("decoder", {})}}}
    torch.manual_seed(0)
    return build_model(config_from_dict(raw).model, src_vocab_size=SRC_V, tgt_vocab_size=TGT_V).train()


SRC, LENGTHS = pad([[4, 5, 6, 7], [8, 9, 10, 11]]), torch.tensor([4, 4])
TGT_IN = torch.tensor([[2, 12, 13], [2, 14, 15]])


def test_decoder_output_dropout_acts_on_the_attentional_vector():
    model = dropout_model(decoder={"output_dropout": 1.0})
    logits = model(SRC, LENGTHS, TGT_IN)
    # Every attentional vector dropped: the output layer sees zeros, whatever the input.
    torch.testing.assert_close(logits, model.decoder.output.bias.expand_as(logits), rtol=0, atol=0)


def test_decoder_emb_dropout_acts_on_the_target_embeddings():
    model = dropout_model(decoder={"emb_dropout": 1.0})
    other = TGT_IN.clone()
    other[:, 1:] = 16
    # The target pieces reach the decoder only through its embeddings: dropped, they change nothing.
    torch.testing.assert_close(model(SRC, LENGTHS, TGT_IN), model(SRC, LENGTHS, other), rtol=0, atol=0)
    assert not torch.allclose(model.eval()(SRC, LENGTHS, TGT_IN), model(SRC, LENGTHS, other))


def test_encoder_emb_and_output_dropout_act_on_embeddings_and_memory():
    other = SRC.clone()
    other[:, 1:] = 16
    model = dropout_model(encoder={"emb_dropout": 1.0})
    torch.testing.assert_close(model.encoder.train_pass(SRC, LENGTHS).states,
                               model.encoder.train_pass(other, LENGTHS).states, rtol=0, atol=0)
    model = dropout_model(encoder={"output_dropout": 1.0})
    enc = model.encoder.train_pass(SRC, LENGTHS)
    assert torch.all(enc.states == 0) and torch.any(enc.final_h != 0)  # the memory, not the final state
    assert torch.any(model.eval().encoder(SRC, LENGTHS).states != 0)


def test_the_separate_dropouts_default_to_dropout_and_then_train_identically():
    # Left null, emb_dropout and output_dropout are `dropout`: the same random draws, the same
    # weights bit for bit, as when they are given the same value.
    from test_update import small_batches

    def trained(extra):
        raw = {"model": {side: {"cell": "lstm", "emb_size": 8, "hidden_size": 8, "num_layers": 2, "dropout": 0.3,
                                **extra} for side in ("encoder", "decoder")}}
        torch.manual_seed(0)
        m = build_model(config_from_dict(raw).model, src_vocab_size=50, tgt_vocab_size=60).train()
        optimizer = torch.optim.Adam(m.parameters(), lr=1e-2)
        for batch in small_batches(3):
            m(batch.src, batch.src_lengths, batch.tgt_in).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
        return m.state_dict()

    default, explicit = trained({}), trained({"emb_dropout": 0.3, "output_dropout": 0.3})
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    other = trained({"emb_dropout": 0.1})
    assert any(not torch.equal(default[k], other[k]) for k in default)


# -- layer-normalized cells ---------------------------------------------------------------------

LN_CASES = list(itertools.product(["lstm", "gru"], [1, 2], [True, False]))


@pytest.mark.parametrize("cell, num_layers, input_feeding", LN_CASES, ids=["-".join(map(str, c)) for c in LN_CASES])
def test_layer_norm_decoding_steps_give_the_teacher_forced_distributions(cell, num_layers, input_feeding):
    torch.manual_seed(0)
    cfg = model_config(cell=cell, num_layers=num_layers, input_feeding=input_feeding)
    cfg = config_from_dict({"model": {"encoder": {**vars(cfg.encoder), "layer_norm": True},
                                      "decoder": {**vars(cfg.decoder), "layer_norm": True}}}).model
    model = build_model(cfg, src_vocab_size=SRC_V, tgt_vocab_size=TGT_V)
    # Gains other than their initial ones, so that a gain left out anywhere would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gains" in name:
                assert torch.all(p == 1)
                p.uniform_(0.5, 1.5)
            elif "bias" in name:
                p.uniform_(-0.2, 0.2)
    model.eval()
    src, lengths = pad([[4, 5, 6], [7, 8]]), torch.tensor([3, 2])
    tgt_in = torch.tensor([[2, 9, 10, 11, 12], [2, 13, 14, 15, 0]])
    decoding = model.for_decoding()
    with torch.no_grad():
        expected = torch.log_softmax(model(src, lengths, tgt_in), dim=-1)
        memory, state = decoding.start(src, lengths)
        for t in range(tgt_in.size(1)):
            log_probs, state, _ = decoding.step(tgt_in[:, t], state, memory)
            torch.testing.assert_close(log_probs, expected[:, t], rtol=1e-5, atol=1e-5)
    # Its products and normalizations are its own modules; int8 would swap the products only.
    from seq2seq.model.recurrence import GateNorm
    norms = {name for name, m in decoding.named_modules() if isinstance(m, GateNorm)}
    assert norms == {f"products.{i}.norm_{kind}" for i in range(num_layers) for kind in ("input", "hidden")}
    # The normalization is really there: without it the distributions differ.
    plain = build_model(model_config(cell=cell, num_layers=num_layers, input_feeding=input_feeding),
                        src_vocab_size=SRC_V, tgt_vocab_size=TGT_V).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "gains" not in k})
    with torch.no_grad():
        assert not torch.allclose(torch.log_softmax(plain(src, lengths, tgt_in), -1), expected, atol=1e-3)


@pytest.mark.parametrize("cell, bidirectional", list(itertools.product(["lstm", "gru"], [True, False])))
def test_a_layer_normalized_encoder_normalizes_both_products(cell, bidirectional):
    from seq2seq.model.encoder import Encoder
    from seq2seq.model.recurrence import normalize
    torch.manual_seed(0)
    encoder = Encoder(vocab_size=30, emb_size=6, hidden_size=5, num_layers=1, cell=cell, bidirectional=bidirectional,
                      dropout=0.0, emb_dropout=0.0, output_dropout=0.0, layer_norm=True).eval()
    with torch.no_grad():
        for p in encoder.gains.values():
            p.uniform_(0.5, 1.5)
        for p in (encoder.rnn.bias_ih_l0, encoder.rnn.bias_hh_l0):
            p.uniform_(-0.5, 0.5)
    src = pad([[5, 6, 7, 8], [9, 10], [11, 12, 13]])
    lengths = torch.tensor([4, 2, 3])
    with torch.no_grad():
        states = encoder(src, lengths).states  # (batch, src_len, directions * 5)
        # The forward direction over the second sentence by hand: each product normalized on its
        # own, the module's biases as the shifts.
        rnn, gains = encoder.rnn, encoder.gains
        x = encoder.embed(src[1, :2])
        h, c = torch.zeros(5), torch.zeros(5)
        for t in range(2):
            gi = normalize(x[t] @ rnn.weight_ih_l0.t(), gains["input_l0"], rnn.bias_ih_l0)
            gh = normalize(h @ rnn.weight_hh_l0.t(), gains["hidden_l0"], rnn.bias_hh_l0)
            if cell == "lstm":
                i, f, g, o = (gi + gh).chunk(4)
                c = f.sigmoid() * c + i.sigmoid() * g.tanh()
                h = o.sigmoid() * c.tanh()
            else:
                r, z = (gi[:10] + gh[:10]).sigmoid().chunk(2)
                n = torch.tanh(gi[10:] + r * gh[10:])
                h = (1 - z) * n + z * h
            torch.testing.assert_close(states[1, t, :5], h, rtol=1e-5, atol=1e-6)
        assert torch.all(states[1, 2:] == 0)  # padding stays zero
        torch.testing.assert_close(encoder.train_pass(src, lengths).states, states, rtol=0, atol=0)
