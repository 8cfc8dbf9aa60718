"""SFT (packed) and DPO/WPO under TP=2, PP=2 and DP=2 on two gloo processes give the losses and
grad norms of one process, step by step. The data are the embedded demo chats and preference
pairs, preprocessed here; layout-invariant initialisation gives every layout the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

REPO = Path(__file__).resolve().parents[2]
STEPS = 3
RTOL = 1e-5
LAYOUTS = {
    "tp2": ["parallel.tensor_model_parallel_size=2"],
    "pp2": ["parallel.pipeline_model_parallel_size=2"],
    "dp2": [],
}
STAGES = {
    "sft": ("sft", "demo_sft.yaml", {"chat"}),
    "wpo": ("preference", "demo_preference.yaml", None),
}


def _preprocess(recipe: str, out: Path, keep: set[str] | None) -> str:
    from tower_megatron.config import load_config
    from tower_megatron.config.preprocess import PreprocessConfig
    from tower_megatron.data.preprocess import run_preprocess

    cfg = load_config(PreprocessConfig, REPO / "configs/data" / recipe, [f"output_dir={out}", "workers=1", "progress=false"])
    if keep:
        cfg.sources = [s for s in cfg.sources if s.name in keep]
    run_preprocess(cfg)
    return f"{out}/*/*.train"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage_parity")
    build_tiny_assets(root / "assets")
    paths = {stage: _preprocess(recipe, root / kind, keep) for stage, (kind, recipe, keep) in STAGES.items()}
    return root, paths


def _run(assets_dir: str, out_dir: str, stage: str, paths: str, layouts: dict[str, list[str]]) -> dict:
    from tower_megatron.training.entry import run_training

    assets = build_tiny_assets(assets_dir)
    results = {}
    for name, overrides in layouts.items():
        job = tiny_job(
            assets,
            f"{out_dir}/{stage}-{name}",
            f"train.stage={stage}",
            f"train.train_steps={STEPS}",
            "model.num_layers=4",
            "data.tokenizer.path=resource:tokenizer/tower_demo_sp.model",
            f"data.paths=[{paths}]",
            "train.seq_length=128",
            *overrides,
        )
        history = run_training(job)["history"]
        results[name] = [(r["train/loss"], r["train/grad_norm"]) for r in history if "train/loss" in r]
    return results


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_two_process_layouts_match_single_process(data, stage):
    root, paths = data
    kwargs = dict(assets_dir=str(root / "assets"), stage=stage, paths=paths[stage])
    [single] = run_distributed(_run, world_size=1, out_dir=str(root / "single"), layouts={"one": []}, **kwargs)
    want = single["one"]
    assert len(want) == STEPS
    results = run_distributed(_run, world_size=2, out_dir=str(root / "two"), layouts=LAYOUTS, **kwargs)
    for name, got in results[0].items():
        assert len(got) == STEPS, name
        for step, ((loss, norm), (want_loss, want_norm)) in enumerate(zip(got, want, strict=True), start=1):
            assert loss == pytest.approx(want_loss, rel=RTOL), f"{stage} {name} step {step} loss"
            assert norm == pytest.approx(want_norm, rel=1e-4), f"{stage} {name} step {step} grad norm"
    assert results[1] == results[0]
