"""Per-rank parameter inventory and the bytes Megatron keeps for it: weights, gradient buffers and
optimizer state, exactly as Megatron-Core 0.19 lays them out.

The inventory lists this rank's parameters in the order the modules register them (GPTModel:
embedding, then per layer input norm, attention output projection, QKV, pre-MLP norm, fc1, fc2,
then final norm and output layer), with their tensor-parallel shard sizes. The buffer arithmetic
follows ``megatron/core/distributed/param_and_grad_buffer.py`` and
``optimizer/distrib_optimizer.py`` (``_compute_per_buffer_param_layout``):

- without the distributed optimizer every parameter owns its storage and the fp32 gradient
  buffer holds the parameters back to back (no padding);
- with it, parameters are laid out in reverse registration order, each start aligned to 64
  elements, every bucket end padded to a multiple of lcm(DP, 128), and a tied embedding (its
  ``shared_embedding`` copy when PP > 1) in a bucket of its own; parameter and gradient buffers
  have that padded size; rank ``r`` of DP owns the ``r``-th slice of every bucket and keeps Adam
  state (and fp32 main weights for bf16) only for the parameter elements in its slice.

Adam (``torch.optim.AdamW`` when Apex/TE fused Adam is absent) also keeps one 4-byte ``step``
tensor per parameter (shard) it updates; counted so that measured and planned bytes agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tower_megatron.config.model import ModelConfig
from tower_megatron.models.family import pad_vocab

GRAD_BYTES = 4  # the trainer reduces gradients in fp32 (grad_reduce_in_fp32=True)
ADAM_BYTES = 8  # exp_avg + exp_avg_sq, fp32
MAIN_PARAM_BYTES = 4  # fp32 master weights of bf16 (or FP8) parameters
STEP_BYTES = 4  # torch Adam's per-parameter ``step`` tensor
DEFAULT_BUCKET = 40_000_000  # Megatron DDP: max(40M, 1M × DP) elements when overlapping


@dataclass(frozen=True)
class Layout:
    """A parallel layout of one training job (what ``parallel.*`` sets)."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    vpp: int | None = None
    sp: bool = False
    dist_opt: bool = False
    recompute: str | None = None  # None | selective | full
    overlap_grad_reduce: bool = False

    @property
    def chunks(self) -> int:
        return self.vpp or 1

    def describe(self) -> str:
        vpp = f"×VP{self.vpp}" if self.vpp else ""
        extras = [x for x in ("SP" if self.sp else "", "distopt" if self.dist_opt else "") if x]
        rc = f"recompute={self.recompute}" if self.recompute else "no recompute"
        return f"TP{self.tp} PP{self.pp}{vpp} DP{self.dp} " + " ".join([*extras, rc])


@dataclass(frozen=True)
class Param:
    name: str
    numel: int
    shared_embedding: bool = False


def padded_vocab(model: ModelConfig, tp: int) -> int:
    return pad_vocab(model.vocab_size, model.make_vocab_size_divisible_by, tp)


def layer_params(model: ModelConfig, tp: int, prefix: str = "") -> list[Param]:
    """One transformer layer's parameters on one TP rank, in registration order."""
    h, d, f = model.hidden_size, model.kv_channels, model.ffn_hidden_size
    a, g = model.num_attention_heads, model.num_query_groups
    norm = h if model.normalization == "RMSNorm" else 2 * h
    gated = model.activation in ("swiglu", "geglu")
    bias = bool(model.add_bias_linear)
    sandwich = model.arch == "gemma2"  # post-attention / post-MLP norms inside proj and fc2
    out: list[Param] = [Param(prefix + "input_layernorm", norm)]
    out.append(Param(prefix + "self_attention.linear_proj.weight", h * a * d // tp))
    if bias:
        out.append(Param(prefix + "self_attention.linear_proj.bias", h))
    if sandwich:
        out.append(Param(prefix + "self_attention.linear_proj.post_norm", norm))
    out.append(Param(prefix + "self_attention.linear_qkv.weight", (a + 2 * g) * d // tp * h))
    if model.add_qkv_bias or bias:
        out.append(Param(prefix + "self_attention.linear_qkv.bias", (a + 2 * g) * d // tp))
    out.append(Param(prefix + "pre_mlp_layernorm", norm))
    fc1 = f * (2 if gated else 1) // tp
    out.append(Param(prefix + "mlp.linear_fc1.weight", fc1 * h))
    if bias:
        out.append(Param(prefix + "mlp.linear_fc1.bias", fc1))
    out.append(Param(prefix + "mlp.linear_fc2.weight", h * f // tp))
    if bias:
        out.append(Param(prefix + "mlp.linear_fc2.bias", h))
    if sandwich:
        out.append(Param(prefix + "mlp.linear_fc2.post_norm", norm))
    return out


def chunk_params(model: ModelConfig, layout: Layout, pp_rank: int, vp_stage: int = 0) -> list[Param]:
    """Parameters of one model chunk (one per virtual stage) on one (TP, PP) rank."""
    stages = layout.pp * layout.chunks
    per_chunk = model.num_layers // stages
    # Megatron's interleaved assignment: chunk v of PP rank p holds virtual stage v·PP + p.
    virtual = vp_stage * layout.pp + pp_rank
    first, last = virtual == 0, virtual == stages - 1
    h, vocab = model.hidden_size, padded_vocab(model, layout.tp)
    tied = not model.untie_embeddings_and_output_weights
    norm = h if model.normalization == "RMSNorm" else 2 * h
    out: list[Param] = []
    if first:
        out.append(Param("embedding.word_embeddings.weight", vocab * h // layout.tp, tied and layout.pp > 1))
        if model.position_embedding_type == "learned_absolute":
            out.append(Param("embedding.position_embeddings.weight", model.max_position_embeddings * h))
    for i in range(per_chunk):
        out.extend(layer_params(model, layout.tp, f"decoder.layers.{virtual * per_chunk + i}."))
    if last:
        out.append(Param("decoder.final_layernorm", norm))
        if not tied or not first:  # a tied head on its own stage keeps a shared copy
            out.append(Param("output_layer.weight", vocab * h // layout.tp, tied))
    return out


def _ceil(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def buffer_layout(
    params: list[Param], dp: int, bucket_size: int | None
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """Megatron's distributed-optimizer layout: ((start, end, bucket) per parameter in reverse
    registration order, (start, end) per bucket)."""
    index: list[tuple[int, int, int]] = []
    buckets: list[tuple[int, int]] = []
    start = bucket_start = 0
    open_params = 0
    divisor = math.lcm(dp, 128)
    for param in reversed(params):
        start = _ceil(start, 64)
        if param.shared_embedding and open_params:
            end = _ceil(start, divisor)
            buckets.append((bucket_start, end))
            bucket_start = start = end
            open_params = 0
        end = start + param.numel
        index.append((start, end, len(buckets)))
        open_params += 1
        if (bucket_size is not None and end - bucket_start >= bucket_size) or param.shared_embedding:
            bucket_end = _ceil(end, divisor)
            buckets.append((bucket_start, bucket_end))
            bucket_start = start = bucket_end
            open_params = 0
        else:
            start = end
    if open_params:
        buckets.append((bucket_start, _ceil(start, divisor)))
    return index, buckets


@dataclass(frozen=True)
class StateBytes:
    """Bytes one rank holds for its parameters (by kind)."""

    params: int
    grads: int
    optimizer: int
    numel: int  # parameter elements (unpadded) on this rank

    def __add__(self, other: StateBytes) -> StateBytes:
        return StateBytes(
            self.params + other.params,
            self.grads + other.grads,
            self.optimizer + other.optimizer,
            self.numel + other.numel,
        )


def chunk_state_bytes(
    params: list[Param],
    layout: Layout,
    dp_rank: int,
    param_bytes: int,
    bucketed: bool,
    main_params: bool,
) -> StateBytes:
    """Weights, fp32 gradient buffer and Adam state of one DDP-wrapped chunk on DP rank ``dp_rank``.

    ``param_bytes``: bytes per weight element (4 fp32, 2 bf16, 1 FP8); ``main_params``: the
    optimizer keeps fp32 master weights (half-precision training); ``bucketed``: this chunk's
    DDP splits buckets (only the first chunk of the first pipeline rank, and only when
    overlapping the gradient reduction).
    """
    numel = sum(p.numel for p in params)
    per_elem_opt = ADAM_BYTES + (MAIN_PARAM_BYTES if main_params else 0)
    if not layout.dist_opt:
        return StateBytes(
            numel * param_bytes, numel * GRAD_BYTES, numel * per_elem_opt + STEP_BYTES * len(params), numel
        )
    bucket_size = (
        max(DEFAULT_BUCKET, 1_000_000 * layout.dp) if (bucketed and layout.overlap_grad_reduce) else None
    )
    index, buckets = buffer_layout(params, layout.dp, bucket_size)
    total = buckets[-1][1] if buckets else 0
    owned = shards = 0
    for start, end, bucket in index:
        b_start, b_end = buckets[bucket]
        size = (b_end - b_start) // layout.dp
        lo, hi = b_start + dp_rank * size, b_start + (dp_rank + 1) * size
        overlap = max(0, min(end, hi) - max(start, lo))
        if overlap:
            owned += overlap
            shards += 1
    return StateBytes(
        total * param_bytes, total * GRAD_BYTES, owned * per_elem_opt + STEP_BYTES * shards, numel
    )


def rank_state_bytes(
    model: ModelConfig, layout: Layout, pp_rank: int, dp_rank: int, param_bytes: int, main_params: bool
) -> StateBytes:
    """All chunks of one (PP, DP) rank (the TP rank does not change the sizes)."""
    total = StateBytes(0, 0, 0, 0)
    for vp in range(layout.chunks):
        params = chunk_params(model, layout, pp_rank, vp)
        bucketed = vp == 0 and pp_rank == 0
        total = total + chunk_state_bytes(params, layout, dp_rank, param_bytes, bucketed, main_params)
    return total
