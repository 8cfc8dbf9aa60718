"""Parameter counts and training FLOPs of a resolved model config.

:func:`count_parameters` is closed-form (cheap, usable anywhere); :func:`count_parameters_on_meta`
builds the real Megatron model on the meta device — no weight memory — and counts its parameters,
which the tests use to pin the formula to the modules (and to the published sizes).
"""

from __future__ import annotations

import dataclasses

import torch

from tower_megatron.config.model import ModelConfig


def _layer_parameters(model: ModelConfig) -> int:
    h, d, f = model.hidden_size, model.kv_channels, model.ffn_hidden_size
    q, kv = model.num_attention_heads * d, model.num_query_groups * d
    gated = model.activation in ("swiglu", "geglu")
    attention = h * (q + 2 * kv) + q * h
    if model.add_qkv_bias or model.add_bias_linear:
        attention += q + 2 * kv
    if model.add_bias_linear:
        attention += h
    mlp = h * f * (3 if gated else 2)
    if model.add_bias_linear:
        mlp += f * (2 if gated else 1) + h
    norm = h if model.normalization == "RMSNorm" else 2 * h
    sandwich = model.arch == "gemma2"  # post-attention and post-MLP norms
    return attention + mlp + norm * (4 if sandwich else 2)


def count_parameters(model: ModelConfig, vocab_size: int | None = None) -> int:
    """Parameters of the whole model (all TP/PP shards; tied embeddings counted once).

    ``vocab_size``: the padded embedding size if you want it counted (default the model's).
    """
    vocab = vocab_size or model.vocab_size or 0
    embeddings = vocab * model.hidden_size
    if model.untie_embeddings_and_output_weights:
        embeddings *= 2
    if model.position_embedding_type == "learned_absolute":
        embeddings += model.max_position_embeddings * model.hidden_size
    final_norm = model.hidden_size * (1 if model.normalization == "RMSNorm" else 2)
    return model.num_layers * _layer_parameters(model) + embeddings + final_norm


def count_parameters_on_meta(model: ModelConfig, vocab_size: int | None = None) -> int:
    """Builds the model (TP=1, PP=1, local spec) on the meta device and counts its parameters.

    Needs Megatron's parallel state at TP=PP=1 (e.g. ``init_runtime(device="cpu")`` in a world of
    one); allocates no parameter memory whatever the model size.
    """
    from tower_megatron.config.schema import ParallelConfig, TrainConfig
    from tower_megatron.models.family import MODEL_FAMILIES

    model = dataclasses.replace(model, transformer_impl="local")
    family = MODEL_FAMILIES.get(model.arch)
    config = family.transformer_config(
        model,
        ParallelConfig(),
        TrainConfig(precision="bf16"),
        perform_initialization=False,
        init_model_with_meta_device=True,
    )
    with torch.device("meta"):
        module = family.build(model, config, True, True, None, vocab_size or model.vocab_size)
    params = list(module.parameters())
    if any(not p.is_meta for p in params):
        raise RuntimeError("a parameter was allocated outside the meta device")
    return sum(p.numel() for p in params)


def _mean_context(seq_length: int, window: int | None) -> float:
    """Keys a query attends to on average under causal masking (and a sliding window)."""
    s = seq_length
    if not window or window >= s:
        return (s + 1) / 2
    return (window * (window + 1) / 2 + (s - window) * window) / s


def flops_per_token(model: ModelConfig, seq_length: int) -> float:
    """Model FLOPs of one training token (forward + backward = 3× forward; no recompute).

    2 FLOPs per multiply-add of every weight matrix a token meets (QKV with GQA, output
    projection, MLP — ×3/2 for gated units —, LM head) plus the attention products QKᵀ and AV
    over the keys each query actually attends to: half the sequence under causal masking,
    at most the window on Gemma 2's sliding-window layers. Embedding lookups, norms and
    soft-capping are negligible and not counted.
    """
    h, d, f = model.hidden_size, model.kv_channels, model.ffn_hidden_size
    q, kv = model.num_attention_heads * d, model.num_query_groups * d
    gated = model.activation in ("swiglu", "geglu")
    dense = h * (q + 2 * kv) + q * h + h * f * (3 if gated else 2)
    pattern = model.sliding_window_pattern or [0] * model.num_layers
    attention = 0.0
    for sliding in pattern:
        window = model.sliding_window if (sliding and model.sliding_window) else None
        attention += 2 * 2 * q * _mean_context(seq_length, window)  # QKᵀ and AV
    forward = 2.0 * (model.num_layers * dense + h * (model.vocab_size or 0)) + attention
    return 3.0 * forward
