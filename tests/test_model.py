"""Model wiring: shapes of every combination, shared/tied embeddings, initialisation."""
import itertools

import pytest
import torch
from torch import nn

from seq2seq.config import config_from_dict
from seq2seq.data import pad
from seq2seq.decoder import DecoderState, Memory
from seq2seq.decoding import DecodingModel
from seq2seq.model import build_model, count_parameters, init_weights, resolve_device

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
    from seq2seq.encoder import Encoder
    torch.manual_seed(0)
    encoder = Encoder(vocab_size=30, emb_size=6, hidden_size=5, num_layers=num_layers, cell=cell,
                      bidirectional=bidirectional, dropout=0.0)
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
    for a, b in zip(module, written):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert written[0][1, 2:].abs().sum() == 0  # padding stays zero
    for name, grad in module_grads.items():
        torch.testing.assert_close(written_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
