"""Attention: padding gets exactly zero weight and its contents change nothing."""
import pytest
import torch

from seq2seq.model.attention import AdditiveAttention, DotAttention, GeneralAttention, build_attention
from seq2seq.config import config_from_dict
from seq2seq.data import pad
from seq2seq.model.model import build_model

KINDS = ["additive", "dot", "general"]


def make_inputs(seed: int = 0, size: int = 6):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 2, 3])
    keys = torch.randn(3, 5, size, generator=g)  # (batch, src_len, key)
    mask = torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)  # (batch, src_len)
    query = torch.randn(3, size, generator=g)
    return query, keys, mask


@pytest.mark.parametrize("kind", KINDS)
def test_padding_gets_exactly_zero_weight(kind):
    torch.manual_seed(0)
    attn = build_attention(kind, query_size=6, key_size=6)
    query, keys, mask = make_inputs()
    context, weights = attn(query, attn.project_keys(keys), keys, mask)
    assert context.shape == (3, 6) and weights.shape == (3, 5)
    assert torch.all(weights[~mask] == 0.0)
    assert torch.all(weights[mask] > 0.0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))


@pytest.mark.parametrize("kind", KINDS)
def test_perturbing_padded_positions_changes_nothing(kind):
    torch.manual_seed(0)
    attn = build_attention(kind, query_size=6, key_size=6)
    query, keys, mask = make_inputs()
    noisy = keys.clone()
    noisy[~mask] = 1e4 * torch.randn(int((~mask).sum()), 6)
    c1, w1 = attn(query, attn.project_keys(keys), keys, mask)
    c2, w2 = attn(query, attn.project_keys(noisy), noisy, mask)
    assert torch.equal(w1, w2)
    assert torch.equal(c1, c2)
    # ... while changing a real position does change the result (the test can see a change).
    real = keys.clone()
    real[0, 0] += 1.0
    _, w3 = attn(query, attn.project_keys(real), real, mask)
    assert not torch.equal(w1[0], w3[0])


def test_different_key_and_query_sizes():
    query, keys, mask = make_inputs(size=6)
    for attn in (AdditiveAttention(query_size=4, key_size=6, attn_size=5), GeneralAttention(query_size=4, key_size=6)):
        context, weights = attn(query[:, :4], attn.project_keys(keys), keys, mask)
        assert context.shape == (3, 6) and weights.shape == (3, 5)
    with pytest.raises(ValueError, match="equal query and key sizes"):
        build_attention("dot", query_size=4, key_size=6)
    assert isinstance(build_attention("dot", query_size=6, key_size=6), DotAttention)


def test_dot_attention_scores_are_dot_products():
    query, keys, mask = make_inputs()
    _, weights = DotAttention()(query, keys, keys, mask)
    expected = torch.softmax((keys @ query.unsqueeze(2)).squeeze(2).masked_fill(~mask, float("-inf")), -1)
    torch.testing.assert_close(weights, expected)


def tiny_model(attention: str, cell: str, bidirectional: bool = True):
    hidden = 16
    raw = {"model": {"encoder": {"cell": cell, "emb_size": 8, "hidden_size": hidden // 2 if bidirectional else hidden,
                                 "bidirectional": bidirectional, "num_layers": 2, "dropout": 0.0},
                     "decoder": {"cell": cell, "emb_size": 8, "hidden_size": hidden, "attention": attention,
                                 "num_layers": 2, "dropout": 0.0}}}
    torch.manual_seed(0)
    return build_model(config_from_dict(raw).model, src_vocab_size=20, tgt_vocab_size=22).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("kind", KINDS)
def test_padded_sentence_gives_the_same_outputs_as_alone(kind, cell):
    model = tiny_model(kind, cell)
    sentences = [[4, 5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17, 18]]
    targets = pad([[2, 4, 5, 6], [2, 7, 8, 9], [2, 10, 11, 12]])
    src = pad(sentences)
    lengths = torch.tensor([len(s) for s in sentences])
    with torch.no_grad():
        together = model(src, lengths, targets)
        for i, s in enumerate(sentences):
            alone = model(torch.tensor([s]), torch.tensor([len(s)]), targets[i:i + 1])
            torch.testing.assert_close(together[i:i + 1], alone, rtol=1e-5, atol=1e-5)
        # Step-wise decoding sees the same: the attention on padding is exactly zero.
        decoding = model.for_decoding()
        memory, state = decoding.start(src, lengths)
        _, _, weights = decoding.step(targets[:, 0], state, memory)
        assert torch.all(weights[1, 3:] == 0.0) and torch.all(weights[2, 5:] == 0.0)


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_step_attention_equals_the_modules_attend_with_its_gradients(kind):
    # Training runs each step's attention as one autograd node (attention.StepAttention).
    from seq2seq.model.attention import StepAttention
    torch.manual_seed(0)
    attention = build_attention(kind, query_size=6, key_size=6).double()
    values = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False], [True, False, False, False, False]])
    query = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)

    def step(query, values, module: bool):
        keys = attention.project_keys(values)
        projected = attention.query_proj(query) if getattr(attention, "query_proj", None) is not None else query
        if module:
            context, weights = attention.attend(projected, keys, values, mask)
            return torch.cat([query, context], dim=-1), weights
        return StepAttention(attention, keys, values, mask)(query, projected)

    torch.testing.assert_close(step(query, values, False), step(query, values, True))
    assert torch.autograd.gradcheck(lambda q, v: step(q, v, False), (query, values))
    weights = [p for p in attention.parameters()]
    if weights:  # the score vector and projections get the module's gradients too
        got = torch.autograd.grad(step(query, values, False)[0].sum(), weights)
        want = torch.autograd.grad(step(query, values, True)[0].sum(), weights)
        torch.testing.assert_close(got, want)
