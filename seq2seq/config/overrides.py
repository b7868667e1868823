"""Command-line overrides (`--set training.lr=3e-4`) laid over a raw config before it is
validated, so they pass through the same checks as the file.
"""
from __future__ import annotations

import copy
from typing import Any

from seq2seq.config.yaml_io import parse_yaml
from seq2seq.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'a.b.c=value' into a key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, _, value = text.partition("=")
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {text!r}: empty key in {key!r}")
    parsed = parse_yaml(value, "--set", key=key.strip()) if value.strip() else None
    return keys, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of `raw` with each 'a.b=value' override set."""
    raw = copy.deepcopy(raw) if raw else {}
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(keys[:i + 1])}: is a value, not a section")
            node = child
        node[keys[-1]] = value
    return raw


def deep_merge(base: dict, extra: dict) -> dict:
    """A copy of `base` with `extra` laid over it; nested mappings merge key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
