"""Attention weights returned by the search belong to the hypothesis they come with."""
import torch

from seq2seq.config import ModelConfig, EncoderConfig, DecoderConfig
from seq2seq.model.model import build_model
from seq2seq.decoding.search import beam_search, greedy_search, max_output_lengths
from seq2seq.data.tokenizer import BOS, EOS


def random_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder=EncoderConfig(cell="gru", emb_size=8, hidden_size=8, dropout=0.0),
                      decoder=DecoderConfig(cell="lstm", emb_size=8, hidden_size=16, dropout=0.0))
    return build_model(cfg, src_vocab_size=20, tgt_vocab_size=12).eval().for_decoding()


def batch():
    src = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0], [4, 13, 0, 0, 0]])
    return src, torch.tensor([5, 3, 2])


@torch.no_grad()
def forced_attention(model, src_row, length, tokens):
    """Teacher-force `tokens` + EOS through the decoding step: (len(tokens) + 1, length) attention."""
    memory, state = model.start(src_row[:length].unsqueeze(0), torch.tensor([length]))
    prev, rows = torch.tensor([BOS]), []
    for tok in tokens + [EOS]:
        _, state, attn = model.step(prev, state, memory)
        rows.append(attn[0])
        prev = torch.tensor([tok])
    return torch.stack(rows)


def test_greedy_attention_matches_its_path_and_changes_nothing_else():
    model = random_model()
    src, lengths = batch()
    max_lengths = max_output_lengths(lengths, 1.5, 3)
    plain = greedy_search(model, src, lengths, max_lengths=max_lengths)
    with_attn = greedy_search(model, src, lengths, max_lengths=max_lengths, return_attention=True)
    assert len(plain) == len(with_attn) == len(lengths)
    for i, (p, h) in enumerate(zip(plain, with_attn)):
        assert p[0].tokens == h[0].tokens and p[0].score == h[0].score and p[0].attention is None
        assert h[0].attention.shape == (len(h[0].tokens) + 1, int(lengths[i]))
        expected = forced_attention(model, src[i], int(lengths[i]), h[0].tokens)
        torch.testing.assert_close(h[0].attention, expected, rtol=1e-4, atol=1e-5)


def test_beam_attention_follows_each_hypothesis_through_reordering():
    model = random_model(seed=3)
    src, lengths = batch()
    max_lengths = max_output_lengths(lengths, 2.0, 4)
    plain = beam_search(model, src, lengths, beam_size=4, max_lengths=max_lengths, nbest=3)
    with_attn = beam_search(model, src, lengths, beam_size=4, max_lengths=max_lengths, nbest=3,
                            return_attention=True)
    checked = 0
    assert len(plain) == len(with_attn) == len(lengths)
    for i, (ps, hs) in enumerate(zip(plain, with_attn)):
        assert [(h.tokens, h.score) for h in ps] == [(h.tokens, h.score) for h in hs]
        for h in hs:
            expected = forced_attention(model, src[i], int(lengths[i]), h.tokens)
            torch.testing.assert_close(h.attention, expected, rtol=1e-4, atol=1e-5)
            # Each row is a distribution over the real source positions only.
            torch.testing.assert_close(h.attention.sum(-1), torch.ones(len(h.tokens) + 1))
            checked += 1
    assert checked >= 6
