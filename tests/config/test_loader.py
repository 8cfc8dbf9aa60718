"""The config loader's pieces: key suggestions, YAML line lookup, layering and YAML round trip."""

from __future__ import annotations

import pytest

from tower_megatron.config import ConfigError, JobConfig, load_config, to_yaml
from tower_megatron.config.loader import closest_key, schema_keys, yaml_line


def test_schema_keys_flatten_nested_sections():
    keys = schema_keys(JobConfig)
    assert {"train.train_steps", "logging.wandb.project", "model.fp8.recipe"} <= set(keys)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("train.train_stpes", "train.train_steps"),  # spelling, same section
        ("optimizer.learning_rate", "optimizer.lr"),  # a Megatron/HF name
        ("train.max_steps", "train.train_steps"),
        ("tp", "parallel.tensor_model_parallel_size"),  # an alias at the top level
        ("parallel.tensor_parallel_size", "parallel.tensor_model_parallel_size"),
        ("logging.wandb.projct", "logging.wandb.project"),
        ("optimiser", "optimizer"),
    ],
)
def test_closest_key(typo, meant):
    assert closest_key(typo, JobConfig) == meant


def test_closest_key_gives_up_on_nonsense():
    assert closest_key("zzzz.qqqq", JobConfig) is None


def test_yaml_line_finds_nested_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# header\nrun:\n  name: x\nlogging:\n  wandb:\n    project: p\n")
    assert yaml_line(path, "run.name") == 3
    assert yaml_line(path, "logging.wandb.project") == 6
    assert yaml_line(path, "logging.wandb.entity") == 5  # missing leaf: its section's line


def test_overrides_win_over_yaml_and_yaml_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  train_steps: 7\n  seq_length: 32\n")
    job = load_config(JobConfig, path, ["train.seq_length=16", "+run.name=o"])
    assert (job.train.train_steps, job.train.seq_length, job.run.name) == (7, 16, "o")
    assert job.train.micro_batch_size == JobConfig().train.micro_batch_size


def test_interpolation_error_names_the_override():
    with pytest.raises(ConfigError, match=r"'run.name' \(override 'run.name=\$\{nope\}'\)"):
        load_config(JobConfig, None, ["run.name=${nope}"])


def test_to_yaml_round_trips(tmp_path):
    job = load_config(JobConfig, None, ["data.valid_paths.en=/x/en", "logging.wandb.tags=[a,b]"])
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(job))
    assert load_config(JobConfig, path) == job
