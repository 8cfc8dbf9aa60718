"""YAML + ``key=value`` overrides → a typed dataclass, with errors that point at the culprit.

OmegaConf does the merging and type conversion (NeMo-style dotlists, ``${...}`` interpolation);
this module turns its exceptions into one :class:`ConfigError` that names the key, the file and
line (or the override) it came from, and the closest valid key for a typo.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot run. Raised before any process group or file is created."""


_LIST_INDEX = re.compile(r"\[\d+\]")


def _list_item_type(schema: type, name: str) -> type | None:
    """``SourceConfig`` for a field ``sources: list[SourceConfig]``, else None."""
    try:
        hint = typing.get_type_hints(schema).get(name)
    except (NameError, TypeError):
        return None
    args = typing.get_args(hint) if typing.get_origin(hint) is list else ()
    return args[0] if args and dataclasses.is_dataclass(args[0]) else None


def schema_keys(schema: type) -> list[str]:
    """All dotted keys of a dataclass schema (nested dataclasses flattened; the fields of a list
    of dataclasses as ``sources[].name``)."""
    keys: list[str] = []
    for f in dataclasses.fields(schema):
        keys.append(f.name)
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(sub):
            keys.extend(f"{f.name}.{k}" for k in schema_keys(type(sub)))
        item = _list_item_type(schema, f.name)
        if item is not None:
            keys.extend(f"{f.name}[].{k}" for k in schema_keys(item))
    return keys


# Names users bring from Megatron-LM / NeMo / HF for keys we spell otherwise; spelling alone would
# not find them ("learning_rate" is closer to "min_lr" than to "lr").
ALIASES = {
    "learning_rate": "lr",
    "max_steps": "train_steps",
    "train_iters": "train_steps",
    "max_lr": "lr",
    "lr_warmup_iters": "warmup_steps",
    "lr_warmup_steps": "warmup_steps",
    "lr_decay_style": "decay_style",
    "lr_decay_iters": "decay_steps",
    "tp": "tensor_model_parallel_size",
    "tensor_parallel_size": "tensor_model_parallel_size",
    "pp": "pipeline_model_parallel_size",
    "pipeline_parallel_size": "pipeline_model_parallel_size",
    "seq_len": "seq_length",
    "encoder_seq_length": "seq_length",
    "micro_batch": "micro_batch_size",
    "global_batch": "global_batch_size",
    "data_path": "paths",
    "tokenizer_model": "path",
    "save_interval_steps": "save_interval",
    # TRL / paper names for the alignment sections (NeMo-Aligner's and NeMo-RL's are the keys)
    "beta": "ref_policy_kl_penalty",
    "loss_type": "preference_loss",
    "use_weighting": "preference_loss",
    "rpo_alpha": "sft_loss_weight",
    "num_generations": "num_generations_per_prompt",
    "kl_coef": "reference_policy_kl_penalty",
    "epsilon": "ratio_clip_min",
    "num_iterations": "updates_per_rollout",
    "max_completion_length": "max_new_tokens",
}


def closest_key(key: str, schema: type) -> str | None:
    """The valid key a typo most likely meant (never ``key`` itself), list indices kept:
    ``sources[0].file`` → ``sources[0].files``."""
    indices = iter(_LIST_INDEX.findall(key))
    hint = _closest_key(_LIST_INDEX.sub("[]", key), schema)
    if hint is not None:
        hint = re.sub(r"\[\]", lambda _: next(indices, "[0]"), hint)
    return None if hint == key else hint


def _closest_key(key: str, schema: type) -> str | None:
    """A known alias, same section first, then anywhere."""
    keys = schema_keys(schema)
    parent, _, leaf = key.rpartition(".")
    alias = ALIASES.get(leaf)
    if alias:
        hits = [k for k in keys if k.rpartition(".")[2] == alias]
        same_section = [k for k in hits if k.rpartition(".")[0] == parent]
        if same_section or hits:
            return (same_section or hits)[0]
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
        name, *indices = part.replace("]", "").split("[")
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if key_node.value == name:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            return line
        for index in indices:  # sources[0]: the list item's line
            if not isinstance(node, yaml.SequenceNode) or int(index) >= len(node.value):
                return line
            node = node.value[int(index)]
            line = node.start_mark.line + 1
    return line


def _origin(source: str, key: str) -> str:
    if source.startswith("override "):
        return source
    line = yaml_line(source, key) if key else None
    return f"{source}, line {line}" if line else source


def _section_replaced(base: Any, layer: Any, prefix: str = "") -> str | None:
    """The dotted key where ``layer`` puts a plain value over a whole section (``train: 5``):
    OmegaConf reports that merge error without naming any key."""
    if not isinstance(base, DictConfig) or not isinstance(layer, DictConfig):
        return None
    for key in layer:
        if key not in base:
            continue
        sub_base, sub_layer = base._get_node(key), layer._get_node(key)
        if isinstance(sub_base, DictConfig) and not isinstance(sub_layer, DictConfig):
            return f"{prefix}{key}"
        found = _section_replaced(sub_base, sub_layer, f"{prefix}{key}.")
        if found:
            return found
    return None


def _translate(exc: OmegaConfBaseException, schema: type, source: str, key: str = "") -> ConfigError:
    key = getattr(exc, "full_key", "") or key
    where = _origin(source, key)
    if not key:
        return ConfigError(f"invalid config ({where}): {str(exc).splitlines()[0]}")
    if isinstance(exc, ConfigKeyError) or "not in struct" in str(exc) or "Key '" in str(exc):
        hint = closest_key(key, schema)
        did_you_mean = f" Did you mean '{hint}'?" if hint else ""
        return ConfigError(f"unknown config key '{key}' ({where}).{did_you_mean}")
    msg = str(exc).splitlines()[0]
    if "is not a ListConfig" in msg:
        msg = f"expected a list, e.g. {key}=[a,b] on the command line or a YAML sequence"
    elif "is not a subclass of" in msg:
        msg = f"'{key}' is a section: set its fields (e.g. {key}.<field>=value), not the section itself"
    if isinstance(exc, ValidationError):
        return ConfigError(f"bad value for '{key}' ({where}): {msg}")
    return ConfigError(f"invalid value for '{key}' ({where}): {msg}")


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, _, _ = item.partition("=")
    key = key.strip().lstrip("+")
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        return key, OmegaConf.from_dotlist([item.lstrip("+")])
    except (OmegaConfBaseException, yaml.YAMLError) as exc:  # e.g. an unclosed bracket
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"cannot parse override {item!r}: {problem}") from None


def _in_list_item(layer: Any, leaf: str, prefix: str = "") -> str | None:
    """``sources[0].file`` for an unknown ``file`` inside a list item of ``layer``: OmegaConf
    names such keys relative to the item, which would lose the list and its index."""
    if OmegaConf.is_dict(layer):
        for key in layer:
            found = _in_list_item(layer._get_node(key), leaf, f"{prefix}.{key}" if prefix else str(key))
            if found:
                return found
    elif OmegaConf.is_list(layer):
        for i in range(len(layer)):
            item = layer._get_node(i)
            if OmegaConf.is_dict(item) and leaf in item:
                return f"{prefix}[{i}].{leaf}"
            found = _in_list_item(item, leaf, f"{prefix}[{i}]")
            if found:
                return found
    return None


def _merge(base: DictConfig, layer: Any, schema: type, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = _section_replaced(base, layer) or ""
        leaf = getattr(exc, "full_key", "") or ""
        if leaf and "." not in leaf and leaf not in base:
            key = _in_list_item(layer, leaf) or key
            if key:
                exc.full_key = key  # type: ignore[attr-defined]
        raise _translate(exc, schema, source, key) from None
    except TypeError as exc:  # OmegaConf's "Cannot merge incompatible container types"
        raise ConfigError(
            f"invalid config ({_origin(source, '')}): {exc}; set a list as a whole (key=[a,b]) "
            "and a section by its fields (section.field=value)"
        ) from None


def load_yaml(path: str | Path) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the config as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        raise ConfigError(f"cannot parse YAML ({where}): {getattr(exc, 'problem', exc)}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level of a config must be a mapping")
    return loaded


INCLUDE_KEY = "defaults"


def _merge_file(merged: DictConfig, path: Path, schema: type, seen: tuple[Path, ...] = ()) -> DictConfig:
    """Merges ``path`` into ``merged``, after the files its ``defaults:`` list names.

    ``defaults: [data/demo_mixture.yaml]`` (paths relative to the including file) composes a
    recipe from shared parts, as Hydra's defaults list does; the including file wins.
    """
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(f"{path}: '{INCLUDE_KEY}' includes itself via {' -> '.join(map(str, seen))}")
    layer = load_yaml(path)
    includes = layer.pop(INCLUDE_KEY, None) if INCLUDE_KEY in layer else None
    if includes is not None:
        if isinstance(includes, str):
            includes = [includes]
        if not OmegaConf.is_list(includes) and not isinstance(includes, list):
            raise ConfigError(
                f"{path}, line {yaml_line(path, INCLUDE_KEY)}: '{INCLUDE_KEY}' must be a list of YAML paths"
            )
        for item in includes:
            included = Path(str(item))
            if not included.is_absolute():
                included = path.parent / included
            if not included.is_file():
                raise ConfigError(
                    f"{path}, line {yaml_line(path, INCLUDE_KEY)}: included file not found: {included}"
                )
            merged = _merge_file(merged, included, schema, (*seen, resolved))
    return _merge(merged, layer, schema, str(path))


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Schema defaults ← included YAML files ← YAML file ← overrides, checked for unknown keys
    and wrong types."""
    merged = OmegaConf.structured(schema)
    if path is not None:
        merged = _merge_file(merged, Path(path), schema)
    origins: dict[str, str] = {}  # key -> the last override that set it
    for item in overrides:
        key, layer = _parse_override(item)
        merged = _merge(merged, layer, schema, f"override '{item}'")
        origins[key] = f"override '{item}'"
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        # Interpolations resolve only here; point at whichever layer set the failing key.
        key = getattr(exc, "full_key", "") or ""
        source = origins.get(key) or (str(path) if path else "config")
        raise _translate(exc, schema, source) from None


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (saved in every run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
