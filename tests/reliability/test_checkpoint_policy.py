"""Resuming, restarting and pruning (issue 14 item 3).

* A fresh start (``checkpoint.resume=false``) over another run's checkpoints is refused before
  anything is written, and pruning never removes a checkpoint newer than the one just saved.
* A resume with a changed schedule or optimizer follows the config from the resumed step on: a
  run trained 4 steps, then resumed with ``train.train_steps`` doubled and a new ``optimizer.lr``
  and Adam betas, logs at steps 5–8 exactly the learning rates of a fresh 8-step run with those
  values (Megatron's scheduler computes both; only the step count comes from the checkpoint).
* A resume with another model shape is refused by validation and leaves the run's
  ``config.yaml`` as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tower_megatron.config import ConfigError
from tower_megatron.testing import run_distributed
from tower_megatron.testing.processes import tmpfs

COMMON = ("data.split=98,2,0", "checkpoint.save_at_end=true", "scheduler.warmup_steps=2")
CHANGED = ("train.train_steps=8", "optimizer.lr=2e-3", "optimizer.adam_beta2=0.9")


def _fake_checkpoint(ckpt: Path, step: int) -> Path:
    path = ckpt / f"iter_{step:07d}"
    path.mkdir(parents=True)
    (path / "tower_meta.json").write_text(json.dumps({"train_state": {"step": step}}))
    return path


def test_fresh_start_over_another_runs_checkpoints_is_refused(tmp_path, monkeypatch):
    from tower_megatron.testing.tiny import build_tiny_assets
    from tower_megatron.training.entry import load_job

    assets = build_tiny_assets(tmp_path / "assets")
    run_dir = tmp_path / "runs" / "job"
    old = _fake_checkpoint(run_dir / "checkpoints", 12)
    (run_dir / "config.yaml").write_text("the earlier run's config\n")
    monkeypatch.setenv("WORLD_SIZE", "1")
    overrides = [
        f"run.output_dir={tmp_path / 'runs'}",
        "run.name=job",
        "run.device=cpu",
        f"data.tokenizer.path={assets.tokenizer}",
        f"data.paths=[{assets.prefixes['en']}]",
        "model.num_layers=2",
        "model.hidden_size=64",
        "model.num_attention_heads=4",
        "checkpoint.resume=false",
    ]
    with pytest.raises(ConfigError) as info:
        load_job(None, overrides)
    assert str(info.value).startswith(
        f"checkpoint.resume=false but {run_dir / 'checkpoints'} holds checkpoints of an earlier run (iter_0000012)"
    )
    assert (old / "tower_meta.json").is_file()
    assert (run_dir / "config.yaml").read_text() == "the earlier run's config\n"


def test_pruning_keeps_checkpoints_newer_than_the_save(tmp_path):
    from tower_megatron.training.checkpoint_policy import prunable
    from tower_megatron.training.checkpointing import checkpoint_step, complete_checkpoints

    ckpt = tmp_path / "checkpoints"
    for step in (2, 4, 6, 10, 12):
        _fake_checkpoint(ckpt, step)
    found = complete_checkpoints(ckpt)
    names = lambda paths: [p.name for p in paths]
    assert names(prunable(found, ckpt / "iter_0000006", 2, checkpoint_step)) == ["iter_0000002"]
    assert names(prunable(found, ckpt / "iter_0000012", 2, checkpoint_step)) == [
        "iter_0000002",
        "iter_0000004",
        "iter_0000006",
    ]
    assert prunable(found, ckpt / "iter_0000004", 1, checkpoint_step)[-1].name == "iter_0000002"
    assert prunable(found, ckpt / "iter_0000012", 0, checkpoint_step) == []


def _lrs(history: list[dict]) -> dict[int, float]:
    return {r["step"]: r["train/lr"] for r in history if "train/lr" in r}


def _resume_story(assets_dir: str, out: str) -> dict:
    import contextlib
    import io

    from tower_megatron.config.validate import validate_job
    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job
    from tower_megatron.training.entry import run_training

    assets = build_tiny_assets(assets_dir)
    first = run_training(tiny_job(assets, f"{out}/run", *COMMON, "train.train_steps=4"))
    job = tiny_job(assets, f"{out}/run", *COMMON, *CHANGED)
    validate_job(job, world_size=1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        resumed = run_training(job)
    fresh = run_training(tiny_job(assets, f"{out}/fresh", *COMMON, *CHANGED))
    bigger = tiny_job(assets, f"{out}/run", *COMMON, *CHANGED, "model.hidden_size=32")
    try:
        validate_job(bigger, world_size=1)
        refused = ""
    except ConfigError as exc:
        refused = str(exc)
    return {
        "first": _lrs(first["history"]),
        "resumed": _lrs(resumed["history"]),
        "fresh": _lrs(fresh["history"]),
        "printed": printed.getvalue(),
        "refused": refused,
    }


@pytest.mark.slow
def test_changed_schedule_and_optimizer_apply_from_the_resumed_step(tmp_path):
    (result,) = run_distributed(
        _resume_story, world_size=1, assets_dir=str(tmp_path / "assets"), out=str(tmp_path)
    )
    assert sorted(result["first"]) == [1, 2, 3, 4]
    assert sorted(result["resumed"]) == [5, 6, 7, 8]
    for step in (5, 6, 7, 8):
        assert result["resumed"][step] == result["fresh"][step], (step, result)
    assert result["first"][4] != result["fresh"][4]  # the change is visible, not a no-op
    notice = result["printed"]
    assert (
        "optimizer.lr: 0.001 -> 0.002" in notice
        and "optimizer.adam_beta1/2: (0.9, 0.95) -> (0.9, 0.9)" in notice
    )
    assert "decay steps (scheduler.decay_steps or train.train_steps): 4 -> 8" in notice
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "hidden_size=64 vs 32" in result["refused"] and "another model" in result["refused"]
    assert (tmp_path / "run" / "config.yaml").read_text() == config


def test_full_disk_during_a_save_is_one_line(tmp_path):
    """The run directory on a 600 KiB tmpfs: the first checkpoint does not fit (needs root to
    mount; skipped otherwise). torch reports it as "unexpected pos"; the CLI must say what it is."""
    import os
    import subprocess
    import sys

    from tower_megatron.config import to_yaml
    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

    with tmpfs(tmp_path / "small_fs", "600k") as mnt:
        job = tiny_job(build_tiny_assets(tmp_path / "assets"), mnt / "run", *COMMON, "train.train_steps=2",
                       f"data.cache_dir={tmp_path / 'cache'}")  # fmt: skip
        config = tmp_path / "job.yaml"
        config.write_text(to_yaml(job))
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "tower_megatron", "train", str(config)],
                              capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert (
            last.startswith("tower-megatron train: No space left on device") and str(mnt / "run") in last
        ), last
        assert "Traceback" not in proc.stderr
        assert not list((mnt / "run" / "checkpoints").glob("iter_*"))  # nothing half-written is complete
