"""Gemma 2 (Tower+ 2B and 9B start here): the family, its HF config and tensor mapping.

Architecture (google/gemma-2-* ``config.json`` and ``transformers``' ``modeling_gemma2``): sandwich
(1 + w) RMSNorms around attention and MLP, GeGLU with tanh GELU, embeddings ×√hidden, tied
embeddings, head_dim independent of hidden/heads, queries scaled by ``query_pre_attn_scalar^-½``,
attention logits soft-capped at 50 and final logits at 30, every other layer (0, 2, …) attending
through a 4096-token sliding window. The modules are in :mod:`tower_megatron.models.modules`.
"""

from __future__ import annotations

from typing import Any

from tower_megatron.config.model import ModelConfig
from tower_megatron.models.family import MODEL_FAMILIES, ModelFamily
from tower_megatron.models.hf_config import build_hf_config, layer_pattern, layer_types, rope_theta
from tower_megatron.models.mapping import TensorMap, standard_maps
from tower_megatron.models.specs import gemma2_layer

_HF_ACTIVATIONS = {"gelu_pytorch_tanh": "geglu", "gelu_tanh": "geglu"}


class Gemma2Family(ModelFamily):
    name = "gemma2"
    hf_model_types = ("gemma2",)
    defaults: dict[str, Any] = dict(
        num_layers=26,
        hidden_size=2304,
        ffn_hidden_size=9216,
        num_attention_heads=8,
        num_query_groups=4,
        kv_channels=256,
        max_position_embeddings=8192,
        normalization="RMSNorm",
        norm_epsilon=1e-6,
        activation="geglu",
        add_bias_linear=False,
        add_qkv_bias=False,
        position_embedding_type="rope",
        rotary_base=10000.0,
        untie_embeddings_and_output_weights=False,
        sliding_window=4096,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
    )
    # HF token ids of the Gemma tokenizer, for configs exported without a source config.json.
    special_tokens = dict(bos_token_id=2, eos_token_id=1, pad_token_id=0)

    def _derive(self, model: ModelConfig) -> None:
        if model.query_pre_attn_scalar is None:
            model.query_pre_attn_scalar = float(model.kv_channels)
        if model.sliding_window and model.sliding_window_pattern is None:
            # Gemma 2 alternates: layers 0, 2, 4, … slide, 1, 3, 5, … see everything.
            model.sliding_window_pattern = [int(i % 2 == 0) for i in range(model.num_layers)]

    def _check(self, model: ModelConfig) -> None:
        super()._check(model)
        if model.normalization != "RMSNorm":
            raise ValueError("gemma2 needs model.normalization=RMSNorm")

    def architecture_kwargs(self, model: ModelConfig) -> dict[str, Any]:
        kwargs = super().architecture_kwargs(model)
        kwargs.update(
            layernorm_zero_centered_gamma=True,
            attn_logit_softcapping=model.attn_logit_softcapping or None,
            final_logit_softcapping=model.final_logit_softcapping or None,
            embedding_multiplier=model.hidden_size**0.5,
        )
        return kwargs

    def layer_spec(self, model: ModelConfig, use_te: bool):
        return gemma2_layer(use_te)

    # ------------------------------------------------------------------ Hugging Face
    def from_hf_config(self, hf: dict[str, Any]) -> dict[str, Any]:
        act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in _HF_ACTIVATIONS:
            raise ValueError(f"gemma2 activation {act!r} is not supported")
        if hf.get("attention_bias"):
            raise ValueError("gemma2 with attention_bias=true is not supported")
        if hf.get("use_bidirectional_attention"):
            raise ValueError("gemma2 with bidirectional attention is not supported")
        layers = hf["num_hidden_layers"]
        heads = hf["num_attention_heads"]
        window = hf.get("sliding_window") or 0
        pattern = layer_pattern(hf.get("layer_types"), layers)
        return dict(
            num_layers=layers,
            hidden_size=hf["hidden_size"],
            ffn_hidden_size=hf["intermediate_size"],
            num_attention_heads=heads,
            num_query_groups=hf.get("num_key_value_heads") or heads,
            kv_channels=hf.get("head_dim") or hf["hidden_size"] // heads,
            vocab_size=hf["vocab_size"],
            max_position_embeddings=hf.get("max_position_embeddings", 8192),
            norm_epsilon=hf.get("rms_norm_eps", 1e-6),
            activation=_HF_ACTIVATIONS[act],
            rotary_base=rope_theta(hf, 10000.0),
            untie_embeddings_and_output_weights=not hf.get("tie_word_embeddings", True),
            sliding_window=window,
            sliding_window_pattern=pattern if window else None,
            attn_logit_softcapping=hf.get("attn_logit_softcapping") or 0.0,
            final_logit_softcapping=hf.get("final_logit_softcapping") or 0.0,
            query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar") or hf.get("head_dim") or 256),
            attention_dropout=float(hf.get("attention_dropout") or 0.0),
        )

    def to_hf_config(self, model: ModelConfig, source: dict[str, Any] | None = None) -> dict[str, Any]:
        fields = {**self.special_tokens, **(source or {})}
        fields.update(
            architectures=["Gemma2ForCausalLM"],
            vocab_size=model.vocab_size,
            hidden_size=model.hidden_size,
            intermediate_size=model.ffn_hidden_size,
            num_hidden_layers=model.num_layers,
            num_attention_heads=model.num_attention_heads,
            num_key_value_heads=model.num_query_groups,
            head_dim=model.kv_channels,
            hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=model.max_position_embeddings,
            rms_norm_eps=model.norm_epsilon,
            rope_parameters={"rope_type": "default", "rope_theta": model.rotary_base},
            tie_word_embeddings=not model.untie_embeddings_and_output_weights,
            attention_bias=False,
            # HF types it as int; Megatron only needs the scale, so ints stay ints.
            query_pre_attn_scalar=_int_if_whole(model.query_pre_attn_scalar),
            sliding_window=model.sliding_window or None,
            layer_types=layer_types(
                model.sliding_window_pattern if model.sliding_window else None, model.num_layers
            ),
            attn_logit_softcapping=model.attn_logit_softcapping or None,
            final_logit_softcapping=model.final_logit_softcapping or None,
        )
        for stale in ("model_type", "rope_theta", "rope_scaling", "hidden_act", "transformers_version"):
            fields.pop(stale, None)
        return build_hf_config("gemma2", fields)

    def tensor_maps(self, model: ModelConfig) -> list[TensorMap]:
        return standard_maps(model, pre_mlp_norm="pre_feedforward_layernorm", sandwich_norms=True)


def _int_if_whole(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


MODEL_FAMILIES.register("gemma2")(Gemma2Family())
