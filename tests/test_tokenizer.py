"""SentencePiece: text round-trips, and the special ids are the same for every model."""
import io

import pytest
import sentencepiece as spm

from seq2seq.tokenizer import BOS, EOS, PAD, UNK, Tokenizer, tokenizer_files, train_tokenizer

SENTENCES = [
    "A man in a blue shirt is standing on a ladder.",
    "Two dogs play in the snow near a wooden fence.",
    "Ein Mann in einem blauen Hemd steht auf einer Leiter.",
    "Zwei Hunde spielen im Schnee neben einem Holzzaun.",
    "Kinder laufen über die Straße, während es regnet.",
    "A woman with a red umbrella walks past the café.",
] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "spm.model"
    return train_tokenizer(SENTENCES, path, vocab_size=120, model_type="bpe", character_coverage=1.0)


def test_special_ids_are_fixed(tok):
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    assert (tok.sp.pad_id(), tok.sp.unk_id(), tok.sp.bos_id(), tok.sp.eos_id()) == (PAD, UNK, BOS, EOS)


@pytest.mark.parametrize("text", sorted(set(SENTENCES)) + ["Ein Hund läuft.", "snow  on   the ladder"])
def test_text_round_trips(tok, text):
    ids = tok.encode(text)
    assert ids and not {PAD, BOS, EOS} & set(ids)
    # SentencePiece normalises runs of spaces; everything else comes back as it was.
    assert tok.decode(ids) == " ".join(text.split())


def test_batch_encoding_equals_single(tok):
    texts = sorted(set(SENTENCES))
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_decode_drops_special_ids(tok):
    ids = tok.encode("Two dogs play.")
    assert tok.decode([BOS] + ids + [EOS, PAD, PAD]) == "Two dogs play."


def test_unknown_characters_map_to_unk(tok):
    assert UNK in tok.encode("字")


def test_small_corpus_cannot_fill_the_vocabulary_but_trains(tmp_path):
    t = train_tokenizer(["ab ab ab", "ba ba"], tmp_path / "x.model", vocab_size=500, model_type="unigram",
                        character_coverage=1.0)
    assert 4 < len(t) < 500
    assert t.decode(t.encode("ab ba")) == "ab ba"


def test_model_with_other_special_ids_is_refused(tmp_path):
    model = io.BytesIO()
    # SentencePiece's own defaults: unk=0, bos=1, eos=2, no pad.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES), model_writer=model, vocab_size=60,
                                   hard_vocab_limit=False, minloglevel=2)
    path = tmp_path / "other.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(ValueError, match="special ids"):
        Tokenizer(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Tokenizer(tmp_path / "none.model")


def test_tokenizer_files(tmp_path):
    assert tokenizer_files(tmp_path, True, "en", "de") == (tmp_path / "spm.joint.model",) * 2
    assert tokenizer_files(tmp_path, False, "en", "de") == (tmp_path / "spm.en.model", tmp_path / "spm.de.model")
