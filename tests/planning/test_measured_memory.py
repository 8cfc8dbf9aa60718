"""The planner against measurement: the same 2-process gloo runs that train report their real
per-rank bytes (:class:`~tower_megatron.planning.measure.MemoryProbe`: parameter storages,
Megatron DDP gradient buffers, optimizer state, and the peak of saved-for-backward storages), and
the planner predicts them from the config alone.

Parameters, gradients and optimizer state must agree to the byte (they follow Megatron's buffer
layout, padding and distributed-optimizer sharding); activations within 10% (measured: within
0.4%, most layouts to the byte). On a GPU the total is also held against
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import pytest

from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

GQA = ["model.num_query_groups=2"]  # 4 heads, 2 KV groups: the repeated-KV path of Qwen/Gemma
LAYOUTS = {
    "tp2": ["parallel.tensor_model_parallel_size=2", *GQA],
    "tp2_sp_selective": [
        "parallel.tensor_model_parallel_size=2",
        "parallel.sequence_parallel=true",
        "model.recompute_granularity=selective",
        *GQA,
    ],
    "pp2_vpp2": [  # 1F1B interleaved: 3 chunk micro-batches in flight on rank 0, 2 on rank 1
        "parallel.pipeline_model_parallel_size=2",
        "parallel.virtual_pipeline_model_parallel_size=2",
        "model.num_layers=4",
        *GQA,
    ],
    "dp2_distopt_bf16": ["parallel.use_distributed_optimizer=true", "train.precision=bf16", *GQA],
    # Gemma 2: sandwich (1 + w) norms, soft-capped attention and logits, tied embeddings
    "gemma2_tp2_sp_bf16": [
        "model.arch=gemma2",
        "model.kv_channels=16",
        "train.precision=bf16",
        "parallel.tensor_model_parallel_size=2",
        "parallel.sequence_parallel=true",
        *GQA,
    ],
    # fp32, plain multi-head attention (v stays a view of the QKV output), full recompute
    "dp2_distopt_full_recompute": [
        "parallel.use_distributed_optimizer=true",
        "model.recompute_granularity=full",
    ],
}
ACTIVATION_RTOL = 0.10


def _measure(assets_dir: str, out_dir: str, layouts: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    from tower_megatron.planning.measure import MemoryProbe
    from tower_megatron.training.entry import run_training

    assets = build_tiny_assets(assets_dir)
    measured = {}
    for name, overrides in layouts.items():
        probe = MemoryProbe()
        job = tiny_job(assets, f"{out_dir}/{name}", "train.train_steps=1", *overrides)
        run_training(job, extra_callbacks=[probe])
        measured[name] = probe.records[0]
    return measured


def _predict(assets, out_dir: str, name: str, rank: int) -> dict[str, int]:
    from tower_megatron.planning.estimate import rank_memory
    from tower_megatron.planning.planner import job_layout, resolved_model, workload

    job = tiny_job(assets, f"{out_dir}/{name}", *LAYOUTS[name])
    layout = job_layout(job, gpus=2)
    model = resolved_model(job)
    pp_rank = rank if layout.pp > 1 else 0
    dp_rank = rank if layout.dp > 1 else 0
    mem = rank_memory(model, layout, workload(job, "local"), pp_rank, dp_rank)
    return {
        "params": mem.params,
        "grads": mem.grads,
        "optimizer": mem.optimizer,
        "activations": mem.activations,
    }


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    assets = tmp_path_factory.mktemp("assets")
    out = tmp_path_factory.mktemp("runs")
    results = run_distributed(
        _measure, world_size=2, assets_dir=str(assets), out_dir=str(out), layouts=LAYOUTS
    )
    return build_tiny_assets(assets), str(out), results


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_planner_matches_measured_bytes(measured, name):
    assets, out, results = measured
    for rank, per_rank in enumerate(results):
        got = per_rank[name]
        want = _predict(assets, out, name, rank)
        for kind in ("params", "grads", "optimizer"):
            assert want[kind] == got[kind], (
                f"{name} rank {rank} {kind}: planned {want[kind]}, measured {got[kind]}"
            )
        assert want["activations"] == pytest.approx(got["activations"], rel=ACTIVATION_RTOL), (
            f"{name} rank {rank} activations: planned {want['activations']}, measured {got['activations']}"
        )


def _gpu_measure(assets_dir: str, out_dir: str) -> tuple[dict[str, int], dict[str, int]]:
    from tower_megatron.planning.estimate import rank_memory
    from tower_megatron.planning.measure import MemoryProbe
    from tower_megatron.planning.planner import job_layout, resolved_model, workload
    from tower_megatron.training.entry import run_training

    assets = build_tiny_assets(assets_dir)
    shape = [
        "run.device=cuda",
        "model.transformer_impl=local",
        "model.num_layers=4",
        "model.hidden_size=1024",
        "model.num_attention_heads=16",
        "model.num_query_groups=4",
        "model.max_position_embeddings=1024",
        "train.seq_length=1024",
        "train.micro_batch_size=4",
        "train.global_batch_size=8",
        "train.precision=bf16",
        "train.train_steps=2",
    ]
    job = tiny_job(assets, f"{out_dir}/gpu", *shape)
    probe = MemoryProbe()
    run_training(job, extra_callbacks=[probe])
    planned = rank_memory(resolved_model(job), job_layout(job, 1), workload(job, "local"), 0, 0)
    return probe.records[-1], {"total": planned.total, "params": planned.params, "grads": planned.grads}


@pytest.mark.gpu
def test_planned_peak_against_cuda_max_memory_allocated(tmp_path):
    """The whole plan (state + activations + temporaries) against the CUDA allocator's peak."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    [(measured, planned)] = run_distributed(
        _gpu_measure, world_size=1, assets_dir=str(tmp_path / "assets"), out_dir=str(tmp_path / "runs")
    )
    assert planned["params"] == measured["params"] and planned["grads"] == measured["grads"]
    assert planned["total"] == pytest.approx(measured["max_memory_allocated"], rel=0.20)
