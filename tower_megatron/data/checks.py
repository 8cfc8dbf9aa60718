"""Checks of a job's ``data:`` section, beside the code that reads the data: the tokenizer loads,
token files exist, were made with this tokenizer, and hold no token id outside its vocabulary.
Called by :func:`tower_megatron.config.validate.validate_job`; returns messages naming keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tower_megatron.config.data import DataConfig
from tower_megatron.config.loader import ConfigError
from tower_megatron.config.preprocess import PreprocessConfig

TOKENIZER_TYPES = ("sentencepiece", "huggingface")
# Token ids checked against the vocabulary per file without a stats.json (a bounded read:
# 64 M tokens ≈ 128 MiB of uint16, a second or so).
MAX_TOKENS_SCANNED = 64 << 20
_IDX_MAGIC = b"MMIDIDX\x00\x00"


def tokenizer_vocab_size(data: DataConfig, errors: list[str]) -> int | None:
    """The tokenizer's vocabulary size, or None after recording why it is unusable."""
    from tower_megatron.resources import resolve

    tok = data.tokenizer
    if tok.type not in TOKENIZER_TYPES:
        import difflib

        close = difflib.get_close_matches(str(tok.type), TOKENIZER_TYPES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        errors.append(f"data.tokenizer.type={tok.type!r} is not one of {', '.join(TOKENIZER_TYPES)}.{hint}")
    if not tok.path:
        errors.append("data.tokenizer.path is not set")
        return None
    if not Path(resolve(tok.path)).exists():
        errors.append(f"data.tokenizer.path: no such file or directory: {tok.path}")
        return None
    if tok.type not in TOKENIZER_TYPES:
        return None
    from tower_megatron.data.tokenizer import build_tokenizer

    try:
        return int(build_tokenizer(tok).vocab_size)
    except Exception as exc:  # any library's load failure (empty, corrupt file) is a config problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        errors.append(f"data.tokenizer.path: cannot load {tok.path} as {tok.type}: {first}")
        return None


def _stats_for(prefix: str) -> Path | None:
    """The ``stats.json`` of the preprocess output a prefix belongs to
    (``<output_dir>/<source>/<tag>.<split>`` → ``<output_dir>/stats.json``)."""
    for parent in list(Path(prefix).parents)[:2]:
        if (parent / "stats.json").is_file():
            return parent / "stats.json"
    return None


def _max_token_id(prefix: str) -> int | None:
    """The largest token id among the first tokens of ``prefix.bin`` (None: unreadable/empty)."""
    from megatron.core.datasets.indexed_dataset import DType

    bin_path = Path(prefix + ".bin")
    try:
        with open(prefix + ".idx", "rb") as handle:
            header = handle.read(len(_IDX_MAGIC) + 9)
        if (
            len(header) < len(_IDX_MAGIC) + 9
            or not header.startswith(_IDX_MAGIC)
            or not bin_path.stat().st_size
        ):
            return None
        dtype = np.dtype(DType.dtype_from_code(header[-1]))
        count = min(bin_path.stat().st_size // dtype.itemsize, MAX_TOKENS_SCANNED)
        if count == 0:
            return None
        return int(np.fromfile(bin_path, dtype=dtype, count=count).max())
    except (OSError, ValueError, KeyError):
        return None


def check_token_files(key: str, prefix: str, data: DataConfig, vocab_size: int | None) -> list[str]:
    """A token file set made with another tokenizer, or holding ids the vocabulary lacks."""
    from tower_megatron.data.tokenizer import tokenizer_fingerprint

    stats = _stats_for(prefix)
    if stats is not None and data.tokenizer.path:
        try:
            made_with = json.loads(stats.read_text(encoding="utf-8"))["tokenizer"]
        except (OSError, ValueError, KeyError, TypeError):
            return [f"{key}: cannot read the tokenizer record of {stats}"]
        try:
            same = made_with.get("sha256") == tokenizer_fingerprint(data.tokenizer)
        except (OSError, ValueError):
            return []  # the tokenizer itself is reported by tokenizer_vocab_size
        if not same:
            return [
                f"{key}: {prefix} was tokenized with {made_with.get('path')} ({stats}), not "
                f"data.tokenizer.path={data.tokenizer.path}; preprocess again with this tokenizer"
            ]
        return []
    top = _max_token_id(prefix) if vocab_size else None
    if top is not None and vocab_size is not None and top >= vocab_size:
        return [
            f"{key}: {prefix}.bin holds token id {top}, but the tokenizer has {vocab_size} ids "
            "(made with another tokenizer?)"
        ]
    return []


def check_data(data: DataConfig, vocab_size: int | None) -> list[str]:
    """Data files exist (or a mixture recipe will build them) and fit the tokenizer."""
    from tower_megatron.data.gpt_datasets import dataset_spec, missing_token_files, mixture_enabled

    errors: list[str] = []
    if data.num_workers < 0:
        errors.append(f"data.num_workers={data.num_workers} must be ≥ 0")
    mix = data.mixture
    if not mix.temperature > 0:
        errors.append(f"data.mixture.temperature={mix.temperature} must be > 0")
    if not mix.max_epochs > 0:
        errors.append(f"data.mixture.max_epochs={mix.max_epochs} must be > 0")
    for i, src in enumerate(mix.sources):
        if src.weight is not None and not src.weight >= 0:
            errors.append(f"data.mixture.sources[{i}].weight={src.weight} must be ≥ 0")
        if src.tokens is not None and src.tokens < 1:
            errors.append(f"data.mixture.sources[{i}].tokens={src.tokens} must be ≥ 1")
    if not data.paths and not mixture_enabled(data):
        return [*errors, "no training data: set data.paths (IndexedDataset prefixes) or data.mixture"]
    if mixture_enabled(data) and _stats_will_be_built(data, errors):
        return errors
    try:
        spec = dataset_spec(data)
    except (ValueError, FileNotFoundError) as exc:
        return [*errors, str(exc)]
    for name, prefix in data.valid_paths.items():
        missing = missing_token_files(prefix)
        if missing:  # one message per set, whether one or both files are absent
            errors.append(f"data.valid_paths.{name}: missing {' and '.join(missing)}")
    if not mixture_enabled(data):  # the mixture checks its stats' tokenizer itself
        for _, prefix in spec.train_blend:
            errors += check_token_files("data.paths", prefix, data, vocab_size)
    for name, prefix in data.valid_paths.items():
        if not missing_token_files(prefix):
            errors += check_token_files(f"data.valid_paths.{name}", prefix, data, vocab_size)
    return errors


def _stats_will_be_built(data: DataConfig, errors: list[str]) -> bool:
    """A mixture whose ``stats.json`` is missing but whose ``preprocess`` recipe will build it at
    start-up: check that recipe now instead (the token files cannot be checked yet)."""
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig
    from tower_megatron.data.mixture import _stats_path
    from tower_megatron.resources import resolve

    mix = data.mixture
    if not mix.preprocess or all(_stats_path(s).is_file() for s in mix.stats):
        return False
    try:
        load_config(PreprocessConfig, resolve(mix.preprocess))
    except ConfigError as exc:
        errors.append(f"data.mixture.preprocess: {exc}")
    return True


def check_preprocess_config(cfg: PreprocessConfig) -> list[str]:
    """Value checks of a ``preprocess`` job that its source resolution does not cover."""
    errors: list[str] = []
    if cfg.workers < 0:
        errors.append(f"workers={cfg.workers} must be ≥ 0 (0: one per CPU core)")
    if cfg.batch_size < 1:
        errors.append(f"batch_size={cfg.batch_size} must be ≥ 1")
    f = cfg.filters
    if f.normalize not in ("NFC", "NFKC", "none"):
        errors.append(f"filters.normalize={f.normalize!r} is not one of NFC, NFKC, none")
    for key, value in (("filters.min_chars", f.min_chars), ("filters.max_chars", f.max_chars),
                       ("filters.langid.min_chars", f.langid.min_chars)):  # fmt: skip
        if value < 0:
            errors.append(f"{key}={value} must be ≥ 0")
    if f.max_chars and f.max_chars < f.min_chars:
        errors.append(f"filters.max_chars={f.max_chars} is smaller than filters.min_chars={f.min_chars}")
    if f.max_length_ratio and not f.max_length_ratio >= 1:
        errors.append(f"filters.max_length_ratio={f.max_length_ratio} must be 0 (off) or ≥ 1")
    if not 0 <= f.langid.min_prob <= 1:
        errors.append(f"filters.langid.min_prob={f.langid.min_prob} must be in [0, 1]")
    for i, s in enumerate(cfg.sources):
        weights = list(s.template_weights)
        if s.kind == "parallel" and not s.templates:
            errors.append(f"sources[{i}].templates: a parallel source needs at least one template")
        if weights and len(weights) != len(s.templates):
            errors.append(
                f"sources[{i}].template_weights has {len(weights)} entries for {len(s.templates)} templates"
            )
        elif weights and (any(not w >= 0 for w in weights) or not sum(weights) > 0):
            errors.append(f"sources[{i}].template_weights={weights} must be ≥ 0 with a positive sum")
    return errors
