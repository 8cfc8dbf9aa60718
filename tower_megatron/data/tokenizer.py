"""Tokenizers through Megatron-Core's own ``MegatronTokenizer`` (sentencepiece for Gemma 2, HF
``tokenizers`` for Qwen 2.5, or any local tokenizer file).

:func:`build_tokenizer` is what training uses. :class:`BatchEncoder` is the preprocessing fast path:
the same model file driven through the libraries' batch calls, without importing torch or Megatron
(it runs in worker processes); a test checks that it gives exactly the ids of ``build_tokenizer``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.resources import resolve

_LIBRARIES = {"sentencepiece": "sentencepiece", "huggingface": "huggingface"}


def _resolve_path(cfg: TokenizerConfig) -> str:
    if not cfg.path:
        raise ValueError("data.tokenizer.path is not set")
    path = Path(resolve(cfg.path))
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
    path = Path(_resolve_path(cfg))
    if cfg.type == "huggingface" and path.is_file():
        # Megatron hands the path to AutoTokenizer, which takes a file path for a hub repo id;
        # the directory holding tokenizer.json (and any tokenizer_config.json beside it) loads.
        if path.name != "tokenizer.json":
            raise ValueError(
                f"data.tokenizer.path: {path} is not a tokenizer.json; give a Hugging Face "
                "tokenizer.json file or the directory holding it"
            )
        path = path.parent
    return MegatronTokenizer.from_pretrained(str(path), metadata_path={"library": _LIBRARIES[cfg.type]})


def tokenizer_fingerprint(cfg: TokenizerConfig) -> str:
    """SHA-256 of the tokenizer's defining file, recorded with token files so a training run can
    refuse data made with another tokenizer."""
    path = Path(_resolve_path(cfg))
    if path.is_dir():  # HF directory: tokenizer.json defines the ids
        path = path / "tokenizer.json"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def eod_and_vocab_size(cfg: TokenizerConfig) -> tuple[int, int]:
    """``(build_tokenizer(cfg).eod, .vocab_size)``, read from the tokenizer files directly where
    they settle it: Megatron's tokenizer module imports torch, Megatron-Core and transformers,
    3-10 s of start-up per preprocess run."""
    if cfg.type == "sentencepiece":
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=_resolve_path(cfg))
        return sp.eos_id(), sp.get_piece_size()  # Megatron's SentencePieceTokenizer: eod = eos
    direct = _hf_eod_and_vocab_size(Path(_resolve_path(cfg))) if cfg.type == "huggingface" else None
    if direct is not None:
        return direct
    tokenizer = build_tokenizer(cfg)
    return int(tokenizer.eod), int(tokenizer.vocab_size)


# tokenizer_config.json classes that load tokenizer.json as it is (no model-specific rebuilding).
_PLAIN_HF_CLASSES = (None, "PreTrainedTokenizerFast", "TokenizersBackend")


def _hf_eod_and_vocab_size(path: Path) -> tuple[int, int] | None:
    """What Megatron's ``HuggingFaceTokenizer`` reports (eod: the id of ``eos_token``; vocab size:
    ``len(AutoTokenizer)``, every token including added ones), for a transformers directory whose
    ``tokenizer_config.json`` names an ``eos_token`` already in ``tokenizer.json`` and adds no
    tokens of its own; None (ask Megatron) for anything else."""
    config_file, special_map = path / "tokenizer_config.json", path / "special_tokens_map.json"
    if not path.is_dir() or not config_file.is_file() or special_map.exists() or (path / "added_tokens.json").exists():
        return None
    import json

    from tokenizers import Tokenizer

    config = json.loads(config_file.read_text(encoding="utf-8"))
    eos = config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if config.get("tokenizer_class") not in _PLAIN_HF_CLASSES or "auto_map" in config or not isinstance(eos, str):
        return None
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    eod = tokenizer.token_to_id(eos)
    added = config.get("added_tokens_decoder") or {}
    if eod is None or any(tokenizer.id_to_token(int(i)) != t.get("content") for i, t in added.items()):
        return None  # transformers would add tokens: let it count them
    return eod, tokenizer.get_vocab_size(with_added_tokens=True)


class BatchEncoder:
    """Batched text → ids with the tokenizer library itself (no special tokens added)."""

    def __init__(self, cfg: TokenizerConfig, threads: int = -1) -> None:
        """``threads``: sentencepiece's batch threads (-1: all cores; 1 inside a worker process)."""
        path = _resolve_path(cfg)
        self.type = cfg.type
        self.threads = threads
        if cfg.type == "sentencepiece":
            import sentencepiece

            self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
        elif cfg.type == "huggingface":
            # Worker processes are already the parallelism; Rust threads on top would oversubscribe.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from tokenizers import Tokenizer

            file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
            if not file.is_file():
                raise FileNotFoundError(f"data.tokenizer.path: no tokenizer.json at {file}")
            self._hf = Tokenizer.from_file(str(file))
        else:
            raise ValueError(f"unknown data.tokenizer.type {cfg.type!r}; known: {', '.join(_LIBRARIES)}")

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self.type == "sentencepiece":
            return self._sp.encode(texts, num_threads=self.threads)
        return [enc.ids for enc in self._hf.encode_batch(texts, add_special_tokens=False)]
