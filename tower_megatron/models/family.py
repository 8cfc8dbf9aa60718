"""A model family = how a ``model:`` config becomes a Megatron-Core model (and maps to HF).

Each family (``gpt``, ``gemma2``, ``qwen2``) is registered by name in :data:`MODEL_FAMILIES` and
supplies defaults, a ``TransformerConfig``, a ``ModuleSpec`` (Transformer Engine on GPU, local
modules on CPU), the model object and, for HF families, the ``config.json`` and tensor mapping.

Resolution order for every architecture field: explicit ``model.*`` value ← ``model.preset`` or
``model.hf_config`` ← family defaults. A preset or HF config of another family switches the
default ``gpt`` arch to that family, so always build from the *resolved* config's ``arch``.
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
from tower_megatron.models.hf_config import read_hf_config
from tower_megatron.models.mapping import TensorMap
from tower_megatron.models.modules import TowerGPTModel, TowerTransformerConfig, gelu_tanh
from tower_megatron.models.presets import PRESETS
from tower_megatron.models.specs import block_spec, llama_layer
from tower_megatron.registry import Registry

MODEL_FAMILIES: Registry[ModelFamily] = Registry("model arch")


def _device_type(device: torch.device | str | None) -> str:
    if device is None:  # outside a run: the device the runtime decided (or would decide)
        from tower_megatron.runtime import runtime_device

        return runtime_device().type
    return torch.device(device).type


def te_available(device: torch.device | str | None = None) -> bool:
    """Transformer Engine imports and ``device`` (default: the runtime's) is a GPU."""
    if _device_type(device) != "cuda":
        return False
    try:
        import transformer_engine  # noqa: F401
    except Exception:
        return False
    return True


def use_transformer_engine(model: ModelConfig, device: torch.device | str | None = None) -> bool:
    """``auto`` picks Transformer Engine when it imports and ``device`` is a GPU; a CPU device
    always gets the local specs (``run.device=cpu`` on a GPU host included)."""
    if model.transformer_impl == "local":
        return False
    if model.transformer_impl == "transformer_engine":
        if not te_available(device):
            raise RuntimeError(
                "model.transformer_impl=transformer_engine but TE is not importable or the run's "
                f"device is not a GPU ({_device_type(device)})"
            )
        return True
    return te_available(device)


FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0), Blackwell
MXFP8_MIN_CAPABILITY = (10, 0)  # block-scaled MXFP8: Blackwell only


def fp8_problem(model: ModelConfig, device: torch.device | str | None = None) -> str | None:
    """Why ``model.fp8`` cannot run on ``device`` (default: the runtime's), or None when it can.

    FP8 needs Transformer Engine layers on a GPU of compute capability ≥ 8.9 (≥ 10.0 for the
    ``mxfp8`` recipe). Every caller that trains with FP8 must either get it or this reason —
    never a silent bf16 run.
    """
    fmt = model.fp8.format
    if fmt is None:
        return None
    where = f"model.fp8.format={fmt!r}"
    kind = _device_type(device)
    if kind != "cuda":
        return f"{where} needs a GPU, but the run's device is {kind} (unset model.fp8.format for CPU runs)"
    if model.transformer_impl == "local":
        return f"{where} needs Transformer Engine layers, but model.transformer_impl='local'"
    try:
        import transformer_engine  # noqa: F401
    except Exception as exc:
        return f"{where} needs Transformer Engine, which does not import ({exc}); pip install -e '.[gpu]'"
    index = torch.device(device).index if device is not None else None
    capability = torch.cuda.get_device_capability(index)
    need = MXFP8_MIN_CAPABILITY if model.fp8.recipe == "mxfp8" else FP8_MIN_CAPABILITY
    if capability < need:
        return (
            f"{where} (recipe {model.fp8.recipe}) needs a GPU of compute capability ≥ {need[0]}.{need[1]}; "
            f"{torch.cuda.get_device_name(index)} is {capability[0]}.{capability[1]}"
        )
    return None


def pad_vocab(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Pads the embedding so every TP shard has the same size.

    Megatron-LM pads to a multiple of ``divisible_by × tp``, which gives the model a different
    number of (softmax-visible) padding rows at each TP size. A multiple of lcm(divisible_by, tp)
    keeps one shape for every TP that divides ``divisible_by``, so TP=1 and TP=8 are the same
    model and checkpoints move between them unchanged.
    """
    multiple = math.lcm(divisible_by, tp)
    return ((vocab_size + multiple - 1) // multiple) * multiple


ACTIVATIONS: dict[str, tuple[Callable, bool]] = {  # name → (function, gated_linear_unit)
    "swiglu": (F.silu, True),
    "geglu": (gelu_tanh, True),
    "gelu": (F.gelu, False),
    "relu": (F.relu, False),
}


class ModelFamily:
    """Base family: a Llama-style GPT (RMSNorm, SwiGLU, RoPE) built from the ``llama`` spec."""

    name = "gpt"
    hf_model_types: tuple[str, ...] = ()  # HF ``model_type`` values this family reads
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
        sliding_window=0,
    )

    # ------------------------------------------------------------------ resolution
    def resolve(self, cfg: ModelConfig, vocab_size: int | None = None) -> ModelConfig:
        """A copy of ``cfg`` with every ``None`` architecture field filled in.

        ``vocab_size`` (the tokenizer's) is used only when neither the config, the preset nor the
        HF config fixes the embedding size, and must fit in it.
        """
        source_arch, source, origin = self._source(cfg)
        if source_arch is not None and source_arch != self.name:
            if self.name != "gpt":
                raise ValueError(f"model.arch={self.name} but {origin} describes a {source_arch} model")
            return MODEL_FAMILIES.get(source_arch).resolve(
                dataclasses.replace(cfg, arch=source_arch), vocab_size
            )
        values = {**self.defaults, **source}
        values.update(
            {
                f.name: getattr(cfg, f.name)
                for f in dataclasses.fields(cfg)
                if getattr(cfg, f.name) is not None
            }
        )
        out = dataclasses.replace(cfg, **{k: v for k, v in values.items() if hasattr(cfg, k)})
        out.arch = self.name
        if out.num_query_groups is None:
            out.num_query_groups = out.num_attention_heads
        if out.kv_channels is None:
            out.kv_channels = out.hidden_size // out.num_attention_heads
        if out.ffn_hidden_size is None:
            out.ffn_hidden_size = 4 * out.hidden_size
        if out.vocab_size is None:
            out.vocab_size = vocab_size
        elif vocab_size is not None and vocab_size > out.vocab_size:
            raise ValueError(
                f"the tokenizer has {vocab_size} tokens but the model's embedding has {out.vocab_size} rows"
                f" (from {origin or 'model.vocab_size'})"
            )
        self._derive(out)
        self._check(out)
        return out

    def _source(self, cfg: ModelConfig) -> tuple[str | None, dict[str, Any], str]:
        if cfg.preset and cfg.hf_config:
            raise ValueError("set model.preset or model.hf_config, not both")
        if cfg.preset:
            preset = PRESETS.get(cfg.preset)
            return preset.arch, dict(preset.fields), f"model.preset={cfg.preset}"
        if cfg.hf_config:
            hf = read_hf_config(cfg.hf_config)
            family = family_for_hf_config(hf)
            return family.name, family.from_hf_config(hf), f"model.hf_config={cfg.hf_config}"
        return None, {}, ""

    def _derive(self, model: ModelConfig) -> None:
        """Family-specific fields computed from others (after presets and overrides)."""
        if model.sliding_window and model.sliding_window_pattern is None:
            model.sliding_window_pattern = [1] * model.num_layers

    def _check(self, model: ModelConfig) -> None:
        if model.num_attention_heads % model.num_query_groups:
            raise ValueError(
                f"model.num_attention_heads={model.num_attention_heads} is not a multiple of "
                f"model.num_query_groups={model.num_query_groups}"
            )
        pattern = model.sliding_window_pattern
        if model.sliding_window and pattern is not None and len(pattern) != model.num_layers:
            raise ValueError(
                f"model.sliding_window_pattern has {len(pattern)} entries for {model.num_layers} layers"
            )
        if model.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown model.activation {model.activation!r}; known: {', '.join(ACTIVATIONS)}"
            )

    # ------------------------------------------------------------------ HF side (overridden)
    def from_hf_config(self, hf: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError(f"model arch {self.name!r} has no Hugging Face mapping")

    def to_hf_config(self, model: ModelConfig, source: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError(f"model arch {self.name!r} has no Hugging Face mapping")

    def tensor_maps(self, model: ModelConfig) -> list[TensorMap]:
        raise NotImplementedError(f"model arch {self.name!r} has no Hugging Face mapping")

    # ------------------------------------------------------------------ Megatron objects
    def activation(self, name: str) -> tuple[Callable, bool]:
        """(activation function, gated_linear_unit)."""
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown model.activation {name!r}; known: {', '.join(ACTIVATIONS)}")
        return ACTIVATIONS[name]

    def architecture_kwargs(self, model: ModelConfig) -> dict[str, Any]:
        """``TransformerConfig`` fields beyond the GPT basics (windows, caps, scales)."""
        kwargs: dict[str, Any] = {}
        if model.sliding_window:
            # HF's window W lets a query see itself and the W-1 tokens before it.
            kwargs.update(
                window_size=(model.sliding_window - 1, 0), window_attn_skip_freq=model.sliding_window_pattern
            )
        if model.query_pre_attn_scalar:
            kwargs["softmax_scale"] = model.query_pre_attn_scalar**-0.5
        return kwargs

    def transformer_config(
        self,
        model: ModelConfig,
        parallel: ParallelConfig,
        train: TrainConfig,
        device: torch.device | str | None = None,
        **extra: Any,
    ) -> TransformerConfig:
        """``device``: the run's (``Runtime.device``); decides TE/FP8 (default: the runtime's)."""
        act, gated = self.activation(model.activation)
        bf16 = train.precision == "bf16"
        dtype = torch.bfloat16 if bf16 else torch.float32
        fp8 = None
        if model.fp8.format is not None and _device_type(device) == "cuda":
            problem = fp8_problem(model, device)
            if problem:  # a GPU run that asked for FP8 gets it or this error, never bf16
                raise ValueError(problem)
            fp8 = model.fp8.format
        # On CPU, training with FP8 is rejected by validation (models/config_checks.py);
        # converting or generating from an FP8-trained model there computes in bf16/fp32.
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
            # same weights as TP=1 (docs/cpu_runtime.md, "Traps"); on GPU the slower, exact path.
            use_cpu_initialization=True,
            recompute_granularity=model.recompute_granularity,
            recompute_method="uniform" if model.recompute_granularity == "full" else None,
            recompute_num_layers=1 if model.recompute_granularity == "full" else None,
        )
        kwargs.update(self.architecture_kwargs(model))
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
        return TowerTransformerConfig(**kwargs)

    def layer_spec(self, model: ModelConfig, use_te: bool):
        return llama_layer(use_te)

    def build(
        self,
        model: ModelConfig,
        config: TransformerConfig,
        pre_process: bool,
        post_process: bool,
        vp_stage: int | None = None,
        padded_vocab_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> torch.nn.Module:
        """The one place a Megatron model object is constructed (every stage, conversion and the
        tools go through here): Megatron-Core 0.19 deprecates ``GPTModel`` for ``HybridModel``,
        and switching is a change here only. ``device`` decides TE vs local specs."""
        use_te = use_transformer_engine(model, device)
        return TowerGPTModel(
            config=config,
            transformer_layer_spec=block_spec(self.layer_spec(model, use_te), use_te, config, vp_stage),
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


def family_for_hf_config(hf: dict[str, Any]) -> ModelFamily:
    """The registered family that reads this HF ``model_type``."""
    model_type = hf.get("model_type")
    known = {}
    for name in MODEL_FAMILIES.names():
        family = MODEL_FAMILIES.get(name)
        for kind in family.hf_model_types:
            known[kind] = family
    if model_type not in known:
        raise ValueError(
            f"unknown HF architecture model_type={model_type!r} "
            f"(architectures={hf.get('architectures')}); supported: {', '.join(sorted(known))}"
        )
    return known[model_type]


def resolve_model_config(cfg: ModelConfig, vocab_size: int | None = None) -> ModelConfig:
    """The fully resolved model config; build with ``MODEL_FAMILIES.get(result.arch)``."""
    return MODEL_FAMILIES.get(cfg.arch).resolve(cfg, vocab_size)
