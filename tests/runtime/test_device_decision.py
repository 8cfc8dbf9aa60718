"""One device decision: the runtime's resolved device (not ``torch.cuda.is_available()``)
decides layer specs, Transformer Engine, the MFU peak and the profiler's activities."""

from __future__ import annotations

import pytest
import torch

from tower_megatron.config.model import ModelConfig
from tower_megatron.models.family import use_transformer_engine
from tower_megatron.testing import run_distributed
from tower_megatron.training.callbacks.throughput import PEAK_TFLOPS, device_peak_tflops


def test_cpu_device_means_local_specs_and_no_peak():
    assert use_transformer_engine(ModelConfig(transformer_impl="auto"), "cpu") is False
    assert use_transformer_engine(ModelConfig(transformer_impl="local"), "cuda") is False
    with pytest.raises(
        RuntimeError, match=r"transformer_impl=transformer_engine .* device is not a GPU \(cpu\)"
    ):
        use_transformer_engine(ModelConfig(transformer_impl="transformer_engine"), "cpu")
    assert device_peak_tflops("bf16", "cpu") is None
    assert device_peak_tflops("bf16", torch.device("cpu")) is None


def _decision(device: str) -> dict:
    from tower_megatron.models.family import te_available
    from tower_megatron.runtime import init_runtime, runtime_device

    runtime = init_runtime(device=device)
    return {
        "runtime": str(runtime.device),
        "decided": str(runtime_device()),
        "te_default": te_available(),  # no device given: follows the runtime's decision
    }


def test_runtime_device_is_what_init_runtime_decided():
    [out] = run_distributed(_decision, world_size=1, device="cpu")
    assert out == {"runtime": "cpu", "decided": "cpu", "te_default": False}


def _build_on_cpu_of_gpu_host(assets_dir: str, run_dir: str) -> dict:
    from tower_megatron.models import resolve_model_config
    from tower_megatron.runtime import init_runtime
    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job
    from tower_megatron.training.builder import build_model

    job = tiny_job(build_tiny_assets(assets_dir), run_dir)  # run.device=cpu
    runtime = init_runtime(device=job.run.device)
    built = build_model(job, resolve_model_config(job.model, 320), wrap_ddp=False, device=runtime.device)
    modules = {type(m).__module__ for c in built.chunks for m in c.modules()}
    return {
        "cuda_visible": torch.cuda.is_available(),
        "te_modules": sorted(m for m in modules if "transformer_engine" in m),
        "param_devices": sorted({p.device.type for c in built.chunks for p in c.parameters()}),
        "peak": device_peak_tflops("bf16", runtime.device),
    }


@pytest.mark.gpu
def test_device_cpu_on_a_gpu_host_stays_on_cpu(tmp_path):
    """``run.device=cpu`` on a GPU host: local specs, CPU parameters, no GPU peak for MFU."""
    [out] = run_distributed(
        _build_on_cpu_of_gpu_host, world_size=1, assets_dir=str(tmp_path / "a"), run_dir=str(tmp_path / "r")
    )
    assert out == {"cuda_visible": True, "te_modules": [], "param_devices": ["cpu"], "peak": None}


@pytest.mark.gpu
def test_gpu_peak_is_looked_up_for_the_run_device():
    name = torch.cuda.get_device_name(0)
    known = [model for model in PEAK_TFLOPS if model in name]
    want = PEAK_TFLOPS[known[0]]["bf16"] if known else None
    assert device_peak_tflops("bf16", torch.device("cuda", 0)) == want
