"""Start a run's processes: torch.distributed from torchrun's environment, Megatron's parallel
state, the device (CUDA + NCCL, or CPU + gloo through :mod:`cpu_shim`) and the seeds.

One entry point, :func:`init_runtime`, used by the CLI, the tests and the benchmarks alike.
"""

from __future__ import annotations

import datetime
import os
import random
import socket
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from tower_megatron.runtime import cpu_shim


@dataclass(frozen=True)
class Runtime:
    """What a started process knows about itself."""

    device: torch.device
    backend: str
    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    vpp: int | None
    cp: int
    dp: int

    @property
    def is_cpu(self) -> bool:
        return self.device.type == "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The device init_runtime decided for this process: every later device-dependent choice (layer
# specs, Transformer Engine, MFU peak, profiler activities, RNG state) follows it, never
# torch.cuda.is_available() again (run.device=cpu on a GPU host must stay on CPU).
_decided: torch.device | None = None


def runtime_device() -> torch.device:
    """This process's device as :func:`init_runtime` resolved it; before any runtime starts,
    what ``run.device=auto`` would pick (tools that never start one: conversion, tests)."""
    if _decided is not None:
        return _decided
    if cpu_shim.is_installed():
        return torch.device("cpu")
    return torch.device(resolve_device("auto"))


def resolve_device(requested: str = "auto") -> str:
    """``auto`` picks CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is an error."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"runtime.device must be auto, cpu or cuda, not {requested!r}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device=cuda but no CUDA device is visible")
    return requested


def _ensure_env() -> None:
    """A plain ``python -m tower_megatron`` (no torchrun) runs as a world of one."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def set_seeds(seed: int) -> None:
    """Seeds Python, NumPy, torch and Megatron's model-parallel RNG tracker.

    The tracker gives each TP rank its own dropout stream and keeps the same stream across DP
    ranks, as Megatron requires.
    """
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed)


def init_runtime(
    tp: int = 1,
    pp: int = 1,
    vpp: int | None = None,
    cp: int = 1,
    seed: int = 1234,
    device: str = "auto",
    timeout_minutes: int = 30,
) -> Runtime:
    """Initialises torch.distributed and Megatron's parallel state; idempotent per process."""
    from megatron.core import parallel_state as ps

    global _decided
    kind = resolve_device(device)
    if kind == "cpu":
        cpu_shim.install()
    _ensure_env()
    if kind == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # torch gives every process all cores; N ranks on one machine would oversubscribe them
        # (steps measured 40× slower). Share the cores out instead.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if world % (tp * pp * cp) != 0:
        raise ValueError(f"world size {world} is not divisible by TP×PP×CP = {tp}×{pp}×{cp}")
    backend = "nccl" if kind == "cuda" else "gloo"
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vpp,
        context_parallel_size=cp,
        distributed_timeout_minutes=timeout_minutes,
    )
    set_seeds(seed)
    _decided = torch.device(kind, local_rank) if kind == "cuda" else torch.device("cpu")
    return Runtime(
        device=_decided,
        backend=backend,
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        tp=tp,
        pp=pp,
        vpp=vpp,
        cp=cp,
        dp=world // (tp * pp * cp),
    )


def shutdown_runtime() -> None:
    """Tears down Megatron's groups and the process group (the CPU shim stays: it is harmless)."""
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
