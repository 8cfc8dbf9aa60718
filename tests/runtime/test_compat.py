"""runtime/compat.py refuses to patch what is not there (or changed) and says which versions."""

from __future__ import annotations

import importlib.metadata
import types

import pytest
import torch

from tower_megatron.runtime import compat


def _installed_versions() -> tuple[str, str]:
    return f"torch {torch.__version__}", f"megatron-core {importlib.metadata.version('megatron-core')}"


def test_patching_a_missing_attribute_raises_with_versions():
    owner = types.SimpleNamespace(present=lambda x: x)
    with pytest.raises(compat.CompatError) as info:
        compat.replace(owner, "renamed_helper", lambda x: x)
    message = str(info.value)
    assert "renamed_helper" in message and "does not exist" in message
    for version in _installed_versions():
        assert version in message
    assert not hasattr(owner, "renamed_helper")  # nothing was set


def test_patching_a_changed_signature_raises_and_changes_nothing():
    def original(model_param, tensors, strict):
        return None

    owner = types.SimpleNamespace(set_states=original)
    with pytest.raises(compat.CompatError) as info:
        compat.replace(
            owner, "set_states", lambda model_param, tensors: None, params=["model_param", "tensors"]
        )
    message = str(info.value)
    assert "takes (model_param, tensors, strict)" in message
    assert "expects (model_param, tensors)" in message
    assert all(v in message for v in _installed_versions())
    assert owner.set_states is original


def test_replace_and_restore_round_trip():
    def original(seed: int) -> int:
        return seed

    def stand_in(seed: int) -> int:
        return -seed

    owner = types.SimpleNamespace(manual_seed=original)
    compat.replace(owner, "manual_seed", stand_in)  # same parameters: accepted
    assert owner.manual_seed(3) == -3
    compat.restore_all()
    assert owner.manual_seed is original


def test_every_cpu_patch_target_matches_the_installed_versions():
    """The real targets exist with the signatures the stand-ins were written for (this is the
    check an upgrade of torch or Megatron-Core trips first)."""
    import torch.autograd.graph as autograd_graph
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
    from megatron.core.tensor_parallel import random as mcore_random

    for name, fn in compat._cuda_stand_ins().items():
        compat.check_target(torch.cuda, name, compat.parameter_names(fn))
    compat.check_target(autograd_graph, "_engine_run_backward", ["t_outputs", "args", "kwargs"])
    compat.check_target(mcore_random, "_get_cuda_rng_state", ["device", "clone", "graph_safe"])
    compat.check_target(mcore_random, "_set_cuda_rng_state", ["new_state", "device", "graph_safe"])
    for name, params in compat._DISTOPT_METHODS.items():
        compat.check_target(DistributedOptimizer, name, params)
