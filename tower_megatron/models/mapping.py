"""HF ⇄ Megatron tensor mapping, one rule per Megatron checkpoint tensor.

Megatron-Core's checkpoints hold each tensor whole (global, TP/PP-independent) under a
``ShardedTensor`` key; the per-layer tensors of a ``TransformerBlock`` are stacked along a leading
layer axis (``decoder.layers.mlp.linear_fc2.weight`` is ``[num_layers, hidden, ffn]``). A
:class:`TensorMap` names that key, the HF tensors of one layer (``{i}`` = layer index) and how
they combine:

* ``copy``: the same tensor.
* ``qkv``: HF's separate q/k/v → Megatron's fused ``linear_qkv`` ordered per query group
  ``[q heads of group g…, k_g, v_g]`` (what ``SelfAttention.get_query_key_value_tensors`` splits).
* ``gate_up``: HF's gate and up projections → ``linear_fc1`` = ``[gate; up]`` (the global
  layout of Megatron's SwiGLU/GeGLU sharded factory, at any TP).

Every transform is a reshape/concat/split, so HF → Megatron → HF is bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tower_megatron.config.model import ModelConfig

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TensorMap:
    mcore: str  # ShardedTensor key
    hf: tuple[str, ...]  # HF tensor names; "{i}" is the layer index
    hf_shapes: tuple[Shape, ...]  # expected HF shapes (one layer)
    kind: str = "copy"  # copy | qkv | gate_up
    per_layer: bool = False

    def hf_names(self, layer: int | None = None) -> list[str]:
        return [name.format(i=layer) for name in self.hf]

    @property
    def mcore_shape(self) -> Shape:
        """The shape of one layer's slice (of the whole tensor when not per layer)."""
        if self.kind == "copy":
            return self.hf_shapes[0]
        rows = sum(shape[0] for shape in self.hf_shapes)
        return (rows, *self.hf_shapes[0][1:])


class MappingContext:
    """What the transforms need to know about the attention layout."""

    def __init__(self, model: ModelConfig) -> None:
        self.groups = model.num_query_groups
        self.head_dim = model.kv_channels
        self.q_rows_per_group = model.num_attention_heads // model.num_query_groups * model.kv_channels

    def to_mcore(self, tm: TensorMap, tensors: list[Tensor]) -> Tensor:
        if tm.kind == "copy":
            return tensors[0]
        if tm.kind == "gate_up":
            return torch.cat(tensors, dim=0)
        if tm.kind == "qkv":
            q, k, v = tensors
            rest = q.shape[1:]
            parts = [t.reshape(self.groups, -1, *rest) for t in (q, k, v)]
            return torch.cat(parts, dim=1).reshape(-1, *rest)
        raise ValueError(f"unknown mapping kind {tm.kind!r}")

    def to_hf(self, tm: TensorMap, tensor: Tensor) -> list[Tensor]:
        if tm.kind == "copy":
            return [tensor]
        if tm.kind == "gate_up":
            return [t.contiguous() for t in torch.chunk(tensor, 2, dim=0)]
        if tm.kind == "qkv":
            rest = tensor.shape[1:]
            grouped = tensor.reshape(self.groups, -1, *rest)
            q, k, v = grouped.split([self.q_rows_per_group, self.head_dim, self.head_dim], dim=1)
            return [t.reshape(-1, *rest).contiguous() for t in (q, k, v)]
        raise ValueError(f"unknown mapping kind {tm.kind!r}")


def standard_maps(model: ModelConfig, *, pre_mlp_norm: str, sandwich_norms: bool) -> list[TensorMap]:
    """The maps shared by Llama-like HF layouts (Qwen 2 and Gemma 2 differ only in norms/bias).

    ``pre_mlp_norm`` is the HF name of the norm in front of the MLP (Qwen's
    ``post_attention_layernorm`` is that pre-MLP norm; Gemma's is ``pre_feedforward_layernorm``).
    """
    h, f, v = model.hidden_size, model.ffn_hidden_size, model.vocab_size
    q_rows = model.num_attention_heads * model.kv_channels
    kv_rows = model.num_query_groups * model.kv_channels
    layer = "model.layers.{i}."
    maps = [
        TensorMap("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), ((v, h),)),
        TensorMap(
            "decoder.layers.self_attention.linear_qkv.layer_norm_weight",
            (layer + "input_layernorm.weight",),
            ((h,),),
            per_layer=True,
        ),
        TensorMap(
            "decoder.layers.self_attention.linear_qkv.weight",
            tuple(layer + f"self_attn.{p}_proj.weight" for p in "qkv"),
            ((q_rows, h), (kv_rows, h), (kv_rows, h)),
            kind="qkv",
            per_layer=True,
        ),
        TensorMap(
            "decoder.layers.self_attention.linear_proj.weight",
            (layer + "self_attn.o_proj.weight",),
            ((h, q_rows),),
            per_layer=True,
        ),
        TensorMap(
            "decoder.layers.mlp.linear_fc1.layer_norm_weight",
            (layer + f"{pre_mlp_norm}.weight",),
            ((h,),),
            per_layer=True,
        ),
        TensorMap(
            "decoder.layers.mlp.linear_fc1.weight",
            (layer + "mlp.gate_proj.weight", layer + "mlp.up_proj.weight"),
            ((f, h), (f, h)),
            kind="gate_up",
            per_layer=True,
        ),
        TensorMap(
            "decoder.layers.mlp.linear_fc2.weight",
            (layer + "mlp.down_proj.weight",),
            ((h, f),),
            per_layer=True,
        ),
        TensorMap("decoder.final_layernorm.weight", ("model.norm.weight",), ((h,),)),
    ]
    if model.add_qkv_bias:
        maps.append(
            TensorMap(
                "decoder.layers.self_attention.linear_qkv.bias",
                tuple(layer + f"self_attn.{p}_proj.bias" for p in "qkv"),
                ((q_rows,), (kv_rows,), (kv_rows,)),
                kind="qkv",
                per_layer=True,
            )
        )
    if sandwich_norms:
        maps += [
            TensorMap(
                "decoder.layers.self_attention.linear_proj.post_layernorm.weight",
                (layer + "post_attention_layernorm.weight",),
                ((h,),),
                per_layer=True,
            ),
            TensorMap(
                "decoder.layers.mlp.linear_fc2.post_layernorm.weight",
                (layer + "post_feedforward_layernorm.weight",),
                ((h,),),
                per_layer=True,
            ),
        ]
    if model.untie_embeddings_and_output_weights:
        maps.append(TensorMap("output_layer.weight", ("lm_head.weight",), ((v, h),)))
    return maps


# Tensors an HF checkpoint may hold that carry no weights of their own.
IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)
