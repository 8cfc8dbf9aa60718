"""Typed configuration: dataclass schemas, YAML + ``key=value`` merging, validation."""

from tower_megatron.config.loader import ConfigError, load_config, to_yaml
from tower_megatron.config.schema import JobConfig

__all__ = ["ConfigError", "JobConfig", "load_config", "to_yaml"]
