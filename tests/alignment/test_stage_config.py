"""Alignment config: names users bring from TRL get a pointer to ours, each stage's own checks
run before anything starts, and a bad one is one line through the CLI (exit 2)."""

from __future__ import annotations

import pytest

from tower_megatron.cli import main
from tower_megatron.config.loader import ConfigError
from tower_megatron.testing.tiny import build_tiny_assets


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage_config")
    assets = build_tiny_assets(root / "assets")
    return [
        f"run.output_dir={root}",
        "run.device=cpu",
        "model.num_layers=2",
        "model.hidden_size=64",
        "model.num_attention_heads=4",
        f"data.tokenizer.path={assets.tokenizer}",
        f"data.paths=[{','.join(assets.prefixes.values())}]",
    ]


def _error(overrides: list[str]) -> str:
    from tower_megatron.training.entry import load_job

    with pytest.raises(ConfigError) as info:
        load_job(None, overrides)
    return str(info.value)


@pytest.mark.parametrize(
    "key,suggestion",
    [
        ("dpo.beta=0.1", "dpo.ref_policy_kl_penalty"),
        ("dpo.loss_type=ipo", "dpo.preference_loss"),
        ("grpo.num_generations=8", "grpo.num_generations_per_prompt"),
        ("loss_fn.kl_coef=0.01", "loss_fn.reference_policy_kl_penalty"),
        ("grpo.num_iterations=2", "grpo.updates_per_rollout"),
    ],
)
def test_trl_names_point_to_ours(base, key, suggestion):
    message = _error([*base, key])
    assert f"Did you mean '{suggestion}'" in message, message


def test_unknown_preference_loss_lists_known(base):
    message = _error([*base, "train.stage=dpo", "dpo.preference_loss=rpo_sq"])
    assert "dpo.preference_loss: unknown preference loss 'rpo_sq'" in message
    assert "Known: dpo, ipo, sigmoid, wpo" in message


def test_reference_model_mode_refuses_pipeline_parallelism(base):
    message = _error([*base, "train.stage=wpo", "dpo.reference=model", "parallel.pipeline_model_parallel_size=2"])
    assert "dpo.reference=model" in message and "use dpo.reference=precompute with PP > 1" in message


def test_grpo_batch_must_be_one_rollout(base, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "2+2?", "reward": {"type": "math", "answer": "4"}}\n')
    message = _error(
        [*base, "train.stage=grpo", f"grpo.prompts=[{prompts}]", "grpo.num_prompts_per_step=2",
         "grpo.num_generations_per_prompt=4", "train.global_batch_size=6"]
    )
    assert "train.global_batch_size=6 must equal grpo.num_prompts_per_step × num_generations_per_prompt = 8" in message


def test_grpo_bad_prompt_record_names_file_line_field(base, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"prompt": "2+2?", "reward": {"type": "math", "answer": "4"}}\n'
        '{"prompt": "3+3?", "reward": {"type": "math", "answr": "6"}}\n'
    )
    config = tmp_path / "job.yaml"
    config.write_text("{}\n")
    code = main(["train", str(config), *base, "train.stage=grpo", f"grpo.prompts=[{prompts}]",
                 "grpo.num_prompts_per_step=2", "grpo.num_generations_per_prompt=4", "train.global_batch_size=8"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert f"{prompts}:2: reward.answer: required field missing" in err
