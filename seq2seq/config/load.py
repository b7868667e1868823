"""Loading a config: a YAML file (or the defaults), --set overrides, and for a fine-tuning run
the model and tokenizer sections of its parent, all through one validator.
"""
from __future__ import annotations

from pathlib import Path

from seq2seq.config.parent import ParentReader, inherit
from seq2seq.config.overrides import apply_overrides
from seq2seq.config.schema import Config
from seq2seq.config.validate import config_from_dict
from seq2seq.config.yaml_io import read_yaml
from seq2seq.errors import ConfigError

# Where a run keeps its resolved config; it is written before the first update, and every
# checkpoint of the run carries the same config.
RUN_CONFIG_FILE = "config.yaml"


def load_config(path: str | Path | None, overrides: list[str] | tuple = ()) -> Config:
    """Read YAML from `path` (or start from defaults), apply --set overrides, validate. (A run
    that fine-tunes a parent inherits the parent's settings first: load_run_config.)"""
    return config_from_dict(apply_overrides(read_yaml(path) if path is not None else {}, list(overrides)))


def read_parent_config(run_dir: Path, checkpoint: str = "") -> Config:
    """The config the parent run in `run_dir` trained with, from RUN_DIR/config.yaml: the same
    for every `checkpoint` of the run, so that is not opened. Any problem is an init_from error."""
    if not run_dir.is_dir():
        raise ConfigError(f"init_from: {run_dir}: is not a run directory (it does not exist or is a file)")
    path = run_dir / RUN_CONFIG_FILE
    try:
        raw = read_yaml(path)
    except ConfigError as e:
        raise ConfigError(f"init_from: {e}") from None
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"init_from: {path}: its stored config is not valid here: {e}") from None


def load_run_config(path: str | Path | None, overrides: list[str] | tuple = (), *,
                    read_parent: ParentReader = read_parent_config) -> Config:
    """The config a run trains with: YAML from `path` (or the defaults), --set `overrides`, and,
    with init_from, the model and tokenizer settings inherited from the parent run, which
    `read_parent` reads (default: the parent's RUN_DIR/config.yaml)."""
    return inherit(apply_overrides(read_yaml(path) if path is not None else {}, list(overrides)), read_parent)
