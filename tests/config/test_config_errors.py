"""Bad configs fail before anything runs: one clear message naming the key (and the closest valid
key, the file and line, or the override), exit code 2 from the CLI, and no run directory.

Every case is the same valid base job with one thing wrong, checked through ``load_job`` (the
programmatic API) and through ``tower_megatron.cli.main`` (what ``tower-megatron train`` runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tower_megatron.cli import main
from tower_megatron.config import ConfigError
from tower_megatron.resources import DEMO_TOKENIZER
from tower_megatron.training.entry import load_job


@dataclass
class Case:
    overrides: list[str] = field(default_factory=list)
    expect: tuple[str, ...] = ()  # substrings of the one error message
    yaml_text: str | None = None  # replaces the base YAML file (then "line N" is checkable)
    world_size: int = 1


CASES: dict[str, Case] = {
    "unknown_key_yaml": Case(
        yaml_text="train:\n  seq_length: 64\n  train_stpes: 5\n",
        expect=("'train.train_stpes'", "line 3", "Did you mean 'train.train_steps'"),
    ),
    "unknown_nested_key_yaml": Case(
        yaml_text="# W&B\nlogging:\n  wandb:\n    projct: tower\n",
        expect=("'logging.wandb.projct'", "line 4", "Did you mean 'logging.wandb.project'"),
    ),
    "unknown_key_override": Case(
        ["optimizer.weight_decy=0.01"],
        ("'optimizer.weight_decy'", "override 'optimizer.weight_decy=0.01'", "'optimizer.weight_decay'"),
    ),
    "megatron_name_override": Case(["optimizer.learning_rate=1e-3"], ("Did you mean 'optimizer.lr'",)),
    "unknown_section": Case(["optimiser.lr=1e-3"], ("'optimiser'", "Did you mean 'optimizer'")),
    "wrong_type_override": Case(["train.train_steps=ten"], ("'train.train_steps'", "'ten'", "Integer")),
    "wrong_type_yaml": Case(
        yaml_text="run:\n  name: job\ntrain:\n  micro_batch_size: two\n",
        expect=("'train.micro_batch_size'", "line 4", "'two'"),
    ),
    "wrong_type_bool": Case(["parallel.sequence_parallel=maybe"], ("'parallel.sequence_parallel'", "bool")),
    "section_as_value": Case(["train=5"], ("'train' is a section",)),
    "list_expected": Case(["data.paths=corpus"], ("'data.paths'", "expected a list")),
    "world_not_divisible": Case(
        ["parallel.tensor_model_parallel_size=4"],
        ("world size 6", "parallel.tensor_model_parallel_size", "4×1×1"),
        world_size=6,
    ),
    "layers_not_divisible_by_pp": Case(
        ["parallel.pipeline_model_parallel_size=3", "model.num_layers=4"],
        ("model.num_layers=4", "parallel.pipeline_model_parallel_size=3"),
        world_size=3,
    ),
    "layers_not_divisible_by_pp_vpp": Case(
        [
            "parallel.pipeline_model_parallel_size=2",
            "parallel.virtual_pipeline_model_parallel_size=2",
            "model.num_layers=6",
        ],
        ("model.num_layers=6", "virtual_pipeline_model_parallel_size", "2×2"),
        world_size=2,
    ),
    "interleaved_microbatches": Case(
        [
            "parallel.pipeline_model_parallel_size=2",
            "parallel.virtual_pipeline_model_parallel_size=2",
            "model.num_layers=4",
            "train.global_batch_size=3",
        ],
        ("train.global_batch_size=3", "3 micro-batches", "parallel.pipeline_model_parallel_size=2"),
        world_size=2,
    ),
    "heads_not_divisible_by_tp": Case(
        ["parallel.tensor_model_parallel_size=3"],
        ("model.num_attention_heads=4", "parallel.tensor_model_parallel_size=3"),
        world_size=3,
    ),
    "global_batch_not_divisible": Case(
        ["train.micro_batch_size=2", "train.global_batch_size=6"],
        ("train.global_batch_size=6", "train.micro_batch_size", "2×2"),
        world_size=2,
    ),
    "unknown_stage": Case(
        ["train.stage=cptt"], ("train.stage", "'cptt'", "Did you mean 'cpt'", "Known: cpt")
    ),
    "unknown_arch": Case(["model.arch=llama"], ("model.arch", "'llama'", "Known:", "gemma2", "qwen2")),
    "unknown_preset": Case(["model.preset=gemma2-2bb"], ("model.preset", "'gemma2-2bb'", "gemma2-2b")),
    "bad_precision": Case(["train.precision=bf61"], ("train.precision='bf61'", "Did you mean 'bf16'")),
    "bad_decay_style": Case(
        ["scheduler.decay_style=cosin"], ("scheduler.decay_style", "Did you mean 'cosine'")
    ),
    "bad_wandb_mode": Case(["logging.wandb.mode=ofline"], ("logging.wandb.mode", "Did you mean 'offline'")),
    "fp8_on_cpu": Case(["model.fp8.format=hybrid"], ("model.fp8.format='hybrid'", "CPU")),
    "sequence_parallel_tp1": Case(
        ["parallel.sequence_parallel=true"], ("parallel.sequence_parallel", "tensor_model_parallel_size > 1")
    ),
    "missing_tokenizer": Case(
        ["data.tokenizer.path=/nonexistent/tok.model"], ("data.tokenizer.path", "/nonexistent")
    ),
    "missing_data": Case(["data.paths=[/nonexistent/en_text_document]"], ("data.paths", "/nonexistent")),
    "missing_valid_data": Case(
        ["data.valid_paths.en=/nonexistent/en"], ("data.valid_paths.en", "/nonexistent")
    ),
    "malformed_yaml": Case(
        yaml_text="run:\n  name: job\ntrain:\n  train_steps: 5\n   seq_length: 64\n",
        expect=("cannot parse YAML", "line 5"),
    ),
    "malformed_override": Case(["data.paths=[a,"], ("cannot parse override", "data.paths=[a,")),
    "override_without_equals": Case(["train.train_steps"], ("'train.train_steps'", "key=value")),
}


@pytest.fixture(scope="module")
def base_files(tmp_path_factory) -> dict[str, str]:
    """A valid job: the packaged demo tokenizer and (empty) token files, which is all that
    validation looks at."""
    root = tmp_path_factory.mktemp("cfg")
    for prefix in ("en_text_document", "pt_text_document"):
        for suffix in (".bin", ".idx"):
            (root / (prefix + suffix)).touch()
    base = {
        "run": {"name": "job", "device": "cpu"},
        "model": {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4},
        "train": {"train_steps": 5, "micro_batch_size": 1, "global_batch_size": 8, "precision": "fp32"},
        "data": {"tokenizer": {"path": DEMO_TOKENIZER}, "paths": [str(root / "en_text_document")]},
    }
    (root / "base.yaml").write_text(yaml.safe_dump(base))
    return {"root": str(root), "base": str(root / "base.yaml")}


def _config_file(case: Case, base_files: dict[str, str], tmp_path: Path) -> str:
    if case.yaml_text is None:
        return base_files["base"]
    path = tmp_path / "bad.yaml"
    path.write_text(case.yaml_text)
    return str(path)


def _overrides(case: Case, tmp_path: Path, base_files: dict[str, str]) -> list[str]:
    # The YAML-only cases still need the base's tokenizer and data to get past validation.
    fill = (
        []
        if case.yaml_text is None
        else [
            f"data.tokenizer.path={DEMO_TOKENIZER}",
            f"data.paths=[{base_files['root']}/en_text_document]",
            "run.device=cpu",
        ]
    )
    return [*fill, f"run.output_dir={tmp_path / 'runs'}", *case.overrides]


def test_base_config_is_valid(base_files, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    job = load_job(base_files["base"], [f"run.output_dir={tmp_path / 'runs'}"])
    assert job.train.train_steps == 5 and job.data.tokenizer.path == DEMO_TOKENIZER
    assert not (tmp_path / "runs").exists()


def test_every_case_is_a_distinct_kind(base_files, tmp_path, monkeypatch):
    """No two cases produce the same error message (each exercises its own check)."""
    messages = {}
    for name, case in CASES.items():
        monkeypatch.setenv("WORLD_SIZE", str(case.world_size))
        case_dir = tmp_path / name
        case_dir.mkdir()
        with pytest.raises(ConfigError) as info:
            load_job(_config_file(case, base_files, case_dir), _overrides(case, case_dir, base_files))
        messages[name] = str(info.value).replace(str(case_dir), "<tmp>")
    duplicates = {m for m in messages.values() if list(messages.values()).count(m) > 1}
    assert not duplicates, {n: m for n, m in messages.items() if m in duplicates}


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_job_rejects(name, base_files, tmp_path, monkeypatch):
    case = CASES[name]
    monkeypatch.setenv("WORLD_SIZE", str(case.world_size))
    with pytest.raises(ConfigError) as info:
        load_job(_config_file(case, base_files, tmp_path), _overrides(case, tmp_path, base_files))
    message = str(info.value)
    assert "\n" not in message, f"expected one error, got:\n{message}"
    for part in case.expect:
        assert part in message, f"{part!r} not in: {message}"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_rejects(name, base_files, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    monkeypatch.setenv("WORLD_SIZE", str(case.world_size))
    argv = ["train", _config_file(case, base_files, tmp_path), *_overrides(case, tmp_path, base_files)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tower-megatron train: config error:")]
    assert len(errors) == 1, err
    for part in case.expect:
        assert part in errors[0], f"{part!r} not in: {errors[0]}"
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_several_problems_are_reported_together(base_files, tmp_path, monkeypatch):
    """Fixing one problem should not reveal the next only on the following run."""
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError) as info:
        load_job(
            base_files["base"],
            [
                f"run.output_dir={tmp_path}/runs",
                "train.precision=fp64",
                "train.stage=sftt",
                "optimizer.lr=-1",
            ],
        )
    message = str(info.value)
    assert message.startswith("3 problems in the config:")
    assert all(k in message for k in ("train.precision", "train.stage", "optimizer.lr"))
