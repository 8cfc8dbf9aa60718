"""Golden loss curve of the tiny CPU recipe: a Megatron-Core or torch upgrade (or a change of
ours) that moves the numerics shows up here, not weeks later in a real run.

The recipe is ``configs/cpt_tiny_cpu.yaml`` as shipped (model, optimizer, schedule, demo
tokenizer, the embedded corpus preprocessed by ``configs/data/demo_corpus.yaml``), shortened to
``STEPS`` steps of a smaller batch (4 × 128 tokens) with no evaluation or checkpoints, on one CPU
process in fp32. Loss and grad norm of every step must
equal ``golden/cpt_tiny_cpu.json`` to ``RTOL`` relative. When a change is intended, regenerate
the file and say why in the commit::

    TOWER_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/training/test_golden_loss.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tower_megatron.testing import run_distributed

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "cpt_tiny_cpu.json"
STEPS = 8
RTOL = 1e-4


def _run_recipe(out_dir: str, stats: str) -> dict:
    from tower_megatron.config import JobConfig, load_config
    from tower_megatron.runtime.compat import versions
    from tower_megatron.training.entry import run_training

    overrides = [
        f"run.output_dir={out_dir}",
        "run.name=golden",
        "run.device=cpu",
        f"data.mixture.stats=[{stats}]",
        "data.mixture.report=false",
        f"train.train_steps={STEPS}",
        "train.micro_batch_size=2",
        "train.global_batch_size=4",
        "train.seq_length=128",
        "train.eval_interval=0",
        "checkpoint.save_interval=0",
        "checkpoint.save_at_end=false",
        "logging.console=false",
        "logging.progress_bar=false",
        "logging.tensorboard=false",
    ]
    job = load_config(JobConfig, str(ROOT / "configs" / "cpt_tiny_cpu.yaml"), overrides)
    history = run_training(job)["history"]
    steps = [r for r in history if "train/loss" in r]
    return {
        "loss": [r["train/loss"] for r in steps],
        "grad_norm": [r["train/grad_norm"] for r in steps],
        "versions": versions(),
    }


def test_tiny_recipe_matches_golden_loss_curve(tmp_path):
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig
    from tower_megatron.data.preprocess import run_preprocess

    corpus = tmp_path / "demo_corpus"
    cfg = load_config(
        PreprocessConfig,
        str(ROOT / "configs" / "data" / "demo_corpus.yaml"),
        [f"output_dir={corpus}", "workers=1", "progress=false"],
    )
    run_preprocess(cfg)
    [got] = run_distributed(
        _run_recipe, world_size=1, out_dir=str(tmp_path / "runs"), stats=str(corpus / "stats.json")
    )
    assert len(got["loss"]) == STEPS
    if os.environ.get("TOWER_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps({"steps": STEPS, **got}, indent=2) + "\n")
        pytest.skip(f"wrote {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    for metric in ("loss", "grad_norm"):
        for step, (have, want) in enumerate(zip(got[metric], golden[metric], strict=True), start=1):
            assert have == pytest.approx(want, rel=RTOL), (
                f"{metric} at step {step}: {have!r}, golden {want!r} (golden made with "
                f"{golden['versions']}; now {got['versions']}). If the change is intended, "
                "regenerate with TOWER_UPDATE_GOLDEN=1"
            )
