"""Tiny random HF checkpoints (made by ``transformers`` itself, see ``tests/models/tiny_hf.py``)
shared by the generation tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))

from tiny_hf import make_hf_checkpoint

# Gemma 2 with a 6-token sliding window, GQA and both soft-caps; Qwen 2 with tied embeddings;
# Qwen 2 with a sliding window on some layers (Megatron's stock softmax: equal-length batches).
GENERATION_CASES = ("gemma2_gqa_window", "qwen2_tied", "qwen2_untied_window")


class _TinyDirs(dict):
    """``name → HF directory``, each built on first use (a test needing one builds one)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> str:
        self[name] = str(make_hf_checkpoint(name, self.root / name))
        return self[name]

    def all(self) -> dict[str, str]:
        return {name: self[name] for name in GENERATION_CASES}


@pytest.fixture(scope="session")
def tiny_hf_dirs(tmp_path_factory) -> _TinyDirs:
    return _TinyDirs(tmp_path_factory.mktemp("generation_hf"))


def prompt_batch(vocab: int, lengths: tuple[int, ...], seed: int = 0) -> list[list[int]]:
    """Random prompts of the given lengths over ids [4, vocab) (no BOS/EOS/PAD/UNK)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (n,), generator=gen).tolist() for n in lengths]
