"""Tokenizers through Megatron-Core's own ``MegatronTokenizer`` (sentencepiece for Gemma 2, HF
``tokenizers`` for Qwen 2.5, or any local tokenizer file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tower_megatron.config.data import TokenizerConfig

_LIBRARIES = {"sentencepiece": "sentencepiece", "huggingface": "huggingface"}


def _resolve_path(cfg: TokenizerConfig) -> str:
    if not cfg.path:
        raise ValueError("data.tokenizer.path is not set")
    path = Path(cfg.path)
    if not path.exists():
        raise FileNotFoundError(f"data.tokenizer.path: no such file or directory: {path}")
    if path.is_dir() and cfg.type == "sentencepiece":
        models = sorted(path.glob("*.model"))
        if not models:
            raise FileNotFoundError(f"data.tokenizer.path: no sentencepiece .model file in {path}")
        return str(models[0])
    return str(path)


def build_tokenizer(cfg: TokenizerConfig) -> Any:
    """A Megatron tokenizer: ``tokenize``, ``detokenize``, ``vocab_size``, ``eod``, ``pad``, ``bos``."""
    from megatron.core.tokenizers import MegatronTokenizer

    if cfg.type not in _LIBRARIES:
        raise ValueError(f"unknown data.tokenizer.type {cfg.type!r}; known: {', '.join(_LIBRARIES)}")
    return MegatronTokenizer.from_pretrained(
        _resolve_path(cfg), metadata_path={"library": _LIBRARIES[cfg.type]}
    )
