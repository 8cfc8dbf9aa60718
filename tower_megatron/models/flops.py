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


def flops_per_token(model: ModelConfig, seq_length: int, vocab_size: int | None = None) -> float:
    """Model FLOPs of one training token, by Megatron-LM's formula, so MFU compares with
    published Megatron figures.

    Megatron-LM ``megatron/training/training.py`` ``num_floating_point_operations`` (dense
    transformer branch; read at commit 001b00c of NVIDIA/Megatron-LM): every GEMM counts
    2 FLOPs per multiply-add and 3 times (forward, weight-gradient, data-gradient backward);
    per layer the QKV projection (GQA-sized), the core attention ``QKᵀ`` and ``AV`` over
    ``seq_length / 2`` keys (causal masking: Megatron-LM halves it), the output projection and
    the MLP (×3 GEMMs for gated units, ×2 otherwise); plus the LM head over the (padded)
    vocabulary. Like Megatron-LM, sliding windows (Gemma 2) are not discounted, and activation
    recomputation is not counted (model FLOPs, not hardware FLOPs). ``vocab_size``: the padded
    embedding size (default: the model's).
    """
    h, d, f = model.hidden_size, model.kv_channels, model.ffn_hidden_size
    q, kv = model.num_attention_heads * d, model.num_query_groups * d
    gemms = 3 * 2  # forward + two backward GEMMs, 2 FLOPs per multiply-add
    ffn_gemms = 3 if model.activation in ("swiglu", "geglu") else 2
    attention = h * (q + 2 * kv) + q * (seq_length / 2) * 2 + q * h
    mlp = h * f * ffn_gemms
    logits = h * (vocab_size or model.vocab_size or 0)
    return float(gemms * (model.num_layers * (attention + mlp) + logits))
