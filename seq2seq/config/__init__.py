"""Typed experiment configuration, the one place where user settings are validated: the schema
of nested frozen dataclasses with every key's default, help and range (schema.py); checking a
raw mapping, with unknown keys, wrong types, out-of-range values and cross-field rules each a
ConfigError naming the dotted key path before any work starts (validate.py); reading and
writing YAML (yaml_io.py); --set overrides (overrides.py); a fine-tuning child resolved over its
parent's typed model and tokenizer sections (parent.py); and the loaders (load.py). A leaf: of
this project it imports only `seq2seq.errors`, so every wing may import it.
"""
from seq2seq.config.parent import (FREE_MODEL_KEYS, FREE_TOKENIZER_KEYS, PER_SIDE, ParentReader,
                                    check_architecture, differences, inherit)
from seq2seq.config.load import RUN_CONFIG_FILE, load_config, load_run_config, read_parent_config
from seq2seq.config.overrides import apply_overrides, deep_merge, parse_override
from seq2seq.config.schema import (COUNT_MAX, SEED_MAX, SIZE_MAX, SPM_VOCAB_MAX, Config, DataConfig, DecoderConfig,
                                   DecodingConfig, EncoderConfig, FinetuneConfig, FreezablePart, ModelConfig,
                                   SubwordSampling, TokenizerConfig, TrainCorpus, TrainingConfig)
from seq2seq.config.validate import CORPUS_TAG, config_from_dict
from seq2seq.config.yaml_io import defaults_yaml, dump_yaml, parse_yaml, read_yaml, to_dict
from seq2seq.errors import ConfigError

__all__ = [
    "COUNT_MAX", "CORPUS_TAG", "Config", "ConfigError", "DataConfig", "DecoderConfig", "DecodingConfig",
    "EncoderConfig", "FREE_MODEL_KEYS", "FREE_TOKENIZER_KEYS", "FinetuneConfig", "FreezablePart", "ModelConfig",
    "PER_SIDE", "ParentReader", "RUN_CONFIG_FILE", "SEED_MAX", "SIZE_MAX", "SPM_VOCAB_MAX", "SubwordSampling",
    "TokenizerConfig", "TrainCorpus", "TrainingConfig", "apply_overrides", "check_architecture", "config_from_dict",
    "deep_merge", "defaults_yaml", "differences", "dump_yaml", "inherit", "load_config", "load_run_config",
    "parse_override", "parse_yaml", "read_parent_config", "read_yaml", "to_dict",
]
