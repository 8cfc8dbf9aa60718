"""TP=2, PP=2, DP=2 and PP=2×VPP=2 on two real gloo processes give the losses of one process.

All runs share the seed and data; layout-invariant initialisation makes them start from the same
weights, per-token loss averaging makes their gradients equal, so in fp32 the losses agree to
rounding (asserted: 1e-5 relative; measured ~1e-7).
"""

from __future__ import annotations

import pytest

from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

STEPS = 6
RTOL = 1e-5

LAYOUTS = {
    "tp2": ["parallel.tensor_model_parallel_size=2"],
    "pp2": ["parallel.pipeline_model_parallel_size=2"],
    "dp2": [],
    "pp2_vpp2": [
        "parallel.pipeline_model_parallel_size=2",
        "parallel.virtual_pipeline_model_parallel_size=2",
    ],
    "dp2_overlap": ["parallel.overlap_grad_reduce=true"],
}


def _losses(history: list[dict]) -> list[float]:
    return [r["train/loss"] for r in history if "train/loss" in r]


def _run_layouts(assets_dir: str, out_dir: str, layouts: dict[str, list[str]]) -> dict[str, list[float]]:
    from tower_megatron.training.entry import run_training

    assets = build_tiny_assets(assets_dir)
    results = {}
    for name, overrides in layouts.items():
        job = tiny_job(
            assets, f"{out_dir}/{name}", f"train.train_steps={STEPS}", "model.num_layers=4", *overrides
        )
        results[name] = _losses(run_training(job)["history"])
    return results


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    assets = tmp_path_factory.mktemp("assets")
    build_tiny_assets(assets)
    out = tmp_path_factory.mktemp("runs")
    [ref] = run_distributed(
        _run_layouts, world_size=1, assets_dir=str(assets), out_dir=str(out), layouts={"single": []}
    )
    return str(assets), str(out), ref["single"]


def test_single_process_loss_decreases(reference):
    _, _, losses = reference
    assert len(losses) == STEPS
    assert losses[-1] < losses[0] - 0.1, losses


def test_two_process_layouts_match_single_process(reference):
    assets, out, ref = reference
    results = run_distributed(_run_layouts, world_size=2, assets_dir=assets, out_dir=out, layouts=LAYOUTS)
    rank0 = results[0]
    for name, losses in rank0.items():
        assert len(losses) == STEPS, name
        for step, (got, want) in enumerate(zip(losses, ref, strict=True), start=1):
            assert got == pytest.approx(want, rel=RTOL), f"{name} step {step}: {got} vs {want}"
    # Every rank reports the same (globally reduced) loss.
    assert results[1] == rank0
