"""Transformer-block specs: which Megatron-Core module fills each slot of a ``TransformerLayer``.

Two families of layouts, each with a Transformer Engine variant (GPU; TE imported lazily, on first
use) and a local one (CPU, or GPU without TE):

* ``llama``: pre-norm, SwiGLU, optional QKV bias — GPT and Qwen 2.5.
* ``gemma2``: pre- and post-norms (sandwich) with (1 + w) RMSNorm, soft-capped attention with
  sliding windows — Gemma 2.

Local and TE variants checkpoint under the same keys: local norms are renamed to TE's fused
``linear_qkv.layer_norm_weight``/``linear_fc1.layer_norm_weight`` (as Megatron's own local spec
does), so a checkpoint written on CPU loads on GPU and back.
"""

from __future__ import annotations

from functools import partial

from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

from tower_megatron.models.modules import (
    PostNormRowParallelLinear,
    SoftCapDotProductAttention,
    build_norm,
    te_post_norm_row_parallel_linear,
)

# Local norms saved under the names TE's fused norm+linear modules use.
_LOCAL_NORM_KEYS = {
    "input_layernorm.": "self_attention.linear_qkv.layer_norm_",
    "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_",
}


def _layer(
    *,
    input_norm: object,
    qkv: object,
    core_attention: object,
    proj: object,
    pre_mlp_norm: object,
    fc1: object,
    fc2: object,
    keys_map: dict[str, str],
) -> ModuleSpec:
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=input_norm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=qkv,
                    core_attention=core_attention,
                    linear_proj=proj,
                    q_layernorm=IdentityOp,
                    k_layernorm=IdentityOp,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=pre_mlp_norm,
            mlp=partial(MLP.as_mlp_submodule, submodules=MLPSubmodules(linear_fc1=fc1, linear_fc2=fc2)),
            mlp_bda=get_bias_dropout_add,
            sharded_state_dict_keys_map=keys_map,
        ),
    )


def llama_layer(use_te: bool) -> ModuleSpec:
    """Pre-norm GPT layer (Llama / Qwen 2.5). TE: Megatron's own spec, unchanged."""
    if use_te:
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec()
    return _layer(
        input_norm=build_norm,
        qkv=ColumnParallelLinear,
        core_attention=DotProductAttention,
        proj=RowParallelLinear,
        pre_mlp_norm=build_norm,
        fc1=ColumnParallelLinear,
        fc2=RowParallelLinear,
        keys_map=dict(_LOCAL_NORM_KEYS),
    )


def gemma2_layer(use_te: bool) -> ModuleSpec:
    """Gemma 2 layer: sandwich norms, soft-capped attention with sliding windows."""
    if use_te:
        from megatron.core.extensions.transformer_engine import TELayerNormColumnParallelLinear

        te_proj = te_post_norm_row_parallel_linear()
        return _layer(
            input_norm=IdentityOp,  # fused into linear_qkv / linear_fc1
            qkv=TELayerNormColumnParallelLinear,
            core_attention=SoftCapDotProductAttention,
            proj=te_proj,
            pre_mlp_norm=IdentityOp,
            fc1=TELayerNormColumnParallelLinear,
            fc2=te_proj,
            keys_map={},
        )
    return _layer(
        input_norm=build_norm,
        qkv=ColumnParallelLinear,
        core_attention=SoftCapDotProductAttention,
        proj=PostNormRowParallelLinear,
        pre_mlp_norm=build_norm,
        fc1=ColumnParallelLinear,
        fc2=PostNormRowParallelLinear,
        keys_map=dict(_LOCAL_NORM_KEYS),
    )


def final_norm(use_te: bool) -> object:
    if use_te:
        from megatron.core.extensions.transformer_engine import TENorm

        return TENorm
    return build_norm


def block_spec(
    layer: ModuleSpec, use_te: bool, config: TransformerConfig, vp_stage: int | None
) -> TransformerBlockSubmodules:
    """This pipeline stage's layers plus the final norm (SP-safe locally, TE's on GPU)."""
    return TransformerBlockSubmodules(
        layer_specs=[layer] * get_num_layers_to_build(config, vp_stage=vp_stage),
        layer_norm=final_norm(use_te),
    )
