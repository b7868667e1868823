"""Word dropout: the share of dropped positions is the rate, nothing is dropped in evaluation,
padding is never touched; and the encoder and decoder apply it to their inputs."""
import pytest
import torch

from seq2seq.config import config_from_dict
from seq2seq.model.model import build_model
from seq2seq.data.tokenizer import PAD
from seq2seq.model.word_dropout import WordDropout


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_the_share_of_dropped_positions_is_the_rate_and_padding_is_untouched(p):
    torch.manual_seed(0)
    tokens = torch.randint(4, 50, (200, 30))
    tokens[:, 20:] = PAD  # a third of every row is padding
    emb = torch.randn(200, 30, 8)
    emb[tokens == PAD] = 0.5  # whatever padding holds must come back as it was
    dropout = WordDropout(p).train()
    out = dropout(emb, tokens)
    real = tokens != PAD
    dropped = (out == 0).all(-1)  # (batch, len): the whole embedding zeroed
    n = int(real.sum())
    share = float(dropped[real].sum()) / n
    assert abs(share - p) < 4 * (p * (1 - p) / n) ** 0.5, share  # within four standard deviations
    assert not dropped[~real].any() and torch.equal(out[~real], emb[~real])
    kept = real & ~dropped
    torch.testing.assert_close(out[kept], emb[kept] / (1 - p))  # scaled as dropout scales
    assert torch.equal(dropout.eval()(emb, tokens), emb)  # evaluation: nothing dropped


def test_no_draw_at_all_when_off():
    torch.manual_seed(0)
    emb, tokens = torch.randn(3, 4, 5), torch.randint(4, 9, (3, 4))
    state = torch.get_rng_state()
    assert WordDropout(0.0).train()(emb, tokens) is emb
    assert torch.equal(torch.get_rng_state(), state)  # old configs draw the same random numbers as before


def model(side: str, p: float):
    raw = {"model": {"encoder": {"cell": "gru", "emb_size": 6, "hidden_size": 5, "dropout": 0.0},
                     "decoder": {"cell": "gru", "emb_size": 6, "hidden_size": 7, "dropout": 0.0}}}
    raw["model"][side]["word_dropout"] = p
    torch.manual_seed(0)
    return build_model(config_from_dict(raw).model, src_vocab_size=20, tgt_vocab_size=20)


@pytest.mark.parametrize("side", ["encoder", "decoder"])
def test_the_model_drops_words_of_its_side_in_training_only(side):
    src, lengths = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]]), torch.tensor([4, 2])
    tgt_in = torch.tensor([[2, 10, 11, 12], [2, 13, 14, 0]])
    plain, dropping = model(side, 0.0), model(side, 0.5)
    dropping.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    trained = [dropping.train()(src, lengths, tgt_in) for _ in range(3)]
    reference = plain.train()(src, lengths, tgt_in)
    assert all(not torch.allclose(t, reference) for t in trained)  # some words were dropped each time
    with torch.no_grad():
        torch.testing.assert_close(dropping.eval()(src, lengths, tgt_in), plain.eval()(src, lengths, tgt_in),
                                   rtol=0, atol=0)
