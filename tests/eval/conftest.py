"""A tiny Gemma 2 model for the eval/serve tests: random weights and a sentencepiece tokenizer made
by ``transformers``/sentencepiece themselves (``tests/models/tiny_hf.py``), converted to a Megatron
``torch_dist`` checkpoint by ``tower-megatron convert``'s converter, loaded by ``load_generator``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from tiny_hf import make_hf_checkpoint

    from tower_megatron.models.convert import hf_to_megatron

    root = tmp_path_factory.mktemp("eval_model")
    # Longer positions than the parity case: eval prompts (IF-MT requests) run to a few hundred tokens.
    hf = make_hf_checkpoint("gemma2_gqa_window", root / "hf", max_position_embeddings=1024)
    hf_to_megatron(hf, root / "megatron", log=lambda _: None)
    return root / "megatron"


@pytest.fixture(scope="session")
def tiny_backend(tiny_checkpoint):
    from tower_megatron.generation import load_generator

    return load_generator(str(tiny_checkpoint), device="cpu", max_batch_size=16)
