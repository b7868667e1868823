"""Config validation: every user error names its dotted key; defaults and shipped configs load."""
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from seq2seq.config import (Config, ConfigError, TrainCorpus, config_from_dict, defaults_yaml, dump_yaml,
                            load_config)
from seq2seq.config import load_run_config as resolve  # reads a parent's config.yaml (begin's: its checkpoint)
from seq2seq.training.begin import load_run_config

ROOT = Path(__file__).resolve().parents[1]


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    return str(info.value)


def test_unknown_key_names_path_and_suggests_the_closest():
    msg = error_of({"model": {"encoder": {"hiden_size": 3}}})
    assert msg.startswith("model.encoder.hiden_size: unknown key")
    assert "did you mean hidden_size?" in msg


def test_unknown_key_without_a_close_name_lists_the_known_ones():
    msg = error_of({"training": {"zzzzzz": 1}})
    assert msg.startswith("training.zzzzzz: unknown key")
    assert "known keys" in msg and "lr" in msg


def test_unknown_section_names_it():
    assert error_of({"trainng": {}}).startswith("trainng: unknown key, did you mean training?")


def assert_error_names(raw, key, words):
    """The config error for `raw` starts with `key` and mentions every word."""
    msg = error_of(raw)
    assert msg.startswith(key + ":"), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("raw, key, words", [
    ({"training": {"lr": "fast"}}, "training.lr", ["a number", "'fast'"]),
    ({"training": {"max_epochs": 2.5}}, "training.max_epochs", ["an integer", "2.5"]),
    ({"training": {"max_epochs": True}}, "training.max_epochs", ["an integer"]),
    ({"model": {"encoder": {"bidirectional": "yes"}}}, "model.encoder.bidirectional", ["true or false"]),
    ({"data": {"src_lang": 5}}, "data.src_lang", ["a string"]),
    ({"training": {"betas": "0.9"}}, "training.betas", ["a list of numbers"]),
    ({"model": {"encoder": {"hidden_size": None}}}, "model.encoder.hidden_size", ["null is not allowed"]),
    ({"model": {"encoder": 3}}, "model.encoder", ["expected a mapping"]),
])
def test_wrong_type_names_key_expected_and_given(raw, key, words):
    assert_error_names(raw, key, words)


@pytest.mark.parametrize("raw, key, words", [
    ({"training": {"lr": 0}}, "training.lr", ["greater than 0.0", "got 0"]),
    ({"training": {"lr": -1e-3}}, "training.lr", ["greater than"]),
    ({"model": {"encoder": {"dropout": 1.5}}}, "model.encoder.dropout", ["at most 1.0", "1.5"]),
    ({"model": {"decoder": {"num_layers": 0}}}, "model.decoder.num_layers", ["at least 1", "0"]),
    ({"decoding": {"beam_size": 0}}, "decoding.beam_size", ["at least 1"]),
    ({"tokenizer": {"vocab_size": 4}}, "tokenizer.vocab_size", ["at least 8"]),
    ({"training": {"lr": float("nan")}}, "training.lr", ["finite"]),
    ({"training": {"ema_decay": 1.0}}, "training.ema_decay", ["less than 1.0", "1.0"]),
    ({"training": {"ema_decay": 0}}, "training.ema_decay", ["greater than 0.0"]),
    ({"model": {"decoder": {"word_dropout": 1.0}}}, "model.decoder.word_dropout", ["less than 1.0"]),
    ({"model": {"encoder": {"emb_dropout": -0.1}}}, "model.encoder.emb_dropout", ["at least 0.0"]),
    ({"model": {"decoder": {"output_dropout": 2}}}, "model.decoder.output_dropout", ["at most 1.0"]),
    ({"training": {"average_checkpoints": -1}}, "training.average_checkpoints", ["at least 0"]),
])
def test_out_of_range_names_key_and_bound(raw, key, words):
    assert_error_names(raw, key, words)


def test_literal_choice_lists_the_allowed_values():
    assert error_of({"model": {"encoder": {"cell": "lstn"}}}) == "model.encoder.cell: 'lstn' is not one of: lstm, gru"
    assert error_of({"model": {"decoder": {"attention": "luong"}}}) == (
        "model.decoder.attention: 'luong' is not one of: additive, dot, general")
    assert error_of({"training": {"optimizer": "Adam"}}).startswith("training.optimizer: 'Adam' is not one of:")


@pytest.mark.parametrize("raw, key, words", [
    ({"tokenizer": {"joint": False}, "model": {"share_embeddings": True}}, "model.share_embeddings",
     ["tokenizer.joint"]),
    ({"model": {"share_embeddings": True, "encoder": {"emb_size": 16}, "decoder": {"emb_size": 32}}},
     "model.share_embeddings", ["16", "32"]),
    ({"model": {"tie_embeddings": True, "decoder": {"emb_size": 16, "hidden_size": 32}}},
     "model.tie_embeddings", ["emb_size", "hidden_size"]),
    ({"model": {"encoder": {"hidden_size": 8, "bidirectional": True},
                "decoder": {"hidden_size": 8, "attention": "dot"}}}, "model.decoder.attention", ["16", "8"]),
    ({"training": {"batch_tokens": None, "batch_size": None}}, "training.batch_tokens", ["batch_size"]),
    ({"training": {"betas": [0.9]}}, "training.betas", ["two numbers"]),
    ({"training": {"betas": [0.9, 1.0]}}, "training.betas", ["[0, 1)"]),
    ({"data": {"src_lang": "en", "tgt_lang": "en"}}, "data.tgt_lang", ["src_lang"]),
    ({"training": {"average_checkpoints": 4, "keep_best": 3}}, "training.average_checkpoints", ["keep_best >= 4"]),
    ({"training": {"ema_start": 100}}, "training.ema_start", ["ema_decay"]),
    ({"training": {"average_checkpoints": 1}}, "training.average_checkpoints", ["at least 2", "0 or null: off"]),
])
def test_cross_field_rules_name_a_key(raw, key, words):
    assert_error_names(raw, key, words)


@pytest.mark.parametrize("sampling, key, words", [
    ({"alpha": 0.1}, "tokenizer.sampling.alpha", ["unigram", "dropout"]),
    ({"dropout": 0.1, "model_type": "unigram"}, "tokenizer.sampling.dropout", ["BPE-dropout", "alpha"]),
    ({"nbest_size": 8, "model_type": "unigram"}, "tokenizer.sampling.nbest_size", ["alpha"]),
    ({"alpha": 0.1, "nbest_size": 1, "model_type": "unigram"}, "tokenizer.sampling.nbest_size", ["2 or more"]),
    ({"copies": 8}, "tokenizer.sampling.copies", ["alpha or dropout"]),
    ({"dropout": 0.0}, "tokenizer.sampling.dropout", ["greater than 0"]),
    ({"dropout": 0.1, "copies": 0}, "tokenizer.sampling.copies", ["at least 1"]),
])
def test_subword_sampling_settings_name_their_key(sampling, key, words):
    sampling = dict(sampling)
    model_type = sampling.pop("model_type", "bpe")
    assert_error_names({"tokenizer": {"model_type": model_type, "sampling": sampling}}, key, words)


def test_subword_sampling_is_off_by_default_and_takes_either_kind():
    assert not Config().tokenizer.sampling.on
    assert config_from_dict({"tokenizer": {"sampling": {"dropout": 0.1}}}).tokenizer.sampling.on
    unigram = config_from_dict({"tokenizer": {"model_type": "unigram", "sampling": {"alpha": 0.2, "nbest_size": 16,
                                                                                   "copies": 8}}})
    assert unigram.tokenizer.sampling.on and unigram.tokenizer.sampling.copies == 8


def test_cross_field_rules_accept_valid_combinations():
    cfg = config_from_dict({"model": {"share_embeddings": True, "tie_embeddings": True,
                                      "encoder": {"emb_size": 32, "hidden_size": 16, "bidirectional": True},
                                      "decoder": {"emb_size": 32, "hidden_size": 32, "attention": "dot"}}})
    assert cfg.model.share_embeddings and cfg.model.tie_embeddings


def test_data_train_is_always_a_list_of_corpora():
    one = config_from_dict({"data": {"train": "corpora/a"}})
    assert one.data.train == [TrainCorpus("corpora/a", 1.0)]
    listed = config_from_dict({"data": {"train": [{"path": "corpora/a"}, {"path": "corpora/b", "weight": 0.5}]}})
    assert listed.data.train == [TrainCorpus("corpora/a", 1.0), TrainCorpus("corpora/b", 0.5)]
    assert Config().data.train == [TrainCorpus("data/multi30k/train", 1.0)]
    # what a run writes (config.yaml, the checkpoint's config) loads back to the same config
    assert config_from_dict(yaml.safe_load(dump_yaml(one))) == one


def test_an_old_run_config_with_one_training_path_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(Config()).replace("  train:\n  - path: data/multi30k/train\n    weight: 1.0\n"
                                                "    tag: null\n", "  train: data/old/train\n"))
    assert "train: data/old/train\n" in path.read_text()
    assert load_config(path).data.train == [TrainCorpus("data/old/train", 1.0)]
    assert load_config(None, ["data.train=data/other/train"]).data.train == [TrainCorpus("data/other/train", 1.0)]


@pytest.mark.parametrize("train, key, words", [
    ([{"path": "a"}, {"path": "b", "tag": "bt"}], "data.train[1].tag", ["<bt>", "'bt'"]),
    ([{"path": "a", "tag": "<2de>"}], "data.train[0].tag", ["'<2de>'"]),
    ([{"path": "a", "tag": "<s>"}], "data.train[0].tag", ["not <s>"]),
    ([{"path": "a", "tag": "<b t>"}], "data.train[0].tag", ["'<b t>'"]),
    ([{"path": "a", "tag": 5}], "data.train[0].tag", ["expected a string"]),
    (5, "data.train", ["a string or a list", "5"]),
    ([], "data.train", ["empty list"]),
    (["corpora/a"], "data.train[0]", ["mapping"]),
    ("", "data.train[0].path", ["path prefix"]),
    ([{"path": "a", "weight": 0}], "data.train[0].weight", ["greater than 0"]),
    ([{"path": "a", "wieght": 2}], "data.train[0].wieght", ["did you mean weight?"]),
])
def test_data_train_errors_name_the_corpus_at_fault(train, key, words):
    assert_error_names({"data": {"train": train}}, key, words)


def write(tmp_path, raw) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_overrides_set_nested_values_with_yaml_types(tmp_path):
    cfg = load_config(write(tmp_path, {"training": {"lr": 0.1}}),
                      ["training.lr=3e-4", "model.encoder.cell=gru", "training.max_steps=null",
                       "model.decoder.input_feeding=false", "training.betas=[0.8, 0.99]"])
    assert cfg.training.lr == 3e-4
    assert cfg.model.encoder.cell == "gru"
    assert cfg.training.max_steps is None
    assert cfg.model.decoder.input_feeding is False
    assert cfg.training.betas == [0.8, 0.99]


@pytest.mark.parametrize("override, start", [
    ("model.encoder.cell=lstn", "model.encoder.cell: 'lstn' is not one of: lstm, gru"),
    ("model.encoder.hiden_size=3", "model.encoder.hiden_size: unknown key, did you mean hidden_size?"),
    ("training.lr=fast", "training.lr: expected a number"),
    ("training.lr=0", "training.lr: must be greater than"),
    ("model.tie_embeddings=true", "model.tie_embeddings:"),  # emb 256 != hidden 512 by default
    ("training.lr.x=1", "training.lr:"),
])
def test_overrides_go_through_the_same_validation(tmp_path, override, start):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {}), [override])
    assert str(info.value).startswith(start), str(info.value)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as a string; both files and --set must still accept it.
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 1e-3\n  min_lr: 5E-7\n")
    cfg = load_config(path, ["training.weight_decay=1e-5"])
    assert (cfg.training.lr, cfg.training.min_lr, cfg.training.weight_decay) == (1e-3, 5e-7, 1e-5)


def test_malformed_override_is_a_config_error():
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_config(None, ["training.lr"])


def test_missing_and_invalid_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path, request):
    overrides = []
    if "init_from" in yaml.safe_load(path.read_text()):
        # Fine-tuning configs name a parent run that exists only after training it; check
        # them against the tiny trained run instead (their model section is inherited).
        overrides = [f"init_from={request.getfixturevalue('trained_run')}"]
    # As `seq2seq train` resolves them: a fine-tuning config inherits from its parent first.
    assert isinstance(cfg := load_run_config(path, overrides), Config)
    assert resolve(path, overrides) == cfg  # a run's config.yaml holds what its checkpoints hold


def test_a_child_is_resolved_over_its_parents_typed_sections(tmp_path):
    parent = config_from_dict({"tokenizer": {"vocab_size": 500}, "model": {
        "share_embeddings": True, "encoder": {"emb_size": 64, "hidden_size": 128}, "decoder": {"emb_size": 64}}})
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "config.yaml").write_text(dump_yaml(parent))
    child = write(tmp_path, {"init_from": str(tmp_path / "parent"), "model": {"encoder": {"dropout": 0.1}}})
    assert (cfg := resolve(child)).model == replace(parent.model, encoder=replace(parent.model.encoder, dropout=0.1))
    assert cfg.tokenizer == parent.tokenizer and cfg.training == Config().training
    with pytest.raises(ConfigError, match=r"^model: the architecture .*encoder\.hidden_size \(parent 128, here 64\)"):
        resolve(child, ["model.encoder.hidden_size=64"])
    with pytest.raises(ConfigError, match=r"^tokenizer: finetune.vocabulary: keep .*vocab_size \(parent 500, here 64"):
        resolve(child, ["finetune.vocabulary=keep", "tokenizer.vocab_size=64", "tokenizer.sampling.dropout=0.1"])
    split = resolve(child, ["finetune.vocabulary=keep_source"])  # a tokenizer per side: the matrix splits
    assert not split.model.share_embeddings and not split.tokenizer.joint and split.tokenizer.vocab_size == 500
    for key in ("model.share_embeddings", "tokenizer.joint"):
        with pytest.raises(ConfigError, match=rf"^{key}: finetune.vocabulary: keep_source gives each side"):
            resolve(child, ["finetune.vocabulary=keep_source", f"{key}=true"])
    seen = []
    resolve(child, ["finetune.checkpoint=last.pt"], read_parent=lambda *where: seen.append(where) or parent)
    assert seen == [(tmp_path / "parent", "last.pt")]


def test_a_parent_that_is_not_a_run_is_an_init_from_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.yaml").write_text("model: {encoder: {hiden_size: 3}}")
    for parent, message in (("nowhere", "is not a run directory"), ("", "config.yaml: config file not found"),
                            ("bad", "its stored config is not valid here: model.encoder.hiden_size: unknown key")):
        with pytest.raises(ConfigError, match=f"^init_from: .*{message}"):
            resolve(write(tmp_path, {"init_from": str(tmp_path / parent)}))


def test_shipped_configs_exist():
    names = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert {"tiny.yaml", "multi30k_en_de.yaml"} <= names


def test_defaults_yaml_loads_back_to_the_defaults():
    text = defaults_yaml()
    assert config_from_dict(yaml.safe_load(text)) == Config()
    # Every key carries its help text as a comment.
    leaves = [line for line in text.splitlines() if not line.rstrip().endswith(":")]
    assert leaves and all("  # " in line for line in leaves)


def test_the_recipe_techniques_are_off_by_default_and_listed_with_their_meaning():
    cfg = Config()
    t, e, d = cfg.training, cfg.model.encoder, cfg.model.decoder
    assert t.ema_decay is None and t.average_checkpoints is None
    assert e.word_dropout == d.word_dropout == 0.0 and not e.layer_norm and not d.layer_norm
    assert e.emb_dropout is e.output_dropout is d.emb_dropout is d.output_dropout is None
    text = defaults_yaml()
    for key in ("ema_decay", "ema_start", "average_checkpoints", "word_dropout", "emb_dropout", "output_dropout",
                "layer_norm"):
        assert all("  # " in line for line in text.splitlines() if line.strip().startswith(key + ":")), key
    ok = config_from_dict({"training": {"ema_decay": 0.9999, "ema_start": 10, "average_checkpoints": 3},
                           "model": {"decoder": {"layer_norm": True, "emb_dropout": 0.3, "output_dropout": 0.5}}})
    assert ok.training.ema_decay == 0.9999 and ok.model.decoder.output_dropout == 0.5
    assert config_from_dict({"training": {"average_checkpoints": 0}}).training.average_checkpoints == 0  # off


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.training.lr = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Ranges the libraries accept, YAML syntax errors and duplicate keys (issue 28)


def numeric_fields():
    """(dotted key, field, type) of every int or float key of the config."""
    import dataclasses
    import typing

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(tp):
                yield from walk(tp, key + ".")
                continue
            if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
                yield from walk(typing.get_args(tp)[0], key + "[0].")
                continue
            args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            if args[0] in (int, float):
                yield key, f, args[0]
    return list(walk(Config, ""))


def with_value(key: str, value) -> dict:
    """A raw config with `key` (dotted, [0] for the first training corpus) set to `value`."""
    raw: dict = {}
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if part.endswith("[0]"):
            item: dict = {"path": "corpora/a"}
            node[part[:-3]] = [item]
            node = item
        else:
            node = node.setdefault(part, {})
    node[parts[-1]] = value
    return raw


def test_every_numeric_key_has_a_range():
    fields = numeric_fields()
    assert len(fields) > 40
    unbounded = [key for key, f, _ in fields if f.metadata.get("min") is None or f.metadata.get("max") is None]
    assert unbounded == []


@pytest.mark.parametrize("key", [key for key, _, _ in numeric_fields()])
def test_a_value_beyond_any_library_is_an_error_naming_the_key(key):
    tp = dict((k, t) for k, _, t in numeric_fields())[key]
    for value in ((2 ** 63, -(2 ** 63)) if tp is int else (1e300, -1e300)):
        msg = error_of(with_value(key, value))
        assert msg.startswith(key.replace("[0]", "[0]") + ":"), msg


def test_vocab_size_beyond_sentencepiece_is_a_config_error():
    # SentencePiece reads vocab_size as an int32; its unigram trainer multiplies it by 1.1.
    with pytest.raises(ConfigError, match=r"^tokenizer.vocab_size: must be at most 1952257860"):
        load_config(None, ["tokenizer.vocab_size=10000000000"])
    assert load_config(None, ["tokenizer.vocab_size=1952257860"]).tokenizer.vocab_size == 1952257860


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  lr: 0.1\n  betas: [0.9, 0.98\nmodel: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{bad}:4:6: not valid YAML (expected ',' or ']'"), msg
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("training:\n\tlr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{tabs}:2:1: not valid YAML") as info:
        load_config(tabs)
    assert "\n" not in str(info.value)


def test_a_duplicate_key_is_an_error_naming_its_path(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("training:\n  lr: 0.1\n  max_epochs: 3\n  lr: 0.2\nmodel:\n  encoder: {cell: gru}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:4:3: training.lr: duplicate key (first at line 2)"
    nested = tmp_path / "nested.yaml"
    nested.write_text("data:\n  train:\n  - {path: a, weight: 1, weight: 2}\n")
    with pytest.raises(ConfigError, match=r"data\.train\[0\]\.weight: duplicate key"):
        load_config(nested)
    top = tmp_path / "top.yaml"
    top.write_text("training: {}\ntraining: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r":2:1: training: duplicate key \(first at line 1\)"):
        load_config(top)


def test_a_config_whose_aliases_expand_exponentially_is_refused_at_once(tmp_path):
    # "Billion laughs": 12 lines of anchors, each alias repeating the one before nine times,
    # stand for 9^12 values. A walk over the expanded config would never end; a subprocess with
    # a time limit turns that into a failure instead of a hung suite.
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    lines += ["data: {train: [*a11]}"]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size < 1200
    done = subprocess.run([sys.executable, "-m", "seq2seq", "config", "--config", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"{path}:1:1: its anchors and aliases expand to more than 100,000 values" in done.stderr
    # An alias used as YAML means it, to share a value, still works.
    shared = tmp_path / "shared.yaml"
    shared.write_text("model:\n  encoder: &cell {cell: gru}\n  decoder: *cell\n", encoding="utf-8")
    assert load_config(shared).model.decoder.cell == "gru"


def test_the_quickstart_config_gives_the_same_model_on_a_slow_or_busy_machine():
    # Bounded by updates (epochs of a fixed corpus), never by minutes, and no fixed thread count
    # that would oversubscribe a machine another program keeps busy (training/machine.py).
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    assert cfg.training.max_minutes is None and cfg.training.max_epochs == 4
    assert cfg.training.num_threads is None
