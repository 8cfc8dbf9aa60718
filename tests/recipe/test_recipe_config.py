"""Recipe files: the real recipes load stage by stage, the runner wires stages together as
documented, and a broken stage config stops the recipe before anything runs or is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tower_megatron.config import JobConfig, load_config
from tower_megatron.config.preprocess import PreprocessConfig
from tower_megatron.eval.config import EvalConfig
from tower_megatron.recipe.config import load_recipe, plan_stages

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "configs" / "recipes"
SCHEMAS = {"train": JobConfig, "preprocess": PreprocessConfig, "eval": EvalConfig}


@pytest.mark.parametrize("name", ["tower-plus-2b", "tower-plus-9b", "tower-plus-72b", "tiny-cpu"])
def test_recipes_load_every_stage(name):
    """Structure (CPT → SFT → WPO → GRPO, each from the previous one's checkpoint) and every stage
    config loads with the runner's overrides (no data needed: file checks run at stage start)."""
    path = RECIPES / f"{name}.yaml"
    recipe = load_recipe(path, [])
    planned = plan_stages(recipe, path)
    trains = [p for p in planned if p.spec.kind == "train"]
    jobs = {}
    for p in planned:
        loaded = load_config(SCHEMAS[p.spec.kind], p.config_path, p.overrides)
        if p.spec.kind == "train":
            jobs[p.spec.name] = loaded
        if p.eval_overrides is not None:
            load_config(EvalConfig, RECIPES / recipe.eval.config, p.eval_overrides)
    assert [jobs[p.spec.name].train.stage for p in trains] == ["cpt", "sft", "wpo", "grpo"]
    root = Path(recipe.output_dir) / recipe.name
    for prev, cur in zip(trains, trains[1:], strict=False):
        job = jobs[cur.spec.name]
        assert job.checkpoint.load == str(root / prev.spec.name / "checkpoints")
        assert job.checkpoint.load_optimizer is False
    for p in trains:
        job = jobs[p.spec.name]
        assert (job.run.output_dir, job.run.name, job.checkpoint.resume) == (str(root), p.spec.name, True)
        par = job.parallel
        model_parallel = par.tensor_model_parallel_size * par.pipeline_model_parallel_size
        assert (recipe.launch.nproc_per_node * recipe.launch.nnodes) % model_parallel == 0, p.spec.name
    if name != "tiny-cpu":  # the real recipes start CPT from the converted HF base model
        assert jobs[trains[0].spec.name].checkpoint.load and jobs[trains[0].spec.name].model.preset


def _broken_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(
        f"name: broken\noutput_dir: {tmp_path / 'runs'}\n"
        "stages:\n"
        f"  - {{name: data-sft, kind: preprocess, config: {ROOT / 'configs/data/demo_sft.yaml'}}}\n"
        f"  - {{name: cpt, config: {ROOT / 'configs/cpt_tiny_cpu.yaml'}}}\n"
        f"  - {{name: sft, config: {ROOT / 'configs/sft/tiny_cpu.yaml'}}}\n"
        f"  - name: wpo\n    config: {tmp_path / 'wpo.yaml'}\n",
        encoding="utf-8",
    )
    (tmp_path / "wpo.yaml").write_text(
        f"defaults: [{ROOT / 'configs/dpo/wpo_tiny_cpu.yaml'}]\ndpo:\n  ref_policy_kl_penalt: 0.1\n",
        encoding="utf-8",
    )
    return recipe


def test_broken_stage_config_fails_before_anything_runs(tmp_path):
    recipe = _broken_recipe(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "tower_megatron", "recipe", str(recipe)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error == (
        f"tower-megatron recipe: config error: recipe {recipe}: stage 'wpo' (train, {tmp_path / 'wpo.yaml'}): "
        f"unknown config key 'dpo.ref_policy_kl_penalt' ({tmp_path / 'wpo.yaml'}, line 3). "
        "Did you mean 'dpo.ref_policy_kl_penalty'?"
    )
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outputs").exists()


def test_semantic_error_in_a_later_stage_names_the_stage(tmp_path):
    """Not only unknown keys: the train verb's own checks run on every stage up front."""
    recipe = _broken_recipe(tmp_path)
    (tmp_path / "wpo.yaml").write_text(
        f"defaults: [{ROOT / 'configs/dpo/wpo_tiny_cpu.yaml'}]\ndpo:\n  ref_policy_kl_penalty: -1.0\n",
        encoding="utf-8",
    )
    from tower_megatron.config.loader import ConfigError
    from tower_megatron.recipe.runner import recipe_main

    with pytest.raises(ConfigError) as err:
        recipe_main(str(recipe), [])
    assert str(err.value) == (
        f"recipe {recipe}: stage 'wpo' (train, {tmp_path / 'wpo.yaml'}): "
        "dpo.ref_policy_kl_penalty=-1.0 must be > 0 (it is beta)"
    )
    assert not (tmp_path / "runs").exists()


def test_unknown_stage_in_stage_overrides_lists_the_stages(tmp_path):
    from tower_megatron.config.loader import ConfigError

    with pytest.raises(ConfigError, match=r"stage_overrides: no stage named spt \(stages: "):
        load_recipe(RECIPES / "tiny-cpu.yaml", ["stage_overrides.spt=[train.train_steps=2]"])


def test_refuses_to_start_under_torchrun(monkeypatch):
    """Every rank would start its own stages: the recipe is one process per node instead."""
    from tower_megatron.config.loader import ConfigError
    from tower_megatron.recipe.runner import recipe_main

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"runs as one process per node .* do not start it under torchrun"):
        recipe_main(str(RECIPES / "tiny-cpu.yaml"), [])


def test_curves_keep_the_last_value_of_a_step_logged_twice(tmp_path):
    """After a kill and resume, metrics.jsonl holds the steps after the checkpoint twice (and maybe
    a line cut by kill -9): the plots use the resumed run's values."""
    from tower_megatron.recipe.summary import curve, read_metrics

    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "train/loss": 3.0}\n{"step": 2, "train/loss": 2.5}\n{"step": 3, "train/loss": 2.4}\n'
        '{"step": 3, "train/lo\n{"step": 3, "train/loss": 2.25}\n{"step": 4, "train/loss": 2.0}\n',
        encoding="utf-8",
    )
    assert curve(read_metrics(tmp_path), "train/loss") == [(1, 3.0), (2, 2.5), (3, 2.25), (4, 2.0)]
