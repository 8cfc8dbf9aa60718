"""GRPO end to end on a toy verifiable task, and its first update under TP=2 / PP=2.

The toy task: IFEval's ``keywords:letter_frequency`` ("use the letter e at least once"), scored by
the real lm-eval checker through the reward pool. A random tiny model meets it about a third of
the time, so groups have reward variance from the start and GRPO has a signal to follow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

WORDS = ["apple", "river", "green", "house", "music", "table", "stone", "cloud"]


def _prompts(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for word in WORDS:
            reward = {
                "type": "ifeval",
                "instruction_id_list": ["keywords:letter_frequency"],
                "kwargs": [{"letter": "e", "let_frequency": 1, "let_relation": "at least"}],
                "check_language": False,
            }
            handle.write(json.dumps({"prompt": f"Write about a {word}.", "reward": reward}) + "\n")
    return path


def _job(assets_dir: str, run_dir: str, prompts: str, *overrides: str):
    assets = build_tiny_assets(assets_dir)
    return tiny_job(
        assets,
        run_dir,
        "train.stage=grpo",
        f"grpo.prompts=[{prompts}]",
        "grpo.num_prompts_per_step=4",
        "grpo.num_generations_per_prompt=8",
        "train.global_batch_size=32",
        "train.micro_batch_size=8",
        "train.seq_length=48",
        "grpo.max_new_tokens=16",
        "grpo.reward_workers=1",
        "grpo.sample_log_interval=5",
        "optimizer.lr=3e-3",
        "optimizer.min_lr=3e-3",
        "scheduler.warmup_steps=0",
        "scheduler.decay_style=constant",
        *overrides,
    )


def _train(assets_dir: str, run_dir: str, prompts: str, overrides: list[str]) -> list[dict]:
    from tower_megatron.training.entry import run_training

    return run_training(_job(assets_dir, run_dir, prompts, *overrides))["history"]


@pytest.mark.slow
def test_grpo_raises_reward_on_toy_task(tmp_path):
    prompts = str(_prompts(tmp_path / "prompts.jsonl"))
    [history] = run_distributed(
        _train, world_size=1, assets_dir=str(tmp_path / "assets"), run_dir=str(tmp_path / "run"),
        prompts=prompts, overrides=["train.train_steps=12", "loss_fn.reference_policy_kl_penalty=0.0"],
    )
    rewards = [r["grpo/reward_mean"] for r in history if "grpo/reward_mean" in r]
    assert len(rewards) == 12
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last >= first + 0.25, rewards
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line)["grpo/reward_mean"] for line in lines if "grpo/reward_mean" in line]
    assert logged == pytest.approx(rewards)
    samples = (tmp_path / "run" / "samples" / "step_0000010.jsonl").read_text().splitlines()
    assert len(samples) == 32 and {"prompt", "response", "reward", "source"} <= set(json.loads(samples[0]))


FIRST_UPDATE = ["train.train_steps=1", "loss_fn.reference_policy_kl_penalty=0.05"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    prompts = str(_prompts(root / "prompts.jsonl"))
    [history] = run_distributed(
        _train, world_size=1, assets_dir=str(root / "assets"), run_dir=str(root / "single"),
        prompts=prompts, overrides=FIRST_UPDATE,
    )
    return root, prompts, history[-1]


@pytest.mark.parametrize(
    "layout",
    [["parallel.tensor_model_parallel_size=2"], ["parallel.pipeline_model_parallel_size=2"]],
    ids=["tp2", "pp2"],
)
def test_first_update_matches_single_process(single, layout):
    root, prompts, want = single
    name = layout[0].split(".")[1][:2]
    results = run_distributed(
        _train, world_size=2, assets_dir=str(root / "assets"), run_dir=str(root / name),
        prompts=prompts, overrides=[*FIRST_UPDATE, *layout],
    )
    got = results[0][-1]
    assert got["grpo/reward_mean"] == want["grpo/reward_mean"]
    assert got["grpo/response_length"] == want["grpo/response_length"]
    for key in ("train/loss", "train/kl", "train/grad_norm"):
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-7), key


def test_resume_continues_exactly(tmp_path):
    """4 steps in one go equal 2 steps, a stop, and 2 resumed steps: the prompt sampler position
    is in the checkpoint and each step's sampling seed derives from the step."""
    prompts = str(_prompts(tmp_path / "prompts.jsonl"))
    common = dict(assets_dir=str(tmp_path / "assets"), prompts=prompts)
    keys = ("train/loss", "train/grad_norm", "grpo/reward_mean", "grpo/response_length")
    [straight] = run_distributed(
        _train, world_size=1, run_dir=str(tmp_path / "straight"), overrides=["train.train_steps=4"], **common
    )
    run_distributed(
        _train, world_size=1, run_dir=str(tmp_path / "resumed"),
        overrides=["train.train_steps=2", "checkpoint.save_at_end=true"],
        **common,
    )
    [resumed] = run_distributed(
        _train, world_size=1, run_dir=str(tmp_path / "resumed"), overrides=["train.train_steps=4"], **common
    )
    want = [{k: r[k] for k in keys} for r in straight if "grpo/reward_mean" in r][2:]
    got = [{k: r[k] for k in keys} for r in resumed if "grpo/reward_mean" in r]
    assert got == want
