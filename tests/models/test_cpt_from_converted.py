"""CPT starting from a converted tiny Gemma 2 checkpoint (``model.hf_config=<checkpoint>`` +
``checkpoint.load=<checkpoint>``) starts from exactly the Hugging Face model: the trainer's first
loss equals the loss ``transformers`` computes with the original HF model on the same batch
(the first global batch the trainer drew, captured from its dataset), and training lowers it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_hf import load_hf, make_hf_checkpoint

from tower_megatron.models.convert import hf_to_megatron
from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job
from tower_megatron.training.callbacks.base import Callback

STEPS = 4
RTOL = 1e-5  # fp32 on both sides; logits agree to ~3e-6 (test_parity.py)


class FirstBatch(Callback):
    """The samples of the first global batch, read from the trainer's own training dataset in
    the order its sampler hands them out (a world of one: samples 0 … gbs-1)."""

    def __init__(self) -> None:
        self.samples: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer) -> None:
        items = [trainer.train_dataset[i] for i in range(trainer.job.train.global_batch_size)]
        self.samples = {
            k: torch.stack([torch.as_tensor(it[k]) for it in items])
            for k in ("tokens", "labels", "loss_mask")
        }


def _cpt(assets_dir: str, ckpt: str, run_root: str) -> dict:
    from tower_megatron.training.entry import run_training

    assets = build_tiny_assets(assets_dir)
    first = FirstBatch()
    job = tiny_job(
        assets,
        Path(run_root) / "converted",
        f"model.hf_config={ckpt}",
        f"checkpoint.load={ckpt}",
        "checkpoint.load_optimizer=false",
        f"train.train_steps={STEPS}",
    )
    history = run_training(job, extra_callbacks=[first])["history"]
    # numpy, not torch tensors: torch's queue pickling shares storage through a file descriptor
    # that dies with the worker process.
    batch = {k: v.numpy() for k, v in first.samples.items()}
    return {"loss": [r["train/loss"] for r in history if "train/loss" in r], "batch": batch}


def _hf_loss(hf_dir: Path, batch: dict[str, torch.Tensor]) -> float:
    """Per-token mean cross-entropy of the HF model on the batch (the CPT loss definition)."""
    model = load_hf(hf_dir)
    with torch.no_grad():
        logits = model(batch["tokens"]).logits.float()
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), reduction="none"
    )
    mask = batch["loss_mask"].reshape(-1).float()
    return float((per_token * mask).sum() / mask.sum())


def test_cpt_from_converted_gemma2_starts_at_the_hf_models_loss(tmp_path):
    assets = tmp_path / "assets"
    build_tiny_assets(assets)  # the trainer's tiny tokenizer (320 pieces) and token files
    # tiny_job fixes 2 layers, hidden 64, 4 heads; the HF model matches. Its vocabulary (384 ≥
    # the tokenizer's 320) is a multiple of model.make_vocab_size_divisible_by (128): Megatron
    # adds no padding rows, which would otherwise take part in the softmax (zero logits) and
    # raise the first loss above the HF model's (docs/models.md, "Vocabulary padding").
    hf_dir = make_hf_checkpoint(
        "gemma2_gqa_window",
        tmp_path / "hf",
        num_hidden_layers=2,
        vocab_size=384,
        head_dim=16,
        sliding_window=16,
    )
    ckpt = tmp_path / "mcore"
    hf_to_megatron(hf_dir, ckpt, log=lambda _: None)
    [out] = run_distributed(
        _cpt, world_size=1, assets_dir=str(assets), ckpt=str(ckpt), run_root=str(tmp_path / "runs")
    )
    losses, batch = out["loss"], {k: torch.from_numpy(v) for k, v in out["batch"].items()}
    assert batch["tokens"].shape == (8, 64)  # tiny_job: global batch 8, seq 64
    want = _hf_loss(hf_dir, batch)
    print(f"first CPT loss {losses[0]:.7f}, HF model on the same batch {want:.7f}")
    assert losses[0] == pytest.approx(want, rel=RTOL)
    assert len(losses) == STEPS and losses[-1] < losses[0], losses
