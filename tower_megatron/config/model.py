"""``model:`` section — the architecture. A preset or an HF ``config.json`` fills the fields left
as ``None``; explicit values win. Resolved into a Megatron ``TransformerConfig`` by
:mod:`tower_megatron.models`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class FP8Config:
    """Transformer Engine FP8 (GPU only; ignored with a warning by the CPU runtime)."""

    format: Optional[str] = None  # None | e4m3 | hybrid
    recipe: str = "delayed"  # delayed | tensorwise | blockwise | mxfp8
    margin: int = 0
    amax_history_len: int = 1024
    amax_compute_algo: str = "max"
    param: bool = False  # keep parameters in FP8 (needs the distributed optimizer)
    first_last_layers_bf16: bool = False


@dataclass
class ModelConfig:
    arch: str = "gpt"  # gpt | gemma2 | qwen2; a preset or hf_config of another family switches it
    preset: Optional[str] = None  # e.g. gemma2-2b, qwen2.5-72b
    hf_config: Optional[str] = None  # path to an HF config.json (or its directory)
    transformer_impl: str = "auto"  # auto | local | transformer_engine
    num_layers: Optional[int] = None
    hidden_size: Optional[int] = None
    ffn_hidden_size: Optional[int] = None
    num_attention_heads: Optional[int] = None
    num_query_groups: Optional[int] = None
    kv_channels: Optional[int] = None
    vocab_size: Optional[int] = None  # None: the tokenizer's vocabulary, padded
    make_vocab_size_divisible_by: int = 128
    max_position_embeddings: Optional[int] = None
    normalization: Optional[str] = None  # RMSNorm | LayerNorm
    norm_epsilon: Optional[float] = None
    activation: Optional[str] = None  # swiglu | geglu | gelu
    add_bias_linear: Optional[bool] = None
    add_qkv_bias: Optional[bool] = None
    position_embedding_type: Optional[str] = None  # rope | learned_absolute
    rotary_base: Optional[float] = None
    untie_embeddings_and_output_weights: Optional[bool] = None
    # Gemma 2 style attention and head (None: the family's or the preset's value; 0: off).
    sliding_window: Optional[int] = None  # tokens a sliding-window layer sees, itself included
    # Which layers slide, one 0/1 per layer (1 = sliding window); None with sliding_window set:
    # the family's pattern (Gemma 2: even layers 0, 2, ... slide; others: every layer).
    sliding_window_pattern: Optional[list[int]] = None
    attn_logit_softcapping: Optional[float] = None  # scores → cap·tanh(scores/cap)
    final_logit_softcapping: Optional[float] = None  # logits → cap·tanh(logits/cap)
    query_pre_attn_scalar: Optional[float] = None  # softmax scale = query_pre_attn_scalar^-0.5
    init_method_std: float = 0.02
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    recompute_granularity: Optional[str] = None  # None | selective | full
    fp8: FP8Config = field(default_factory=FP8Config)
