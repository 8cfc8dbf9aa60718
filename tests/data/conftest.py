"""Fixtures of the data tests (helpers live in ``data_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import DEMO_RECIPE, tokenizer_cfg

from tower_megatron.config.loader import load_config
from tower_megatron.config.preprocess import PreprocessConfig


@pytest.fixture(scope="session")
def megatron_tokenizer():
    from tower_megatron.data.tokenizer import build_tokenizer

    return build_tokenizer(tokenizer_cfg())


@pytest.fixture(scope="session")
def demo_stats(tmp_path_factory) -> tuple[Path, dict]:
    """The demo recipe preprocessed once per session: (output_dir, stats)."""
    from tower_megatron.data.preprocess import run_preprocess

    out = tmp_path_factory.mktemp("demo") / "demo_corpus"
    cfg = load_config(PreprocessConfig, DEMO_RECIPE, [f"output_dir={out}", "workers=1", "progress=false"])
    return out, run_preprocess(cfg)
