"""Shared fixtures. Tests run on CPU; ``gpu``-marked tests are skipped without CUDA."""

from __future__ import annotations

import os

import pytest
import torch

# Tests never touch the network: W&B runs offline, HF hubs are off.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# In-process runtimes (tower_megatron.runtime.init_runtime) fill in torchrun's variables; a
# subprocess started by a later test would inherit them and bind the same MASTER_PORT.
DISTRIBUTED_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


SESSION_DISTRIBUTED_ENV = {var: os.environ.get(var) for var in DISTRIBUTED_VARS}


@pytest.fixture(autouse=True)
def _restore_distributed_env():
    # Back to the session's values (not this test's: a module fixture may have leaked them).
    yield
    for var, value in SESSION_DISTRIBUTED_ENV.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
