"""FP8 is used where Transformer Engine and an FP8-capable GPU (compute capability ≥ 8.9) exist,
and is otherwise a clear error naming the reason — never a silent bf16 run."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from tower_megatron.config.model import FP8Config, ModelConfig
from tower_megatron.config.schema import ParallelConfig, TrainConfig
from tower_megatron.models import MODEL_FAMILIES, resolve_model_config
from tower_megatron.models.family import fp8_problem

HAS_TE = importlib.util.find_spec("transformer_engine") is not None


def _model(**fp8) -> ModelConfig:
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=128)
    return resolve_model_config(dataclasses.replace(cfg, fp8=FP8Config(**fp8)))


def test_no_fp8_asked_no_problem():
    assert fp8_problem(_model(), "cpu") is None


def test_fp8_on_cpu_names_the_device():
    assert fp8_problem(_model(format="hybrid"), "cpu") == (
        "model.fp8.format='hybrid' needs a GPU, but the run's device is cpu (unset model.fp8.format for CPU runs)"
    )


def test_fp8_with_local_layers_on_a_gpu_is_refused():
    model = dataclasses.replace(_model(format="e4m3"), transformer_impl="local")
    assert fp8_problem(model, "cuda") == (
        "model.fp8.format='e4m3' needs Transformer Engine layers, but model.transformer_impl='local'"
    )


@pytest.mark.skipif(HAS_TE, reason="Transformer Engine is installed")
def test_gpu_run_without_te_raises_instead_of_training_in_bf16():
    model = _model(format="hybrid")
    problem = fp8_problem(model, "cuda")
    assert problem.startswith("model.fp8.format='hybrid' needs Transformer Engine, which does not import (")
    assert problem.endswith("pip install -e '.[gpu]'")
    family = MODEL_FAMILIES.get(model.arch)
    with pytest.raises(ValueError) as err:
        family.transformer_config(model, ParallelConfig(), TrainConfig(precision="bf16"), device="cuda")
    assert str(err.value) == problem


def test_cpu_conversion_of_an_fp8_model_builds_without_fp8():
    model = _model(format="hybrid")
    family = MODEL_FAMILIES.get(model.arch)
    config = family.transformer_config(model, ParallelConfig(), TrainConfig(precision="bf16"), device="cpu")
    assert config.fp8 is None


@pytest.mark.gpu
def test_fp8_selected_on_a_capable_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    model = _model(format="hybrid", recipe="tensorwise")
    capability = torch.cuda.get_device_capability()
    problem = fp8_problem(model, "cuda")
    if HAS_TE and capability >= (8, 9):
        assert problem is None
        family = MODEL_FAMILIES.get(model.arch)
        config = family.transformer_config(
            model, ParallelConfig(), TrainConfig(precision="bf16"), device="cuda"
        )
        assert config.fp8 == "hybrid" and config.fp8_recipe == "tensorwise"
    elif not HAS_TE:
        assert "needs Transformer Engine" in problem
    else:
        assert f"is {capability[0]}.{capability[1]}" in problem
