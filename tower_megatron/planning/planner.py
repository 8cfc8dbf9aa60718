"""``tower-megatron plan CONFIG plan.gpus=32 plan.gpu=h100 [plan.gpu_memory=80GiB] [plan.search=true]``

Reads a training recipe, resolves the model (``resolve_model_config``: GQA, vocabulary, tied
embeddings, gated MLPs from the preset or HF config) and estimates the configured layout — or,
with ``plan.search``, every TP/PP/VPP/DP/recompute layout of ``plan.gpus`` GPUs — per GPU:
weights, gradients, optimizer state, activations and temporary buffers; communication per
parallel dimension; pipeline bubble; step time and MFU. Formulas: ``docs/planning.md``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Optional

from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.config.model import ModelConfig
from tower_megatron.config.schema import JobConfig
from tower_megatron.planning.estimate import Cluster, Estimate, Workload, estimate
from tower_megatron.planning.flags import flags_to_overrides
from tower_megatron.planning.gpus import GPUS, parse_bytes
from tower_megatron.planning.params import Layout, rank_state_bytes

GIB = 2**30
RECOMPUTE_CHOICES: tuple[Optional[str], ...] = (None, "selective", "full")


@dataclass
class PlanConfig:
    gpus: int = 0  # 0: one model replica (TP × PP × CP) of the recipe's layout
    gpu: str = "h100"  # a100 | h100 | h200 | b200
    gpu_memory: Optional[str] = None  # e.g. 80GiB, 141GB (default: the GPU's)
    gpus_per_node: int = 8
    search: bool = False  # rank every feasible layout instead of estimating the recipe's
    headroom: float = 0.10  # fraction of GPU memory kept free (context, NCCL, fragmentation)
    efficiency: Optional[float] = None  # achieved / peak matmul throughput (0.65 BF16, 0.5 FP8)
    impl: str = "auto"  # auto (te unless model.transformer_impl=local) | te | local
    top: int = 10  # layouts shown by a search
    output: Optional[str] = None  # also write the plan as JSON here


@dataclass
class PlanJob(JobConfig):
    plan: PlanConfig = field(default_factory=PlanConfig)


def resolved_model(job: JobConfig) -> ModelConfig:
    from tower_megatron.models import resolve_model_config

    try:
        model = resolve_model_config(job.model)
        if model.vocab_size is None:  # no preset/HF config fixes it: the tokenizer's
            from tower_megatron.data.tokenizer import build_tokenizer

            model = resolve_model_config(job.model, int(build_tokenizer(job.data.tokenizer).vocab_size))
    except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
        raise ConfigError(f"model: {exc}") from None
    return model


def job_layout(job: JobConfig, gpus: int) -> Layout:
    par = job.parallel
    if par.context_parallel_size != 1:
        raise ConfigError("parallel.context_parallel_size > 1 is not modelled by the planner")
    replica = par.tensor_model_parallel_size * par.pipeline_model_parallel_size
    if gpus % replica:
        raise ConfigError(f"plan.gpus={gpus} is not divisible by TP × PP = {replica}")
    return Layout(
        tp=par.tensor_model_parallel_size,
        pp=par.pipeline_model_parallel_size,
        dp=gpus // replica,
        vpp=par.virtual_pipeline_model_parallel_size,
        sp=par.sequence_parallel,
        dist_opt=par.use_distributed_optimizer,
        recompute=job.model.recompute_granularity,
        overlap_grad_reduce=par.overlap_grad_reduce,
    )


def workload(job: JobConfig, impl: str) -> Workload:
    if impl == "auto":
        impl = "local" if job.model.transformer_impl == "local" else "te"
    if impl not in ("te", "local"):
        raise ConfigError(f"plan.impl={impl!r} is not one of auto, te, local")
    fp8 = job.model.fp8.format is not None
    return Workload(
        seq=job.train.seq_length,
        micro_batch=job.train.micro_batch_size,
        global_batch=job.train.global_batch_size,
        precision=job.train.precision,
        fp8=fp8,
        fp8_param=fp8 and job.model.fp8.param,
        impl=impl,
    )


def layout_problems(m: ModelConfig, lay: Layout, work: Workload, cluster: Cluster) -> list[tuple[str, str]]:
    """Why a layout cannot run at all (before any memory arithmetic): (reason, detail) pairs."""
    problems = []
    if lay.tp > cluster.gpus_per_node:
        problems.append(
            (
                "tensor parallelism across nodes",
                f"TP={lay.tp} > {cluster.gpus_per_node} GPUs per node (TP needs NVLink)",
            )
        )
    if m.num_attention_heads % lay.tp or m.num_query_groups % lay.tp:
        problems.append(
            (
                "heads or KV groups not divisible by TP",
                f"{m.num_attention_heads} heads / {m.num_query_groups} KV groups, TP={lay.tp}",
            )
        )
    if m.num_layers % (lay.pp * lay.chunks):
        problems.append(
            ("layers not divisible by PP×VP", f"{m.num_layers} layers, PP×VP={lay.pp}×{lay.chunks}")
        )
    if work.global_batch % (work.micro_batch * lay.dp):
        problems.append(
            (
                "global batch not divisible by micro-batch×DP",
                f"{work.global_batch} / {work.micro_batch}×{lay.dp}",
            )
        )
    elif lay.vpp and (work.global_batch // (work.micro_batch * lay.dp)) % lay.pp:
        problems.append(
            ("interleaved schedule needs micro-batches per DP rank divisible by PP", f"PP={lay.pp}")
        )
    if work.fp8 and not cluster.gpu.fp8_tflops:
        problems.append(("no FP8 on this GPU", f"{cluster.gpu.name} has no FP8 tensor cores"))
    return problems


def candidate_layouts(m: ModelConfig, gpus: int, base: Layout) -> list[Layout]:
    """TP (powers of two), PP (divisors of the layers), VP (divisors of layers per stage),
    recompute off/selective/full; SP whenever TP > 1; the recipe's distributed-optimizer and
    overlap settings (the distributed optimizer on whenever DP > 1 if the recipe uses it)."""
    out = []
    tp = 1
    while tp <= gpus:
        for pp in range(1, m.num_layers + 1):
            if gpus % (tp * pp):
                continue
            per_stage = m.num_layers // pp if m.num_layers % pp == 0 else 0
            vpps = [None] + ([v for v in range(2, per_stage + 1) if per_stage % v == 0] if pp > 1 else [])
            for vpp in vpps:
                for rc in RECOMPUTE_CHOICES:
                    out.append(
                        dataclasses.replace(
                            base, tp=tp, pp=pp, dp=gpus // (tp * pp), vpp=vpp, sp=tp > 1, recompute=rc
                        )
                    )
        tp *= 2
    return out


def search(
    m: ModelConfig, work: Workload, cluster: Cluster, base: Layout
) -> tuple[list[Estimate], dict[str, list[str]]]:
    """Feasible layouts fastest first, and infeasible ones grouped by reason."""
    feasible: list[Estimate] = []
    rejected: dict[str, list[str]] = {}
    for lay in candidate_layouts(m, cluster.gpus, base):
        problems = layout_problems(m, lay, work, cluster)
        if not problems:
            est = estimate(m, lay, work, cluster)
            if est.feasible:
                feasible.append(est)
                continue
            problems = [("does not fit in memory", p) for p in est.problems]
        reason, detail = problems[0]
        rejected.setdefault(reason, []).append(f"{lay.describe()}: {detail}")
    feasible.sort(key=lambda e: e.step_time)
    return feasible, rejected


def _gib(n: float) -> str:
    return f"{n / GIB:8.2f}"


def describe_estimate(m: ModelConfig, est: Estimate, work: Workload, cluster: Cluster) -> list[str]:
    peak = est.peak
    n_micro = work.global_batch // (work.micro_batch * est.layout.dp)
    rows = [
        ("weights", peak.params),
        ("gradients (fp32 DDP buffer)", peak.grads),
        ("optimizer state (Adam" + (", distributed)" if est.layout.dist_opt else ")"), peak.optimizer),
        ("activations (schedule peak)", peak.activations),
        ("temporary buffers", peak.temporary),
    ]
    lines = [
        f"layout: {est.layout.describe()}   ({n_micro} micro-batches of {work.micro_batch} per step)",
        f"per GPU (pipeline rank {peak.pp_rank}, the largest){'GiB':>16}",
        *(f"  {label:<42}{_gib(value)}" for label, value in rows),
        f"  {'total':<42}{_gib(peak.total)}   of {cluster.usable_bytes / GIB:.2f} usable",
        "  by pipeline rank: " + ", ".join(f"{r.pp_rank}: {r.total / GIB:.1f}" for r in est.ranks),
    ]
    variants = []
    main = work.precision != "fp32"
    for dist_opt in (False, True):
        for fp8_param in (False, True) if work.fp8 else (False,):
            lay = dataclasses.replace(est.layout, dist_opt=dist_opt)
            pb = 1 if fp8_param else work.dtype_bytes
            st = rank_state_bytes(m, lay, peak.pp_rank, 0, pb, main)
            name = f"{'distributed' if dist_opt else 'plain'} optimizer{', FP8 params' if fp8_param else ''}"
            variants.append(f"{name}: {(st.params + st.grads + st.optimizer) / GIB:.1f}")
    lines.append("  weights+grads+optimizer with " + "; ".join(variants) + " GiB")
    lines.append(
        "  largest temporaries: " + ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in est.temporaries.items())
    )
    lines.append(
        "communication per GPU per step: "
        + ", ".join(f"{k} {v / 1e9:.1f} GB" for k, v in est.comm_bytes.items())
    )
    lines.append(f"pipeline bubble (p-1)/(v·m): {est.bubble:.2%}")
    lines.append(
        f"step time ≈ {est.step_time:.2f} s ("
        + ", ".join(f"{k} {v:.2f}" for k, v in est.times.items())
        + f"); {est.tflops_per_gpu:.0f} model TFLOP/s per GPU, MFU {est.mfu:.1%}"
    )
    if est.problems:
        lines.append("DOES NOT FIT: " + "; ".join(est.problems))
    return lines


def plan(job: PlanJob) -> dict:
    """The plan as a JSON-ready dict and its text report (``report``)."""
    opts = job.plan
    model = resolved_model(job)
    gpu = GPUS.get(opts.gpu.lower()) if opts.gpu.lower() in GPUS else None
    if gpu is None:
        raise ConfigError(f"plan.gpu: {GPUS.unknown_message(opts.gpu)}")
    par = job.parallel
    gpus = opts.gpus or par.tensor_model_parallel_size * par.pipeline_model_parallel_size
    try:
        memory = parse_bytes(opts.gpu_memory) if opts.gpu_memory else None
    except ValueError as exc:
        raise ConfigError(f"plan.gpu_memory: {exc}") from None
    cluster = Cluster(gpu, gpus, opts.gpus_per_node, memory, opts.headroom, opts.efficiency)
    work = workload(job, opts.impl)
    if opts.search:
        base = Layout(dist_opt=par.use_distributed_optimizer, overlap_grad_reduce=par.overlap_grad_reduce)
    else:
        base = job_layout(job, gpus)
    header = [
        f"model: {model.arch}, {model.num_layers} layers, hidden {model.hidden_size}, heads {model.num_attention_heads}"
        f" (KV groups {model.num_query_groups}), ffn {model.ffn_hidden_size} ({model.activation}), vocab {model.vocab_size}"
        f"{', tied embeddings' if not model.untie_embeddings_and_output_weights else ''}",
        f"work: seq {work.seq}, micro-batch {work.micro_batch}, global batch {work.global_batch}, {work.precision}"
        f"{' + FP8' if work.fp8 else ''}, attention {work.impl}",
        f"cluster: {gpus} × {gpu.name} ({(memory or gpu.memory_bytes) / GIB:.1f} GiB, {cluster.usable_bytes / GIB:.1f} usable), "
        f"{cluster.gpus_per_node} per node",
    ]
    result: dict = {"model": dataclasses.asdict(model), "cluster": {"gpus": gpus, "gpu": gpu.name}}
    if not opts.search:
        problems = layout_problems(model, base, work, cluster)
        if problems:  # the recipe's own layout cannot run: a config error, like `train` gives
            raise ConfigError("; ".join(f"{reason} ({detail})" for reason, detail in problems))
        est = estimate(model, base, work, cluster)
        result.update(layouts=[_as_dict(est)], fits=est.feasible)
        result["report"] = "\n".join([*header, "", *describe_estimate(model, est, work, cluster)])
        return result
    feasible, rejected = search(model, work, cluster, base)
    lines = [*header, "", f"{len(feasible)} feasible layouts; fastest first:"]
    lines.append(f"  {'#':>3} {'layout':<52} {'GiB':>7} {'step s':>8} {'MFU':>6} {'bubble':>7}")
    for i, est in enumerate(feasible[: opts.top], 1):
        lines.append(
            f"  {i:>3} {est.layout.describe():<52} {est.peak.total / GIB:7.1f} {est.step_time:8.2f} {est.mfu:6.1%} {est.bubble:7.2%}"
        )
    if feasible:
        lines += ["", "best:", *describe_estimate(model, feasible[0], work, cluster)]
    lines += ["", "infeasible:"]
    for reason, layouts in sorted(rejected.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"  {len(layouts):4d} × {reason} (e.g. {layouts[0]})")
    result.update(
        layouts=[_as_dict(e) for e in feasible],
        fits=bool(feasible),
        rejected={k: len(v) for k, v in rejected.items()},
    )
    result["report"] = "\n".join(lines)
    return result


def _as_dict(est: Estimate) -> dict:
    return {
        "layout": dataclasses.asdict(est.layout),
        "describe": est.layout.describe(),
        "ranks": [{**dataclasses.asdict(r), "total": r.total} for r in est.ranks],
        "peak_bytes": est.peak.total,
        "temporaries": est.temporaries,
        "comm_bytes": est.comm_bytes,
        "bubble": est.bubble,
        "times": est.times,
        "step_time_s": est.step_time,
        "mfu": est.mfu,
        "tflops_per_gpu": est.tflops_per_gpu,
        "problems": est.problems,
    }


def load_plan_job(config_path: str, overrides: list[str]) -> PlanJob:
    return load_config(PlanJob, config_path, flags_to_overrides("plan", list(overrides)))


def plan_main(config_path: str, overrides: list[str]) -> int:
    """The ``plan`` verb: prints the report; exit 0 when a layout fits, 1 when none does."""
    job = load_plan_job(config_path, overrides)
    result = plan(job)
    print(result["report"])
    if job.plan.output:
        from tower_megatron.utils.atomic import write_text

        write_text(job.plan.output, json.dumps({k: v for k, v in result.items() if k != "report"}, indent=2))
    return 0 if result["fits"] else 1
