"""Qwen 2 / 2.5 (Tower+ 72B starts from Qwen 2.5 72B): the family, its HF config and mapping.

A Llama layout with bias on the QKV projection only, RoPE base 10⁶, SwiGLU, RMSNorm and grouped
queries; small models (≤ 3B) tie the embeddings, larger ones do not. Megatron-Core's stock GPT
spec covers it (``add_qkv_bias``), so this family only maps names and shapes.
"""

from __future__ import annotations

from typing import Any

from tower_megatron.config.model import ModelConfig
from tower_megatron.models.family import MODEL_FAMILIES, ModelFamily
from tower_megatron.models.hf_config import build_hf_config, layer_pattern, layer_types, rope_theta
from tower_megatron.models.mapping import TensorMap, standard_maps


class Qwen2Family(ModelFamily):
    name = "qwen2"
    hf_model_types = ("qwen2",)
    defaults: dict[str, Any] = dict(
        num_layers=24,
        hidden_size=896,
        ffn_hidden_size=4864,
        num_attention_heads=14,
        num_query_groups=2,
        max_position_embeddings=32768,
        normalization="RMSNorm",
        norm_epsilon=1e-6,
        activation="swiglu",
        add_bias_linear=False,
        add_qkv_bias=True,
        position_embedding_type="rope",
        rotary_base=1000000.0,
        untie_embeddings_and_output_weights=True,
        sliding_window=0,
    )
    special_tokens = dict(bos_token_id=151643, eos_token_id=151643)

    def from_hf_config(self, hf: dict[str, Any]) -> dict[str, Any]:
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"qwen2 activation {act!r} is not supported")
        layers = hf["num_hidden_layers"]
        heads = hf["num_attention_heads"]
        window, pattern = 0, None
        if hf.get("use_sliding_window") and hf.get("sliding_window"):
            window = hf["sliding_window"]
            start = hf.get("max_window_layers", layers)
            pattern = layer_pattern(hf.get("layer_types"), layers) or [int(i >= start) for i in range(layers)]
        return dict(
            num_layers=layers,
            hidden_size=hf["hidden_size"],
            ffn_hidden_size=hf["intermediate_size"],
            num_attention_heads=heads,
            num_query_groups=hf.get("num_key_value_heads") or heads,
            kv_channels=hf.get("head_dim") or hf["hidden_size"] // heads,
            vocab_size=hf["vocab_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            norm_epsilon=hf.get("rms_norm_eps", 1e-6),
            rotary_base=rope_theta(hf, 10000.0),
            untie_embeddings_and_output_weights=not hf.get("tie_word_embeddings", False),
            sliding_window=window,
            sliding_window_pattern=pattern,
            attention_dropout=float(hf.get("attention_dropout") or 0.0),
        )

    def to_hf_config(self, model: ModelConfig, source: dict[str, Any] | None = None) -> dict[str, Any]:
        if model.add_bias_linear or not model.add_qkv_bias or model.activation != "swiglu":
            raise ValueError("this model does not fit the HF Qwen2 layout (QKV bias only, SwiGLU)")
        fields = {**self.special_tokens, **(source or {})}
        sliding = bool(model.sliding_window)
        fields.update(
            architectures=["Qwen2ForCausalLM"],
            vocab_size=model.vocab_size,
            hidden_size=model.hidden_size,
            intermediate_size=model.ffn_hidden_size,
            num_hidden_layers=model.num_layers,
            num_attention_heads=model.num_attention_heads,
            num_key_value_heads=model.num_query_groups,
            hidden_act="silu",
            max_position_embeddings=model.max_position_embeddings,
            rms_norm_eps=model.norm_epsilon,
            rope_parameters={"rope_type": "default", "rope_theta": model.rotary_base},
            tie_word_embeddings=not model.untie_embeddings_and_output_weights,
            use_sliding_window=sliding,
            sliding_window=model.sliding_window if sliding else None,
            layer_types=layer_types(model.sliding_window_pattern if sliding else None, model.num_layers),
        )
        if model.kv_channels != model.hidden_size // model.num_attention_heads:
            fields["head_dim"] = model.kv_channels
        # Readers that ignore layer_types (transformers before it existed, some serving stacks)
        # place the windows by max_window_layers; without it HF's default 28 comes back.
        fields["max_window_layers"] = max_window_layers(
            model.sliding_window_pattern if sliding else None, model.num_layers
        )
        for stale in ("model_type", "rope_theta", "rope_scaling", "transformers_version"):
            fields.pop(stale, None)
        return build_hf_config("qwen2", fields)

    def tensor_maps(self, model: ModelConfig) -> list[TensorMap]:
        return standard_maps(model, pre_mlp_norm="post_attention_layernorm", sandwich_norms=False)


def max_window_layers(pattern: list[int] | None, num_layers: int) -> int:
    """Qwen 2's ``max_window_layers``: layers ``i >= max_window_layers`` use the sliding window.

    Exact for the patterns Qwen 2 produces (full attention first, windows after); any other
    pattern is carried by ``layer_types`` only, and this names its first sliding layer.
    """
    sliding = [i for i, p in enumerate(pattern or []) if p]
    return sliding[0] if sliding else num_layers


MODEL_FAMILIES.register("qwen2")(Qwen2Family())
