"""YAML + ``key=value`` overrides → a typed dataclass, with errors that point at the culprit.

OmegaConf does the merging and type conversion (NeMo-style dotlists, ``${...}`` interpolation);
this module turns its exceptions into one :class:`ConfigError` that names the key, the file and
line (or the override) it came from, and the closest valid key for a typo.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot run. Raised before any process group or file is created."""


def schema_keys(schema: type) -> list[str]:
    """All dotted keys of a dataclass schema (nested dataclasses flattened)."""
    keys: list[str] = []
    for f in dataclasses.fields(schema):
        keys.append(f.name)
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(sub):
            keys.extend(f"{f.name}.{k}" for k in schema_keys(type(sub)))
    return keys


def closest_key(key: str, schema: type) -> str | None:
    """The valid key a typo most likely meant: same section first, then anywhere."""
    keys = schema_keys(schema)
    parent, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    for pool, probe in ((siblings, key), (keys, key), (keys, leaf)):
        if not pool:
            continue
        names = pool if probe == key else [k.rpartition(".")[2] for k in pool]
        match = difflib.get_close_matches(probe, names, n=1, cutoff=0.6)
        if match:
            return (
                match[0]
                if probe == key
                else next(k for k in pool if k.endswith("." + match[0]) or k == match[0])
            )
    return None


def yaml_line(path: str | Path, dotted_key: str) -> int | None:
    """1-based line of ``dotted_key`` in a YAML file, or None."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in dotted_key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if key_node.value == part:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            return line
    return line


def _origin(source: str, key: str) -> str:
    if source.startswith("override "):
        return source
    line = yaml_line(source, key) if key else None
    return f"{source}, line {line}" if line else source


def _translate(exc: OmegaConfBaseException, schema: type, source: str) -> ConfigError:
    key = getattr(exc, "full_key", "") or ""
    where = _origin(source, key)
    if isinstance(exc, ConfigKeyError) or "not in struct" in str(exc) or "Key '" in str(exc):
        hint = closest_key(key, schema)
        did_you_mean = f" Did you mean '{hint}'?" if hint else ""
        return ConfigError(f"unknown config key '{key}' ({where}).{did_you_mean}")
    if isinstance(exc, ValidationError):
        msg = str(exc).splitlines()[0]
        return ConfigError(f"bad value for '{key}' ({where}): {msg}")
    return ConfigError(f"invalid config ({where}): {str(exc).splitlines()[0]}")


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, _, _ = item.partition("=")
    key = key.strip().lstrip("+")
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    return key, OmegaConf.from_dotlist([item.lstrip("+")])


def _merge(base: DictConfig, layer: Any, schema: type, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _translate(exc, schema, source) from None


def load_yaml(path: str | Path) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        raise ConfigError(f"cannot parse YAML ({where}): {getattr(exc, 'problem', exc)}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level of a config must be a mapping")
    return loaded


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Schema defaults ← YAML file ← overrides, checked for unknown keys and wrong types."""
    merged = OmegaConf.structured(schema)
    if path is not None:
        merged = _merge(merged, load_yaml(path), schema, str(path))
    for item in overrides:
        key, layer = _parse_override(item)
        merged = _merge(merged, layer, schema, f"override '{item}'")
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _translate(exc, schema, str(path) if path else "config") from None


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (saved in every run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
