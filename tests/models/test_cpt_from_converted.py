"""A short CPT run of the trainer starting from a converted tiny Gemma 2 checkpoint
(``model.hf_config=<checkpoint>`` + ``checkpoint.load=<checkpoint>``) lowers the loss."""

from __future__ import annotations

from pathlib import Path

from tiny_hf import make_hf_checkpoint

from tower_megatron.models.convert import hf_to_megatron
from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

STEPS = 8


def _cpt(assets_dir: str, ckpt: str, run_root: str) -> dict[str, list[float]]:
    from tower_megatron.training.entry import run_training

    assets = build_tiny_assets(assets_dir)
    common = [f"model.hf_config={ckpt}", f"train.train_steps={STEPS}"]
    losses = {}
    for name, extra in {
        "converted": [f"checkpoint.load={ckpt}", "checkpoint.load_optimizer=false"],
        "scratch": [],  # same architecture, random init: shows the load took effect
    }.items():
        history = run_training(tiny_job(assets, Path(run_root) / name, *common, *extra))["history"]
        losses[name] = [r["train/loss"] for r in history if "train/loss" in r]
    return losses


def test_cpt_from_converted_gemma2_lowers_the_loss(tmp_path):
    assets = tmp_path / "assets"
    build_tiny_assets(assets)  # the trainer's tiny tokenizer (320 pieces) and token files
    # tiny_job fixes 2 layers, hidden 64, 4 heads; the HF model matches (and the tokenizer's vocab).
    hf_dir = make_hf_checkpoint(
        "gemma2_gqa_window",
        tmp_path / "hf",
        num_hidden_layers=2,
        vocab_size=320,
        head_dim=16,
        sliding_window=16,
    )
    ckpt = tmp_path / "mcore"
    hf_to_megatron(hf_dir, ckpt, log=lambda _: None)
    [losses] = run_distributed(
        _cpt, world_size=1, assets_dir=str(assets), ckpt=str(ckpt), run_root=str(tmp_path / "runs")
    )
    converted = losses["converted"]
    print("CPT losses from the converted checkpoint:", [round(x, 3) for x in converted])
    assert len(converted) == STEPS
    assert converted[-1] < converted[0] - 0.3, converted
    assert abs(converted[0] - losses["scratch"][0]) > 0.1, (converted[0], losses["scratch"][0])
