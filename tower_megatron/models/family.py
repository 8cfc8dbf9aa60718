"""A model family = how a ``model:`` config becomes a Megatron-Core model.

Each family (``gpt``, ``gemma2``, ``qwen2``) is registered by name in :data:`MODEL_FAMILIES`
and supplies defaults, a ``TransformerConfig``, a ``ModuleSpec`` (Transformer Engine on GPU, local
modules on CPU) and the model object. The trainer only calls :func:`build_model_provider`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_config import TransformerConfig

from tower_megatron.config.model import ModelConfig
from tower_megatron.config.schema import ParallelConfig, TrainConfig
from tower_megatron.registry import Registry

MODEL_FAMILIES: Registry[ModelFamily] = Registry("model arch")


def te_available() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def use_transformer_engine(model: ModelConfig) -> bool:
    """``auto`` picks Transformer Engine when it imports and a GPU is present."""
    if model.transformer_impl == "local":
        return False
    if model.transformer_impl == "transformer_engine":
        if not te_available():
            raise RuntimeError("model.transformer_impl=transformer_engine but TE is not importable on a GPU")
        return True
    return te_available()


def pad_vocab(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Pads the embedding so every TP shard has the same size.

    Megatron-LM pads to a multiple of ``divisible_by × tp``, which gives the model a different
    number of (softmax-visible) padding rows at each TP size. A multiple of lcm(divisible_by, tp)
    keeps one shape for every TP that divides ``divisible_by``, so TP=1 and TP=8 are the same
    model and checkpoints move between them unchanged.
    """
    multiple = math.lcm(divisible_by, tp)
    return ((vocab_size + multiple - 1) // multiple) * multiple


class ModelFamily:
    """Base family: a Llama-style GPT (RMSNorm, SwiGLU, RoPE) built from Megatron's local spec."""

    name = "gpt"
    defaults: dict[str, Any] = dict(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        max_position_embeddings=4096,
        normalization="RMSNorm",
        norm_epsilon=1e-5,
        activation="swiglu",
        add_bias_linear=False,
        add_qkv_bias=False,
        position_embedding_type="rope",
        rotary_base=10000.0,
        untie_embeddings_and_output_weights=True,
    )

    # ------------------------------------------------------------------ resolution
    def resolve(self, cfg: ModelConfig, vocab_size: int | None = None) -> ModelConfig:
        """A copy of ``cfg`` with every ``None`` architecture field filled in."""
        values = {k: v for k, v in self.defaults.items()}
        values.update(
            {
                f.name: getattr(cfg, f.name)
                for f in dataclasses.fields(cfg)
                if getattr(cfg, f.name) is not None
            }
        )
        out = dataclasses.replace(cfg, **{k: v for k, v in values.items() if hasattr(cfg, k)})
        if out.num_query_groups is None:
            out.num_query_groups = out.num_attention_heads
        if out.kv_channels is None:
            out.kv_channels = out.hidden_size // out.num_attention_heads
        if out.ffn_hidden_size is None:
            out.ffn_hidden_size = 4 * out.hidden_size
        if out.vocab_size is None:
            out.vocab_size = vocab_size
        return out

    # ------------------------------------------------------------------ Megatron objects
    def activation(self, name: str) -> tuple[Callable, bool]:
        """(activation function, gated_linear_unit)."""
        table = {
            "swiglu": (F.silu, True),
            "geglu": (lambda x: F.gelu(x, approximate="tanh"), True),
            "gelu": (F.gelu, False),
            "relu": (F.relu, False),
        }
        if name not in table:
            raise ValueError(f"unknown model.activation {name!r}; known: {', '.join(table)}")
        return table[name]

    def transformer_config(
        self, model: ModelConfig, parallel: ParallelConfig, train: TrainConfig, **extra: Any
    ) -> TransformerConfig:
        act, gated = self.activation(model.activation)
        bf16 = train.precision == "bf16"
        dtype = torch.bfloat16 if bf16 else torch.float32
        fp8 = model.fp8.format if use_transformer_engine(model) else None
        kwargs: dict[str, Any] = dict(
            num_layers=model.num_layers,
            hidden_size=model.hidden_size,
            ffn_hidden_size=model.ffn_hidden_size,
            num_attention_heads=model.num_attention_heads,
            num_query_groups=model.num_query_groups,
            kv_channels=model.kv_channels,
            normalization=model.normalization,
            layernorm_epsilon=model.norm_epsilon,
            activation_func=act,
            gated_linear_unit=gated,
            add_bias_linear=model.add_bias_linear,
            add_qkv_bias=model.add_qkv_bias,
            init_method_std=model.init_method_std,
            hidden_dropout=model.hidden_dropout,
            attention_dropout=model.attention_dropout,
            bias_activation_fusion=False,
            masked_softmax_fusion=False,
            bias_dropout_fusion=False,
            apply_rope_fusion=False,
            persist_layer_norm=False,
            tensor_model_parallel_size=parallel.tensor_model_parallel_size,
            pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
            virtual_pipeline_model_parallel_size=parallel.virtual_pipeline_model_parallel_size,
            context_parallel_size=parallel.context_parallel_size,
            sequence_parallel=parallel.sequence_parallel,
            pipeline_dtype=dtype,
            params_dtype=dtype,
            bf16=bf16,
            fp16=False,
            # Building each full weight on CPU and then splitting it makes TP=N start from the
            # same weights as TP=1 (MCORE_ON_CPU.md); on GPU it is the slower but exact path.
            use_cpu_initialization=True,
            recompute_granularity=model.recompute_granularity,
            recompute_method="uniform" if model.recompute_granularity == "full" else None,
            recompute_num_layers=1 if model.recompute_granularity == "full" else None,
        )
        if fp8:
            kwargs.update(
                fp8=fp8,
                fp8_recipe=model.fp8.recipe,
                fp8_margin=model.fp8.margin,
                fp8_amax_history_len=model.fp8.amax_history_len,
                fp8_amax_compute_algo=model.fp8.amax_compute_algo,
                fp8_param=model.fp8.param,
                first_last_layers_bf16=model.fp8.first_last_layers_bf16,
            )
        kwargs.update(extra)
        return TransformerConfig(**kwargs)

    def layer_spec(self, model: ModelConfig, config: TransformerConfig, vp_stage: int | None):
        from megatron.core.models.gpt import gpt_layer_specs as specs

        if use_transformer_engine(model):
            return specs.get_gpt_layer_with_transformer_engine_spec()
        return specs.get_gpt_layer_local_spec(normalization=model.normalization)

    def build(
        self,
        model: ModelConfig,
        config: TransformerConfig,
        pre_process: bool,
        post_process: bool,
        vp_stage: int | None = None,
        padded_vocab_size: int | None = None,
    ) -> torch.nn.Module:
        from megatron.core.models.gpt import GPTModel

        return GPTModel(
            config=config,
            transformer_layer_spec=self.layer_spec(model, config, vp_stage),
            vocab_size=padded_vocab_size or model.vocab_size,
            max_sequence_length=model.max_position_embeddings,
            pre_process=pre_process,
            post_process=post_process,
            share_embeddings_and_output_weights=not model.untie_embeddings_and_output_weights,
            position_embedding_type=model.position_embedding_type,
            rotary_base=int(model.rotary_base),
            vp_stage=vp_stage,
        )


MODEL_FAMILIES.register("gpt")(ModelFamily())


def resolve_model_config(cfg: ModelConfig, vocab_size: int | None = None) -> ModelConfig:
    return MODEL_FAMILIES.get(cfg.arch).resolve(cfg, vocab_size)
