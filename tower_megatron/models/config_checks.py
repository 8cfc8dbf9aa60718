"""Checks of a job's ``model:`` section against its parallel layout, sequence length and
tokenizer, beside the model families that define what is valid. Called by
:func:`tower_megatron.config.validate.validate_job` before anything starts; returns messages,
each naming its key.
"""

from __future__ import annotations

import difflib
from typing import Any

from tower_megatron.config.model import ModelConfig
from tower_megatron.config.schema import ParallelConfig, TrainConfig
from tower_megatron.models.family import MODEL_FAMILIES, resolve_model_config

TRANSFORMER_IMPLS = ("auto", "local", "transformer_engine")
FP8_FORMATS = ("e4m3", "hybrid")
FP8_RECIPES = ("delayed", "tensorwise", "blockwise", "mxfp8")
RECOMPUTE = ("selective", "full")


def _not_in(key: str, value: Any, choices: tuple[str, ...]) -> list[str]:
    if value in choices:
        return []
    close = difflib.get_close_matches(str(value), choices, n=1)
    return [
        f"{key}={value!r} is not one of {', '.join(choices)}."
        + (f" Did you mean '{close[0]}'?" if close else "")
    ]


def _model_ranges(m: ModelConfig) -> list[str]:
    errors = []
    for key in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                "kv_channels", "vocab_size", "max_position_embeddings", "make_vocab_size_divisible_by"):  # fmt: skip
        value = getattr(m, key)
        if value is not None and value < 1:
            errors.append(f"model.{key}={value} must be ≥ 1")
    for key in ("hidden_dropout", "attention_dropout"):
        value = getattr(m, key)
        if not 0 <= value < 1:
            errors.append(f"model.{key}={value} must be in [0, 1)")
    for key in ("init_method_std", "norm_epsilon", "rotary_base"):
        value = getattr(m, key)
        if value is not None and not value > 0:
            errors.append(f"model.{key}={value} must be > 0")
    for key in ("sliding_window", "attn_logit_softcapping", "final_logit_softcapping"):
        value = getattr(m, key)
        if value is not None and value < 0:
            errors.append(f"model.{key}={value} must be ≥ 0 (0: off)")
    return errors


def check_model_config(
    cfg: ModelConfig, par: ParallelConfig, train: TrainConfig, vocab_size: int | None, on_cpu: bool
) -> list[str]:
    """Problems of a job's ``model:`` section against its parallel layout and tokenizer, each
    naming its key (called by ``validate_job`` before anything starts)."""
    errors = _not_in("model.transformer_impl", cfg.transformer_impl, TRANSFORMER_IMPLS)
    if cfg.recompute_granularity is not None:
        errors += _not_in("model.recompute_granularity", cfg.recompute_granularity, RECOMPUTE)
    if cfg.arch not in MODEL_FAMILIES:
        errors.append(f"model.arch: {MODEL_FAMILIES.unknown_message(cfg.arch)}")
    fp8 = cfg.fp8
    if fp8.format is not None:
        errors += _not_in("model.fp8.format", fp8.format, FP8_FORMATS)
        errors += _not_in("model.fp8.recipe", fp8.recipe, FP8_RECIPES)
        if on_cpu:
            errors.append(
                f"model.fp8.format={fp8.format!r} but this run is on CPU: FP8 needs Transformer Engine "
                "on a GPU (unset model.fp8.format for CPU runs)"
            )
        if fp8.param and not par.use_distributed_optimizer:
            errors.append("model.fp8.param=true needs parallel.use_distributed_optimizer=true")
    if on_cpu and cfg.transformer_impl == "transformer_engine":
        errors.append("model.transformer_impl=transformer_engine needs a GPU; use auto or local on CPU")
    ranges = _model_ranges(cfg)
    if ranges or cfg.arch not in MODEL_FAMILIES:
        return errors + ranges  # resolving would only fail on the same values
    try:
        model = resolve_model_config(cfg, vocab_size)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        text = str(exc)
        if not text.startswith("model."):
            key = "model.preset" if "preset" in text else "model.hf_config" if cfg.hf_config else "model"
            text = f"{key}: {text}"
        return [*errors, text]
    errors += _model_ranges(model)
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    vpp = par.virtual_pipeline_model_parallel_size
    if errors or min(tp, pp) < 1:
        return errors
    if model.num_layers % (pp * (vpp or 1)):
        errors.append(
            f"model.num_layers={model.num_layers} is not divisible by "
            + (
                f"parallel.pipeline_model_parallel_size × virtual_pipeline_model_parallel_size = {pp}×{vpp}"
                if vpp
                else f"parallel.pipeline_model_parallel_size={pp}"
            )
        )
    if model.num_attention_heads % tp:
        errors.append(
            f"model.num_attention_heads={model.num_attention_heads} is not divisible by "
            f"parallel.tensor_model_parallel_size={tp}"
        )
    elif model.num_query_groups and model.num_query_groups % tp:
        # Only when the heads divide: with plain multi-head attention groups == heads and a
        # second message would repeat the first.
        errors.append(
            f"model.num_query_groups={model.num_query_groups} is not divisible by "
            f"parallel.tensor_model_parallel_size={tp}"
        )
    if model.max_position_embeddings and train.seq_length > model.max_position_embeddings:
        errors.append(
            f"train.seq_length={train.seq_length} exceeds model.max_position_embeddings={model.max_position_embeddings}"
        )
    return errors
