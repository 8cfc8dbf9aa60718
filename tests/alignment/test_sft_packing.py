"""A packed SFT row gives the same per-token losses and parameter gradients as the same
conversations each in its own row: the block-diagonal mask keeps conversations apart, and RoPE
is relative, so restarting positions changes nothing inside a conversation. Checked on the plain
GPT spec and on Gemma 2's (soft-capped attention with a sliding window shorter than a
conversation)."""

from __future__ import annotations

import pytest
import torch

from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

LENGTHS = (5, 9)  # two conversations
SEQ = 16


def _rows(vocab: int):
    g = torch.Generator().manual_seed(3)
    convs = [torch.randint(4, vocab, (n + 1,), generator=g) for n in LENGTHS]  # +1: the last label
    masks = [torch.tensor([0.0] * 2 + [1.0] * (n - 2)) for n in LENGTHS]  # a 2-token "prompt"

    def row(parts: list[int]) -> dict:
        tokens, labels, loss_mask, positions, segments = [], [], [], [], []
        for seg, i in enumerate(parts, start=1):
            n = LENGTHS[i]
            tokens += convs[i][:n].tolist()
            labels += convs[i][1:].tolist()
            loss_mask += masks[i].tolist()
            positions += list(range(n))
            segments += [seg] * n
        pad = SEQ - len(tokens)
        return {
            "tokens": torch.tensor(tokens + [0] * pad),
            "labels": torch.tensor(labels + [0] * pad),
            "loss_mask": torch.tensor(loss_mask + [0.0] * pad),
            "position_ids": torch.tensor(positions + list(range(pad))),
            "segment_ids": torch.tensor(segments + [0] * pad),
        }

    return [row([0, 1])], [row([0]), row([1])]


def _run(assets_dir: str, out_dir: str, arch_overrides: list[str]) -> dict:
    from tower_megatron.alignment.sft import SFTStage
    from tower_megatron.data.tokenizer import build_tokenizer
    from tower_megatron.models import resolve_model_config
    from tower_megatron.runtime import init_runtime
    from tower_megatron.training.models import ModelFactory

    assets = build_tiny_assets(assets_dir)
    job = tiny_job(assets, f"{out_dir}/sft", "train.stage=sft", *arch_overrides)
    runtime = init_runtime(device="cpu", seed=job.run.seed)
    tokenizer = build_tokenizer(job.data.tokenizer)
    model = ModelFactory(job, resolve_model_config(job.model, tokenizer.vocab_size)).build_frozen()[0]
    model.requires_grad_(True)
    stage = SFTStage(job, tokenizer, runtime)
    packed, unpacked = _rows(tokenizer.vocab_size)
    results = {}
    for name, rows in (("packed", packed), ("unpacked", unpacked)):
        model.zero_grad()
        batch = stage.collate(rows)
        per_token, loss_func = stage.forward_step(batch, model)
        loss_sum, count, _ = loss_func(per_token)
        loss_sum.backward()
        mask = batch["loss_mask"].bool()
        results[name] = {
            "losses": per_token[mask].detach(),
            "count": int(count),
            "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
        }
    return results


@pytest.mark.parametrize(
    "arch",
    [
        ["model.arch=gpt"],
        ["model.arch=gemma2", "model.sliding_window=4", "model.kv_channels=16", "model.num_query_groups=2"],
    ],
    ids=["gpt", "gemma2"],
)
def test_packed_equals_unpacked(tmp_path, arch):
    [result] = run_distributed(
        _run, world_size=1, assets_dir=str(tmp_path / "assets"), out_dir=str(tmp_path), arch_overrides=arch
    )
    packed, unpacked = result["packed"], result["unpacked"]
    assert packed["count"] == unpacked["count"] == sum(LENGTHS) - 4
    torch.testing.assert_close(packed["losses"], unpacked["losses"], rtol=1e-5, atol=1e-5)
    for name, grad in packed["grads"].items():
        torch.testing.assert_close(grad, unpacked["grads"][name], rtol=1e-4, atol=1e-6, msg=name)
