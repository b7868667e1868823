"""SentencePiece: text round-trips, and the special ids are the same for every model."""
import io

import pytest
import sentencepiece as spm

from seq2seq.data.tokenizer import BOS, EOS, PAD, UNK, Tokenizer, read_kept, seen_pieces, train_tokenizer, write_kept

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


ENGLISH = [s for s in SENTENCES if s.startswith(("A ", "Two"))]
GERMAN = [s for s in SENTENCES if s.startswith(("Ein", "Zwei", "Kinder"))]


def test_a_side_keeps_only_the_pieces_its_text_uses(tok):
    kept = seen_pieces(tok, ENGLISH)
    english = Tokenizer(tok.path, kept)
    assert kept[:4] == [PAD, UNK, BOS, EOS] and len(english) == len(kept) < len(tok)
    # English text reads exactly as with the full model: same pieces, same text back.
    for line in ENGLISH:
        ids = english.encode(line)
        assert max(ids) < len(english) and UNK not in ids
        assert english.pieces(ids) == tok.pieces(tok.encode(line))
        assert english.decode(ids) == line
    assert english.encode_batch(ENGLISH) == [english.encode(s) for s in ENGLISH]
    # A piece only German uses is not in the English vocabulary: German text is spelled out in
    # pieces the English side has, and still reads back.
    german_only = sorted(set(tok.pieces(tok.encode(GERMAN[0]))) - {tok.id_to_piece(i) for i in kept})
    assert german_only
    assert english.piece_to_id(german_only[0]) == UNK
    ids = english.encode(GERMAN[0])
    assert UNK not in ids and len(ids) > len(tok.encode(GERMAN[0]))
    assert english.decode(ids) == GERMAN[0]
    assert all(len(p) == 1 for p in english.pieces(ids) if p not in english.pieces(english.encode(" ".join(ENGLISH))))
    for i in range(len(english)):
        assert english.piece_to_id(english.id_to_piece(i)) == i


def test_kept_list_file_round_trips_and_bad_lists_are_refused(tok, tmp_path):
    kept = seen_pieces(tok, GERMAN)
    write_kept(tmp_path / "vocab.target.txt", kept)
    assert read_kept(tmp_path / "vocab.target.txt") == kept
    assert read_kept(tmp_path / "absent.txt") is None
    (tmp_path / "bad.txt").write_text("0\n1\n2\nthree\n")
    with pytest.raises(ValueError, match=r"bad.txt:4"):
        read_kept(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="start with 0 1 2 3"):
        Tokenizer(tok.path, [0, 1, 3, 2, 10])
    with pytest.raises(ValueError, match="below"):
        Tokenizer(tok.path, [0, 1, 2, 3, len(tok)])


@pytest.mark.parametrize("model_type, alpha, nbest_size", [("bpe", 0.3, -1), ("unigram", 0.2, -1), ("unigram", 0.5, 8)])
def test_random_segmentations_round_trip_and_repeat_with_their_seed(tmp_path, model_type, alpha, nbest_size):
    t = train_tokenizer(SENTENCES, tmp_path / "m.model", vocab_size=120, model_type=model_type,
                        character_coverage=1.0)
    texts = sorted(set(SENTENCES))
    drawn = t.sample_batch(texts * 4, alpha=alpha, nbest_size=nbest_size, seed=3)
    assert [t.decode(ids) for ids in drawn] == texts * 4
    assert sum(d != t.encode(text) for d, text in zip(drawn, texts * 4)) > len(drawn) // 4
    assert t.sample_batch(texts * 4, alpha=alpha, nbest_size=nbest_size, seed=3) == drawn
    assert t.sample_batch(texts * 4, alpha=alpha, nbest_size=nbest_size, seed=4) != drawn
    assert t.encode_batch(texts) == [t.encode(text) for text in texts]  # encoding itself stays deterministic


def test_pieces_added_to_a_model_are_whole_and_leave_the_others_as_they_were(tok, tmp_path):
    import shutil
    from seq2seq.data.tokenizer import add_pieces
    path = tmp_path / "grown.model"
    shutil.copy(tok.path, path)
    add_pieces(path, ["\u2581<bt>", "<ft>"])
    grown = Tokenizer(path)
    assert len(grown) == len(tok) + 2
    assert grown.id_to_piece(len(tok)) == "\u2581<bt>" and grown.id_to_piece(len(tok) + 1) == "<ft>"
    assert [grown.id_to_piece(i) for i in range(len(tok))] == [tok.id_to_piece(i) for i in range(len(tok))]
    for text in sorted(set(SENTENCES)):
        assert grown.encode(text) == tok.encode(text)
        assert grown.encode(f"<bt> {text}") == [len(tok)] + tok.encode(text)
    assert grown.decode(grown.encode("<bt> Two dogs <ft>play.")) == "<bt> Two dogs <ft>play."


def test_the_tokenizer_record_holds_the_tags_but_not_the_sampling(tmp_path):
    from seq2seq.config import config_from_dict
    from seq2seq.training.tokenizer_record import _record_changes, tokenizer_record
    plain = tokenizer_record(config_from_dict({}))
    assert plain["settings"]["data.train[].tag"] is None and not any("sampling" in k for k in plain["settings"])
    # A record written before tags existed (no such key) matches a run without tags: nothing is retrained.
    old = {**plain, "settings": {k: v for k, v in plain["settings"].items() if k != "data.train[].tag"}}
    assert _record_changes(old, plain) == []
    sampled = tokenizer_record(config_from_dict({"tokenizer": {"sampling": {"dropout": 0.1}}}))
    assert _record_changes(plain, sampled) == []
    untagged = tokenizer_record(config_from_dict({"data": {"train": [{"path": "a"}, {"path": "b"}]}}))
    tagged = tokenizer_record(config_from_dict({"data": {"train": [{"path": "a"}, {"path": "b", "tag": "<bt>"}]}}))
    assert _record_changes(untagged, tagged) == ["data.train[].tag changed (null -> ['<bt>'])"]
