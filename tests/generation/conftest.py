"""Tiny random HF checkpoints (made by ``transformers`` itself, see ``tests/models/tiny_hf.py``)
shared by the generation tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generation_cases import GENERATION_CASES
from tiny_hf import make_hf_checkpoint


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
