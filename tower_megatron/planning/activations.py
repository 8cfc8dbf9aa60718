"""Activation memory: the bytes autograd keeps for backward, per micro-batch and at the peak of a
pipeline schedule.

The per-layer terms refine Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", Eq. 1-2: ``sbh(34 + 5as/h)`` bytes per layer, divided by t with tensor and
sequence parallelism) for what this project actually runs: grouped-query attention, gated MLPs
(3 matrices), no dropout, RMSNorm in fp32, and the two attention implementations:

- ``local`` (Megatron-Core's unfused ``DotProductAttention`` and local norms; the CPU runtime,
  or a GPU without Transformer Engine): materialises the ``[b, a/t, s, s]`` scores, keeps the
  fp32 softmax (and its bf16 copy) — the ``5as/h`` term. Each term below names the tensor a module
  saves; the sums are checked against measurement (``tests/planning/test_measured_memory.py``).
- ``te`` (Transformer Engine, flash attention): no ``s²`` term; saves q, k, v, the output and the
  softmax log-sum-exp; with FP8 the inputs of the linear layers are kept in 1 byte. An estimate
  from TE's saved tensors, compared with ``torch.cuda.max_memory_allocated`` on a GPU
  (``benchmarks/gpu_smoke.py``).

Recomputation (Megatron's ``recompute_granularity``): ``selective`` checkpoints the core attention
(keeps its inputs q, k, v; recomputes scores and softmax), ``full`` (``uniform``, one layer per
checkpoint) keeps only each layer's input and recomputes the layer during backward, so one
layer's activations are live again at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from tower_megatron.config.model import ModelConfig
from tower_megatron.planning.params import Layout, padded_vocab


@dataclass(frozen=True)
class MicroBatch:
    seq: int
    batch: int  # micro-batch size
    dtype_bytes: int  # 4 fp32, 2 bf16
    fp8: bool = False
    impl: str = "local"  # local | te


def _core_attention(m: ModelConfig, lay: Layout, mb: MicroBatch) -> tuple[dict[str, int], dict[str, int]]:
    """(tensors the core attention saves, the inputs a selective checkpoint keeps instead)."""
    s, b, nb, t = mb.seq, mb.batch, mb.dtype_bytes, lay.tp
    a, g, d = m.num_attention_heads // t, m.num_query_groups // t, m.kv_channels
    qkv_storage = nb * s * b * (a + 2 * g) * d  # v is a view of the fused QKV output
    inputs = {
        "q (rotary)": nb * s * b * a * d,
        "k (rotary)": nb * s * b * g * d,
        "qkv output (v)": qkv_storage,
    }
    if mb.impl == "te" and not m.attn_logit_softcapping:  # TE's fused (flash) attention
        saved = {**inputs, "attention output": nb * s * b * a * d, "softmax lse": 4 * b * a * s}
        return saved, inputs
    # Unfused: the local spec, and Gemma 2 on both specs (no fused attention soft-caps logits).
    expanded = a != g  # GQA: k and v repeated to the query heads (new storages)
    saved = {
        "q": nb * s * b * a * d,
        "k" + (" (repeated)" if expanded else ""): nb * s * b * a * d,
        "v" + (" (repeated)" if expanded else " = qkv output"): nb * s * b * a * d
        if expanded
        else qkv_storage,
        "causal mask (bool)": s * s,
        "softmax (fp32)": 4 * b * a * s * s,
    }
    if m.attn_logit_softcapping:  # cap·tanh(scores/cap) keeps its fp32 tanh
        saved["soft-cap tanh (fp32)"] = 4 * b * a * s * s
    if nb != 4:  # softmax in fp32, then cast back: the bmm with v keeps the half copy
        saved["probs (half)"] = nb * b * a * s * s
    if m.attention_dropout:
        saved["attention dropout mask"] = b * a * s * s
    return saved, inputs


def _norm_terms(name: str, m: ModelConfig, rows: int, mb: MicroBatch) -> dict[str, int]:
    """A norm over ``rows`` tokens (not counting its output's consumer). Local RMSNorm runs in
    fp32: x (fp32), rsqrt, the normalised x — in fp32 for Gemma's (1 + w) form, which also keeps
    1 + w —, else cast back. TE: input and rsigma."""
    h, nb = m.hidden_size, mb.dtype_bytes
    if mb.impl == "te":
        return {f"{name} input": nb * rows * h, f"{name} rsigma": 4 * rows}
    zero_centered = m.arch == "gemma2"
    terms = {f"{name} x (fp32)": 4 * rows * h, f"{name} rsqrt": 4 * rows}
    terms[f"{name} normalised"] = (4 if zero_centered else nb) * rows * h
    if zero_centered:
        terms[f"{name} 1 + w"] = 4 * h
    return terms


def layer_terms(m: ModelConfig, lay: Layout, mb: MicroBatch) -> dict[str, int]:
    """Bytes one transformer layer saves for one micro-batch, by tensor (no recomputation)."""
    s, b, nb, t = mb.seq, mb.batch, mb.dtype_bytes, lay.tp
    s_loc = s // t if lay.sp else s  # sequence-parallel regions hold 1/t of the sequence
    h, d, f = m.hidden_size, m.kv_channels, m.ffn_hidden_size // t
    a = m.num_attention_heads // t
    lin = 1 if mb.fp8 else nb  # TE keeps FP8 copies of linear inputs
    gated = m.activation in ("swiglu", "geglu")
    terms: dict[str, int] = {}
    rows = s_loc * b
    for name in ("attention", "mlp"):
        # TE fuses the norm into the following linear layer, which keeps the normalised input.
        terms.update(_norm_terms(f"{name} norm", m, rows, mb))
        terms[f"{name} linear input"] = lin * rows * h
        if m.arch == "gemma2":  # sandwich norm after the attention / MLP output projection
            terms.update(_norm_terms(f"{name} post-norm", m, rows, mb))
    saved, _ = _core_attention(m, lay, mb)
    terms.update({f"core attention: {k}": v for k, v in saved.items()})
    if mb.impl == "te":
        if mb.fp8:
            terms["proj input (fp8)"] = s * b * a * d
    else:
        terms["rotary cos/sin"] = 4 * s * d * nb
        terms["proj input"] = nb * s * b * a * d
    if gated:
        terms["fc1 output"] = nb * s * b * 2 * f
        if mb.impl == "local":  # act(x_glu) and (x_linear + offset) are new tensors
            terms["activation output"] = nb * s * b * f
            terms["gate linear half"] = nb * s * b * f
        terms["fc2 input"] = lin * s * b * f
    else:
        terms["fc1 output"] = nb * s * b * f
        terms["fc2 input"] = lin * s * b * f
    if m.hidden_dropout:
        terms["dropout masks"] = 2 * s_loc * b * h
    return terms


def layer_bytes(m: ModelConfig, lay: Layout, mb: MicroBatch) -> tuple[int, int]:
    """(bytes kept per layer between forward and backward, extra bytes live while one layer is
    recomputed in backward) under ``lay.recompute``."""
    full = sum(layer_terms(m, lay, mb).values())
    s, b, nb, t = mb.seq, mb.batch, mb.dtype_bytes, lay.tp
    s_loc = s // t if lay.sp else s
    if lay.recompute == "full":
        # Kept: the layer input. Recomputed: the whole layer, whose first norm in fp32 keeps
        # that same input storage rather than a copy.
        return nb * s_loc * b * m.hidden_size, full - (4 * s_loc * b * m.hidden_size if nb == 4 else 0)
    if lay.recompute == "selective":
        saved, inputs = _core_attention(m, lay, mb)
        kept = full - sum(saved.values()) + sum(inputs.values())
        return kept, sum(saved.values())
    return full, 0


def embedding_bytes(m: ModelConfig, lay: Layout, mb: MicroBatch) -> int:
    """The first stage: token ids kept by the embedding lookup (int64) and, with TP, the mask of
    ids outside this rank's vocabulary shard (bool)."""
    scale = 4 if m.arch == "gemma2" else 0  # Gemma's √hidden embedding scale (a 0-d tensor)
    return 8 * mb.seq * mb.batch + (mb.seq * mb.batch if lay.tp > 1 else 0) + scale


def head_terms(m: ModelConfig, lay: Layout, mb: MicroBatch) -> dict[str, int]:
    """The last stage: final norm, output layer input and the vocab-parallel cross entropy."""
    s, b, nb, t = mb.seq, mb.batch, mb.dtype_bytes, lay.tp
    s_loc = s // t if lay.sp else s
    h, v = m.hidden_size, padded_vocab(m, t) // t
    terms = {
        **_norm_terms("final norm", m, s_loc * b, mb),
        "output layer input": nb * s_loc * b * h,
        "logits (fp32, exp) [s, b, vocab/tp]": 4 * s * b * v,
        "cross entropy masks": s * b + 8 * s * b,
        "loss mask (fp32)": 4 * s * b,
    }
    if m.final_logit_softcapping:  # cap·tanh(logits/cap) keeps its tanh
        terms["logit soft-cap tanh"] = nb * s * b * v
    return terms


def chunk_bytes(m: ModelConfig, lay: Layout, mb: MicroBatch, pp_rank: int, vp_stage: int) -> tuple[int, int]:
    """(saved bytes of one micro-batch through one model chunk, recompute transient)."""
    stages = lay.pp * lay.chunks
    virtual = vp_stage * lay.pp + pp_rank
    layers = m.num_layers // stages
    kept, transient = layer_bytes(m, lay, mb)
    total = layers * kept
    if virtual == 0:
        total += embedding_bytes(m, lay, mb)
    if virtual == stages - 1:
        total += sum(head_terms(m, lay, mb).values())
    return total, transient if layers else 0


def schedule_order(pp: int, vpp: int, pp_rank: int, microbatches: int) -> list[tuple[str, int]]:
    """The (``F``/``B``, model chunk) sequence Megatron's 1F1B schedule runs on ``pp_rank``:
    warm-up forwards, steady one-forward-one-backward, cool-down backwards (Narayanan et al.
    2021 §2.2). Warm-up counts and the interleaved chunk order come from Megatron-Core's own
    ``get_pp_rank_microbatches`` and ``get_schedule_table`` (``pipeline_parallel/schedules.py``)."""
    from types import SimpleNamespace

    from megatron.core.pipeline_parallel.schedules import get_pp_rank_microbatches, get_schedule_table

    if pp == 1:
        return [x for _ in range(microbatches) for x in (("F", 0), ("B", 0))]
    group = SimpleNamespace(size=lambda: pp, rank=lambda: pp_rank)
    comm = SimpleNamespace(pp_group=group, virtual_pipeline_model_parallel_size=vpp if vpp > 1 else None)
    total, _, warmup, _ = get_pp_rank_microbatches(microbatches, vpp, pp, p2p_communicator=comm)
    table = get_schedule_table(microbatches, vpp, pp)

    def chunk(k: int, forward: bool) -> int:
        c = table[k][1]
        return c if forward else vpp - 1 - c

    order: list[tuple[str, int]] = [("F", chunk(k, True)) for k in range(warmup)]
    for i in range(total - warmup):
        order += [("F", chunk(warmup + i, True)), ("B", chunk(i, False))]
    order += [("B", chunk(k, False)) for k in range(total - warmup, total)]
    return order


def peak_activation_bytes(
    m: ModelConfig, lay: Layout, mb: MicroBatch, pp_rank: int, microbatches: int
) -> int:
    """Peak saved bytes on ``pp_rank``: the schedule's micro-batches in flight, each chunk's
    activations, plus one layer's recompute transient at the first backward of a chunk."""
    costs = [chunk_bytes(m, lay, mb, pp_rank, v) for v in range(lay.chunks)]
    live = peak = 0
    for kind, c in schedule_order(lay.pp, lay.chunks, pp_rank, microbatches):
        saved, transient = costs[c]
        if kind == "F":
            live += saved
            peak = max(peak, live)
        else:
            head = (
                sum(head_terms(m, lay, mb).values()) if c * lay.pp + pp_rank == lay.pp * lay.chunks - 1 else 0
            )
            # Backward frees the head (loss) first, then recomputes each layer in turn.
            peak = max(peak, live - head + transient)
            live -= saved
    return peak
