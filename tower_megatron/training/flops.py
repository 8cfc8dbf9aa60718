"""Training FLOPs per token for MFU (forward + backward = 3 × forward matmul FLOPs)."""

from __future__ import annotations

from tower_megatron.config.model import ModelConfig


def flops_per_token(model: ModelConfig, seq_length: int) -> float:
    """Matmul FLOPs of one training token: 6 × (dense weights touched) + causal attention.

    Counts QKV/output projections (with GQA), the MLP (×1.5 for gated units), the LM head and
    the attention score/value products (halved for causal masking).
    """
    h, layers = model.hidden_size, model.num_layers
    heads, groups, head_dim = (
        model.num_attention_heads,
        model.num_query_groups or model.num_attention_heads,
        model.kv_channels,
    )
    gated = model.activation in ("swiglu", "geglu")
    attn_proj = h * head_dim * (heads + 2 * groups) + heads * head_dim * h
    mlp = h * model.ffn_hidden_size * (3 if gated else 2)
    lm_head = h * (model.vocab_size or 0)
    dense = layers * (attn_proj + mlp) + lm_head
    attention = layers * 2 * heads * head_dim * seq_length  # QK^T and AV, causal half of 4·s·d
    return 6.0 * dense + 3.0 * attention
