"""One layout, estimated: per-GPU memory, communication per step, pipeline bubble, step time, MFU.

Formulas and their sources are in ``docs/planning.md``; memory terms come from
:mod:`~tower_megatron.planning.params` (exact) and :mod:`~tower_megatron.planning.activations`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tower_megatron.config.model import ModelConfig
from tower_megatron.models.flops import flops_per_token
from tower_megatron.planning.activations import MicroBatch, peak_activation_bytes
from tower_megatron.planning.gpus import GPU
from tower_megatron.planning.params import Layout, padded_vocab, rank_state_bytes


@dataclass(frozen=True)
class Workload:
    """What the job asks of every step (``train.*``, precision, attention implementation)."""

    seq: int
    micro_batch: int
    global_batch: int
    precision: str = "bf16"  # fp32 | bf16
    fp8: bool = False
    fp8_param: bool = False
    impl: str = "te"  # te | local

    @property
    def dtype_bytes(self) -> int:
        return 4 if self.precision == "fp32" else 2


@dataclass(frozen=True)
class Cluster:
    gpu: GPU
    gpus: int
    gpus_per_node: int = 8
    memory_bytes: int | None = None  # default: the GPU's
    headroom: float = 0.10  # fraction kept free: CUDA context, NCCL buffers, fragmentation
    efficiency: float | None = None  # achieved / peak matmul throughput (default 0.65 BF16, 0.5 FP8)

    @property
    def usable_bytes(self) -> int:
        return int((self.memory_bytes or self.gpu.memory_bytes) * (1 - self.headroom))


@dataclass
class RankMemory:
    pp_rank: int
    params: int
    grads: int
    optimizer: int
    activations: int
    temporary: int
    numel: int  # parameter elements held (unpadded)

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.temporary


@dataclass
class Estimate:
    layout: Layout
    ranks: list[RankMemory]
    temporaries: dict[str, int]
    comm_bytes: dict[str, float]  # per GPU per step, by parallel dimension
    bubble: float
    times: dict[str, float]  # seconds per step, by part
    model_flops: float  # per step, whole job
    mfu: float
    tflops_per_gpu: float
    problems: list[str] = field(default_factory=list)

    @property
    def peak(self) -> RankMemory:
        return max(self.ranks, key=lambda r: r.total)

    @property
    def step_time(self) -> float:
        return sum(self.times.values())

    @property
    def feasible(self) -> bool:
        return not self.problems


def microbatches(layout: Layout, work: Workload) -> int:
    return work.global_batch // (work.micro_batch * layout.dp)


def temporaries(m: ModelConfig, layout: Layout, work: Workload) -> dict[str, int]:
    """The largest buffers that are neither state nor saved activations."""
    s, b, nb, t = work.seq, work.micro_batch, work.dtype_bytes, layout.tp
    temps = {
        # The gradient of the fp32 logits, live while the loss backward runs (last stage).
        "logits grad (fp32) [s, b, vocab/tp]": 4 * s * b * padded_vocab(m, t) // t,
    }
    if layout.sp:
        temps["sequence-parallel all-gather buffer"] = nb * s * b * max(m.hidden_size, m.ffn_hidden_size // t)
    if work.impl == "local":  # Megatron's global buffer for the [b·a/t, s, s] attention scores
        temps["attention scores buffer"] = nb * b * (m.num_attention_heads // t) * s * s
    return temps


def rank_memory(m: ModelConfig, layout: Layout, work: Workload, pp_rank: int, dp_rank: int = 0) -> RankMemory:
    """One rank's bytes (any TP rank: they hold equal shards)."""
    main = work.precision != "fp32"  # fp32 master weights of half-precision parameters
    state = rank_state_bytes(m, layout, pp_rank, dp_rank, 1 if work.fp8_param else work.dtype_bytes, main)
    mb = MicroBatch(work.seq, work.micro_batch, work.dtype_bytes, work.fp8, work.impl)
    acts = peak_activation_bytes(m, layout, mb, pp_rank, microbatches(layout, work))
    temps = temporaries(m, layout, work)
    persistent = temps.pop("attention scores buffer", 0)
    if pp_rank != layout.pp - 1:
        temps.pop("logits grad (fp32) [s, b, vocab/tp]")
    temp = persistent + max(temps.values(), default=0)
    return RankMemory(pp_rank, state.params, state.grads, state.optimizer, acts, temp, state.numel)


def memory(m: ModelConfig, layout: Layout, work: Workload) -> list[RankMemory]:
    """Per pipeline rank, with the DP rank holding the largest optimizer shard."""
    dp_ranks = sorted({0, layout.dp - 1}) if layout.dist_opt else [0]
    return [
        max((rank_memory(m, layout, work, pp, r) for r in dp_ranks), key=lambda x: x.optimizer)
        for pp in range(layout.pp)
    ]


def _link(cluster: Cluster, group_span: int) -> float:
    """GB/s of a group whose members lie within ``group_span`` consecutive ranks."""
    return cluster.gpu.nvlink_gbps if group_span <= cluster.gpus_per_node else cluster.gpu.ib_gbps


def _attention_flops_fwd(m: ModelConfig, seq: int) -> float:
    """Forward QKᵀ and AV FLOPs per token over ``seq/2`` keys (Megatron's causal count)."""
    return m.num_layers * 2 * 2 * m.num_attention_heads * m.kv_channels * seq / 2


def estimate(m: ModelConfig, layout: Layout, work: Workload, cluster: Cluster) -> Estimate:
    ranks, temps = memory(m, layout, work), temporaries(m, layout, work)
    tp, pp, dp, v = layout.tp, layout.pp, layout.dp, layout.chunks
    s, b, nb = work.seq, work.micro_batch, work.dtype_bytes
    h = m.hidden_size
    n_micro = microbatches(layout, work)
    tokens = work.global_batch * s

    # ---- communication per GPU per step (ring collectives: all-reduce 2(n-1)/n, AG/RS (n-1)/n)
    x = nb * s * b * h
    if tp > 1:
        units = 10 if layout.sp else 8  # fwd 2 AR (or 2 AG + 2 RS); bwd the same, + 2 AG with SP
        if layout.recompute == "full":
            units += 4
        per_layer = units * x * (tp - 1) / tp
        tp_bytes = n_micro * (m.num_layers / pp) * per_layer + n_micro * 4 * x * (tp - 1) / tp
    else:
        tp_bytes = 0.0
    pp_bytes = 2 * n_micro * v * x / (tp if layout.sp else 1) if pp > 1 else 0.0
    numel = max(r.numel for r in ranks)
    if dp > 1:
        grads = 4 * numel
        if layout.dist_opt:
            dp_bytes = (dp - 1) / dp * (grads + (1 if work.fp8_param else nb) * numel)
        else:
            dp_bytes = 2 * (dp - 1) / dp * grads
    else:
        dp_bytes = 0.0
    comm = {"tensor": tp_bytes, "pipeline": pp_bytes, "data": dp_bytes}

    # ---- time: compute at an achieved fraction of peak, bubble, exposed communication
    model_flops = flops_per_token(m, s) * tokens
    hw_flops = model_flops
    if layout.recompute == "full":  # one more forward of the layers (not the LM head)
        hw_flops += flops_per_token(dataclasses.replace(m, vocab_size=0), s) / 3 * tokens
    elif layout.recompute == "selective":  # one more forward of QKᵀ and AV
        hw_flops += _attention_flops_fwd(m, s) * tokens
    gpus = tp * pp * dp
    peak = cluster.gpu.peak_tflops(work.fp8) * 1e12
    eff = cluster.efficiency or (0.5 if work.fp8 else 0.65)
    compute = hw_flops / gpus / (peak * eff)
    bubble = (pp - 1) / (v * n_micro) if pp > 1 else 0.0
    times = {
        "compute": compute,
        "pipeline bubble": compute * bubble,
        "tensor-parallel comm": tp_bytes / (_link(cluster, tp) * 1e9),
        "pipeline comm": pp_bytes / (_link(cluster, tp * dp * pp) * 1e9),
    }
    dp_time = dp_bytes / (_link(cluster, tp * dp) * 1e9)
    # Overlapped with the backward pass (2/3 of compute) when overlap_grad_reduce is on.
    times["data-parallel comm (exposed)"] = (
        max(0.0, dp_time - 2 / 3 * compute) if layout.overlap_grad_reduce else dp_time
    )
    step = sum(times.values())
    tflops = model_flops / gpus / step / 1e12
    est = Estimate(layout, ranks, temps, comm, bubble, times, model_flops, tflops * 1e12 / peak, tflops)
    usable = cluster.usable_bytes
    if est.peak.total > usable:
        est.problems.append(
            f"memory: {est.peak.total / 2**30:.1f} GiB on pipeline rank {est.peak.pp_rank} > "
            f"{usable / 2**30:.1f} GiB usable"
        )
    return est
