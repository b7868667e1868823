"""YAML in and out: reading a config file with line and column errors and refusing a key given
twice (YAML would silently keep the last), writing a resolved config, and the commented
reference of every key with its default (`seq2seq config --defaults`).
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from seq2seq.config.schema import Config
from seq2seq.errors import ConfigError


def parse_yaml(text: str, source: str, *, key: str = "") -> Any:
    """YAML `text` read safely. A syntax error or a repeated key is a one-line ConfigError: for a
    file (`source`) with its line and column, for a --set value with its `key`; a repeated key
    also names its dotted path."""
    def where(mark) -> str:
        if key:
            return f"{key}: value {text!r}"
        return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source

    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_EXPANDED_VALUES:
            raise ConfigError(f"{where(node.start_mark)}: its anchors and aliases expand to more than "
                              f"{MAX_EXPANDED_VALUES:,} values; a config needs far fewer (write the values out)")
        duplicate = _first_duplicate(node, key, set())
        if duplicate is not None:
            path, mark, first_line = duplicate
            raise ConfigError(f"{where(mark)}: {path}: duplicate key (first at line {first_line})")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(str(e.problem or e.context or type(e).__name__).split())
        raise ConfigError(f"{where(mark)}: not valid YAML ({problem})") from None
    except yaml.reader.ReaderError as e:
        raise ConfigError(f"{where(None)}: not valid YAML (character #x{e.character:04x} at position "
                          f"{e.position} is not allowed)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where(None)}: not valid YAML ({' '.join(str(e).split())})") from None
    finally:
        if loader is not None:
            loader.dispose()


# A config has a few hundred values. Aliases repeat a node without copying it, so a 1 KB file
# can stand for billions of values ("billion laughs"); whatever walks the expanded config would
# never end. Counted once per node, the expanded size costs one pass over the file.
MAX_EXPANDED_VALUES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is expanded (each node counted once)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_EXPANDED_VALUES + 1  # a node inside itself (a recursive alias) is too big
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_EXPANDED_VALUES + 1)
    return sizes[id(node)]


def _first_duplicate(node: yaml.Node, path: str, seen: set[int]) -> tuple[str, Any, int] | None:
    """The first key given twice in one mapping (YAML would silently keep the last): its dotted
    path, its position and the line of its first occurrence. An aliased node is walked once."""
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            key_path = f"{path}.{name}" if path else name
            if isinstance(key, yaml.ScalarNode) and name in first:
                return key_path, key.start_mark, first[name]
            first[name] = key.start_mark.line + 1
            found = _first_duplicate(value, key_path, seen)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _first_duplicate(item, f"{path}[{i}]", seen)
            if found is not None:
                return found
    return None


def read_yaml(path: str | Path) -> dict:
    """The mapping of sections in the YAML file `path` ({} for an empty file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw



def to_dict(cfg: Any) -> dict:
    """A config (or one of its sections) as plain nested dicts and lists."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    """A resolved config as YAML, keys in schema order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def defaults_yaml() -> str:
    """The full default config as YAML with each key's help as a comment (the config reference)."""
    lines: list[str] = []

    def walk(cls: type, indent: str) -> None:
        hints = typing.get_type_hints(cls)
        instance = cls()
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                lines.append(f"{indent}{f.name}:")
                walk(tp, indent + "  ")
                continue
            # asdict: a list of sections (data.train) is written as mappings
            value = yaml.safe_dump(dataclasses.asdict(instance)[f.name], default_flow_style=True).strip()
            value = value.removesuffix("\n...").removesuffix("...").strip()
            comment = f.metadata.get("help", "")
            if typing.get_origin(tp) is Literal:
                comment += f" [{' | '.join(str(a) for a in typing.get_args(tp))}]"
            lines.append(f"{indent}{f.name}: {value}  # {comment}")

    walk(Config, "")
    return "\n".join(lines) + "\n"
