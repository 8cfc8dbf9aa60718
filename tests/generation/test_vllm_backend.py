"""The vLLM backend: import-guarded on CPU (one clear error), greedy parity with ``transformers``
on a GPU with vLLM installed (skipped otherwise)."""

from __future__ import annotations

import pytest
import torch

from tower_megatron.generation import SamplingParams, load_generator
from tower_megatron.generation.vllm_backend import vllm_available
from tower_megatron.registry import UnknownNameError


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_without_vllm_the_error_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match=r"pip install 'tower-megatron\[vllm\]'"):
        load_generator(tmp_path, backend="vllm")


def test_unknown_backend_lists_the_known_ones(tmp_path):
    with pytest.raises(UnknownNameError, match="megatron.*vllm"):
        load_generator(tmp_path, backend="trt")


@pytest.mark.gpu
def test_vllm_greedy_equals_transformers(tiny_hf_dirs):
    pytest.importorskip("vllm")
    from generation_cases import prompt_batch
    from tiny_hf import load_hf

    hf_dir = tiny_hf_dirs["qwen2_tied"]
    prompts = prompt_batch(300, (9, 4, 13))
    gen = load_generator(hf_dir, backend="vllm", dtype="float32", gpu_memory_utilization=0.2, eos_ids=[0])
    outs = gen.generate(prompts, SamplingParams(max_new_tokens=8))
    model = load_hf(hf_dir)
    for prompt, out in zip(prompts, outs, strict=True):
        ref = model.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=[0], pad_token_id=0
        )
        assert out.token_ids == ref[0, len(prompt) :].tolist()
