"""Transformer Engine specs (GPU only; skipped without CUDA): the checkpoints converted on CPU load
strictly into the TE layouts (same keys as the local specs) and match ``transformers`` logits."""

from __future__ import annotations

import pytest
import torch
from tiny_hf import CASES, load_hf, make_hf_checkpoint, token_batch

from tower_megatron.models.convert import hf_to_megatron
from tower_megatron.testing import run_distributed

pytestmark = pytest.mark.gpu

# TE's fp32 GEMMs may use TF32 internally; 1e-3 still catches any mapping or masking error.
TOL = 1e-3


def _te_worker(cases: dict[str, tuple[str, str]]) -> dict[str, float]:
    from megatron.core import parallel_state as ps

    from tower_megatron.config.model import ModelConfig
    from tower_megatron.config.schema import ParallelConfig, TrainConfig
    from tower_megatron.models import MODEL_FAMILIES, load_model_checkpoint, pad_vocab, resolve_model_config
    from tower_megatron.models.family import use_transformer_engine
    from tower_megatron.runtime import init_runtime

    torch.backends.cuda.matmul.allow_tf32 = False
    init_runtime(device="cuda")
    diffs = {}
    for name, (hf_dir, ckpt) in cases.items():
        model_cfg = resolve_model_config(ModelConfig(hf_config=ckpt, transformer_impl="transformer_engine"))
        assert use_transformer_engine(model_cfg)
        family = MODEL_FAMILIES.get(model_cfg.arch)
        config = family.transformer_config(model_cfg, ParallelConfig(), TrainConfig(precision="fp32"))
        padded = pad_vocab(model_cfg.vocab_size, model_cfg.make_vocab_size_divisible_by, 1)
        model = family.build(model_cfg, config, True, True, None, padded).cuda().eval()
        assert ps.get_tensor_model_parallel_world_size() == 1
        load_model_checkpoint([model], ckpt)
        ids = token_batch(CASES[name][1]["vocab_size"]).cuda()
        pos = torch.arange(ids.shape[1], device="cuda").unsqueeze(0).expand_as(ids)
        with torch.no_grad():
            got = model(ids, pos, None, runtime_gather_output=True)[..., : model_cfg.vocab_size]
            want = load_hf(hf_dir).cuda()(ids).logits
        diffs[name] = (got.float() - want).abs().max().item()
    return diffs


def test_te_specs_match_transformers(tmp_path):
    pytest.importorskip("transformer_engine")
    cases = {}
    for name in ("gemma2_gqa_window", "qwen2_untied_window"):
        hf_dir = make_hf_checkpoint(name, tmp_path / f"hf_{name}")
        hf_to_megatron(hf_dir, tmp_path / f"mcore_{name}", log=lambda _: None)
        cases[name] = (str(hf_dir), str(tmp_path / f"mcore_{name}"))
    [diffs] = run_distributed(_te_worker, world_size=1, cases=cases)
    for name, diff in diffs.items():
        assert diff <= TOL, (name, diff)
