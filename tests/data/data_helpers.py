"""Helpers for the data tests (imported as ``data_helpers``; fixtures are in conftest.py): write
small input files, run preprocess in-process (workers=1, no progress bar), read token files back
with Megatron's own ``IndexedDataset``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import zstandard

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.config.loader import load_config
from tower_megatron.config.preprocess import PreprocessConfig
from tower_megatron.resources import DEMO_TOKENIZER

REPO = Path(__file__).resolve().parents[2]
DEMO_RECIPE = REPO / "configs" / "data" / "demo_corpus.yaml"


def tokenizer_cfg() -> TokenizerConfig:
    return TokenizerConfig(type="sentencepiece", path=DEMO_TOKENIZER)


def write_lines(path: Path, lines: list, raw: bool = False) -> Path:
    """JSON-encodes dict/list lines (or writes str/bytes as they are); compresses .gz/.zst."""
    parts = []
    for line in lines:
        if isinstance(line, bytes):
            parts.append(line)
        elif isinstance(line, str):
            parts.append(line.encode("utf-8", "surrogatepass"))
        else:
            parts.append(json.dumps(line, ensure_ascii=False).encode("utf-8"))
    data = b"".join(p + b"\n" for p in parts) if parts else b""
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_cfg(out: Path, sources: list[dict], **kw) -> PreprocessConfig:
    """A PreprocessConfig through the real loader (so configs are checked as users' are)."""
    overrides = [f"output_dir={out}", "workers=1", "progress=false"]
    overrides += [f"{k}={v}" for k, v in kw.items()]
    cfg = load_config(PreprocessConfig, None, overrides)
    cfg.tokenizer = tokenizer_cfg()
    from tower_megatron.config.preprocess import SourceConfig

    cfg.sources = [SourceConfig(**s) for s in sources]
    return cfg


def read_docs(prefix: Path | str) -> list:
    """Every document of a token file as a numpy array (copied: the dataset's mmap closes with it)."""
    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix))
    return [np.array(ds[i]) for i in range(len(ds))]
