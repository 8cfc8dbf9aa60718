"""Megatron-Core ``GPTDataset``s for the trainer: one blended training set and one validation set
per name (language or pair direction), so validation loss can be logged per language."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tower_megatron.config.data import DataConfig


@dataclass
class DatasetSpec:
    """What the trainer needs built: a blend for training, named prefixes for validation."""

    train_blend: list[tuple[float, str]]
    valid_sets: dict[str, str]


def missing_token_files(prefix: str) -> list[str]:
    """The ``.bin``/``.idx`` files of an IndexedDataset prefix that do not exist."""
    return [prefix + suffix for suffix in (".bin", ".idx") if not Path(prefix + suffix).is_file()]


def parse_blend(paths: list[str]) -> list[tuple[float, str]]:
    """Megatron-LM ``--data-path`` syntax: ``[w1, p1, w2, p2]`` or plain ``[p1, p2]`` (equal)."""
    if not paths:
        return []

    def is_number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    if is_number(str(paths[0])):
        if len(paths) % 2:
            raise ValueError("data.paths: weighted form needs pairs of weight, prefix")
        pairs = [(float(paths[i]), str(paths[i + 1])) for i in range(0, len(paths), 2)]
    else:
        pairs = [(1.0, str(p)) for p in paths]
    for weight, prefix in pairs:
        if weight < 0:
            raise ValueError(f"data.paths: negative weight {weight} for {prefix}")
        missing = missing_token_files(prefix)
        if missing:
            raise FileNotFoundError(f"data.paths: missing {missing[0]}")
    return pairs


def mixture_enabled(data: DataConfig) -> bool:
    return bool(data.mixture.sources)


def dataset_spec(data: DataConfig) -> DatasetSpec:
    """From ``data.paths``/``data.valid_paths``, or the resolved ``data.mixture`` when set
    (its named validation sets first, then any extra ``data.valid_paths``)."""
    if mixture_enabled(data):
        from tower_megatron.data.mixture import resolve_mixture

        resolved = resolve_mixture(data)
        return DatasetSpec(list(resolved.train_blend), {**resolved.valid_sets, **data.valid_paths})
    return DatasetSpec(parse_blend(list(data.paths)), dict(data.valid_paths))


def prepare_mixture(data: DataConfig, total_tokens: int, report_dir: Path | None) -> None:
    """Rank 0, before the datasets are built: preprocess missing token files when the mixture
    names a recipe, warn about over-repeated sources and write the mixture report."""
    if not mixture_enabled(data):
        return
    from tower_megatron.data.mixture import resolve_mixture

    resolved = resolve_mixture(data, total_tokens, report_dir=report_dir, run_preprocess=True)
    for note in resolved.warnings:
        print(note, flush=True)


def _gpt_config(data: DataConfig, tokenizer: Any, seq_length: int, seed: int, cache: str, **kw: Any):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        tokenizer=tokenizer,
        reset_position_ids=data.reset_position_ids,
        reset_attention_mask=data.reset_attention_mask,
        eod_mask_loss=data.eod_mask_loss,
        create_attention_mask=False,  # causal masking happens inside attention
        path_to_cache=cache,
        mid_level_dataset_surplus=0.005,
        **kw,
    )


def _build(config: Any, sizes: list[int | None]) -> list[Any]:
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset

    return BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()


def build_gpt_datasets(
    data: DataConfig,
    tokenizer: Any,
    seq_length: int,
    train_samples: int,
    valid_samples: int,
    seed: int,
    cache_dir: str,
) -> tuple[Any, dict[str, Any]]:
    """(training dataset, {validation name: dataset}).

    With named validation sets, the whole of each training prefix trains (split "100,0,0");
    without them, ``data.split`` carves a validation split named ``valid`` out of the blend.
    """
    spec = dataset_spec(data)
    if not spec.train_blend:
        raise ValueError("no training data: set data.paths or data.mixture")
    weights = [w for w, _ in spec.train_blend]
    prefixes = [p for _, p in spec.train_blend]
    blend = (prefixes, weights if len(prefixes) > 1 else None)
    split = "100,0,0" if spec.valid_sets else _train_valid_split(data.split, prefixes)
    config = _gpt_config(data, tokenizer, seq_length, seed, cache_dir, blend=blend, split=split)
    train, valid, _ = _build(config, [train_samples, 0 if spec.valid_sets else valid_samples, 0])
    valid_sets: dict[str, Any] = {}
    if valid is not None and not spec.valid_sets:
        valid_sets["valid"] = valid
    for name, prefix in spec.valid_sets.items():
        parse_blend([prefix])  # existence check with a clear message
        cfg = _gpt_config(
            data, tokenizer, seq_length, seed, cache_dir, blend=([prefix], None), split="0,100,0"
        )
        _, ds, _ = _build(cfg, [0, valid_samples, 0])
        valid_sets[name] = ds
    return train, valid_sets


def _train_valid_split(split: str, prefixes: list[str]) -> str:
    """``data.split`` without its test part (never read), checked so that no prefix gets an
    empty validation split: Megatron would loop forever sizing an epoch of zero tokens."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    parts = [float(x) for x in split.replace("/", ",").split(",")]
    if len(parts) != 3 or min(parts) < 0 or sum(parts[:2]) <= 0:
        raise ValueError(f"data.split={split!r} must be three non-negative weights like 969,30,1")
    train_w, valid_w = parts[0], parts[1]
    if valid_w > 0:
        total = sum(parts)
        for prefix in prefixes:
            docs = len(IndexedDataset(prefix).document_indices) - 1
            begin, end = round(train_w / total * docs), round((train_w + valid_w) / total * docs)
            if end <= begin:
                raise ValueError(
                    f"data.split={split!r} leaves no validation documents in {prefix} ({docs} documents); "
                    "raise the validation share or name validation sets in data.valid_paths"
                )
    return f"{train_w:g},{valid_w:g},0"
