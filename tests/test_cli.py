"""The command line as users run it: the console script, ``python -m tower_megatron``, the train
verb in one process and under ``torchrun --nproc-per-node=2`` (TP=2), and the ``config.yaml``
each run saves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tower_megatron import __version__
from tower_megatron.config import JobConfig, load_config
from tower_megatron.runtime import free_port
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

PYTHON = sys.executable
STEPS = 3


def _env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)  # the child decides: a world of one, or torchrun's
    return env


def _run(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:  # show where it was, not just that it was slow
        tail = [(s or b"")[-3000:] for s in (exc.stdout, exc.stderr)]
        pytest.fail(
            f"{' '.join(args[:6])} ... ran over {timeout:.0f}s\nstdout: {tail[0]!r}\nstderr: {tail[1]!r}"
        )


def test_console_script_help():
    script = shutil.which("tower-megatron", path=str(Path(PYTHON).parent)) or shutil.which("tower-megatron")
    if script is None:
        pytest.skip("tower-megatron console script not installed (pip install -e .)")
    result = _run([script, "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage: tower-megatron" in result.stdout
    assert "train" in result.stdout


def test_module_version_and_train_help():
    result = _run([PYTHON, "-m", "tower_megatron", "--version"])
    assert result.returncode == 0 and result.stdout.strip() == f"tower-megatron {__version__}"
    result = _run([PYTHON, "-m", "tower_megatron", "train", "--help"])
    assert result.returncode == 0 and "key=value" in result.stdout


def test_no_verb_prints_help_and_fails():
    result = _run([PYTHON, "-m", "tower_megatron"])
    assert result.returncode == 2 and "usage:" in result.stdout


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> tuple[Path, Path]:
    """A small CPU recipe YAML (as a user would write one) and the directory runs go to."""
    root = tmp_path_factory.mktemp("cli")
    assets = build_tiny_assets(root / "assets")
    config = {
        "run": {"name": "cli", "output_dir": str(root / "runs"), "device": "cpu"},
        "model": {
            "num_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "max_position_embeddings": 256,
        },
        "train": {
            "train_steps": STEPS,
            "micro_batch_size": 2,
            "global_batch_size": 8,
            "seq_length": 64,
            "precision": "fp32",
        },
        "optimizer": {"lr": 1.0e-3, "min_lr": 1.0e-4},
        "data": {"tokenizer": {"path": assets.tokenizer}, "paths": list(assets.prefixes.values())},
        "logging": {"progress_bar": False, "tensorboard": False},
        "checkpoint": {"save_at_end": False},
    }
    path = root / "tiny_cpu.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, root / "runs"


def _losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, STEPS + 1))
    return [r["train/loss"] for r in records if "train/loss" in r]


@pytest.fixture(scope="module")
def single(recipe) -> Path:
    config, runs = recipe
    result = _run([PYTHON, "-m", "tower_megatron", "train", str(config), "run.name=single"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"step {STEPS} | loss" in result.stdout
    return runs / "single"


def _in_process_losses(config: str, out_dir: str) -> list[float]:
    from tower_megatron.training.entry import run_training

    job = load_config(JobConfig, config, ["run.name=in_process", f"run.output_dir={out_dir}"])
    return [r["train/loss"] for r in run_training(job)["history"] if "train/loss" in r]


def test_train_one_process(recipe, single, tmp_path):
    """The CLI trains exactly what the programmatic entry point trains from the same recipe."""
    from tower_megatron.testing import run_distributed

    config, _ = recipe
    [want] = run_distributed(_in_process_losses, world_size=1, config=str(config), out_dir=str(tmp_path))
    assert len(want) == STEPS
    assert _losses(single) == pytest.approx(want, rel=1e-6)


def test_train_under_torchrun_tp2(recipe, single):
    config, runs = recipe
    result = _run(
        [
            PYTHON,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node=2",
            "--master-addr=127.0.0.1",
            f"--master-port={free_port()}",  # parallel test sessions must not collide
            "-m",
            "tower_megatron",
            "train",
            str(config),
            "run.name=tp2",
            "parallel.tensor_model_parallel_size=2",
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Same seed, data and layout-invariant init: TP=2 trains the single-process model.
    assert _losses(runs / "tp2") == pytest.approx(_losses(single), rel=1e-5)
    saved = load_config(JobConfig, runs / "tp2" / "config.yaml")
    assert saved.parallel.tensor_model_parallel_size == 2


def test_saved_config_round_trips(recipe, single):
    config, _ = recipe
    saved = load_config(JobConfig, single / "config.yaml")
    assert saved == load_config(JobConfig, config, ["run.name=single"])
    # And a saved config is itself a runnable recipe: saving it again changes nothing.
    from tower_megatron.config import to_yaml

    assert to_yaml(saved) == (single / "config.yaml").read_text()


def test_tiny_job_round_trips(tmp_path):
    """The programmatic path (tests, notebooks) saves the same YAML the CLI reads."""
    from tower_megatron.config import to_yaml
    from tower_megatron.testing.tiny import TinyAssets

    job = tiny_job(TinyAssets("tok.model", {"en": "en_doc"}), tmp_path / "run", "train.train_steps=7")
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(job))
    assert load_config(JobConfig, path) == job
