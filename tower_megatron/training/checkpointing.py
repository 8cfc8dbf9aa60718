"""Checkpoints through Megatron-Core ``dist_checkpointing`` (``torch_dist`` format).

Layout of ``<run_dir>/checkpoints``::

    iter_0000010/        a complete checkpoint (model, optimizer, scheduler, RNG, train state)
    iter_0000020/
    latest               text file naming the newest complete checkpoint
    .tmp_iter_0000030/   a save in progress (or killed): never read, removed at the next start

A save writes into ``.tmp_iter_N``, all ranks finish, rank 0 writes ``tower_meta.json`` (the
completion mark) and renames the directory, then rewrites ``latest`` atomically. A ``kill -9``
at any moment therefore leaves the previous checkpoint and ``latest`` intact. Loading reshards
across TP/PP/DP (``dist_checkpointing``); RNG state is restored only on an identical layout.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core import parallel_state as ps
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from tower_megatron.utils.atomic import write_json, write_text

if TYPE_CHECKING:
    from tower_megatron.training.trainer import Trainer

META_FILE = "tower_meta.json"
LATEST_FILE = "latest"
FORMAT_VERSION = 1


def layout() -> dict[str, int]:
    return {
        "tp": ps.get_tensor_model_parallel_world_size(),
        "pp": ps.get_pipeline_model_parallel_world_size(),
        "dp": ps.get_data_parallel_world_size(),
        "vpp": ps.get_virtual_pipeline_model_parallel_world_size() or 1,
    }


# ---------------------------------------------------------------------------- discovery
def is_complete(path: Path) -> bool:
    return (path / META_FILE).is_file()


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {}


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``latest`` first, then a scan)."""
    root = Path(root)
    pointer = root / LATEST_FILE
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if is_complete(candidate):
            return candidate
    complete = sorted(p for p in root.glob("iter_*") if p.is_dir() and is_complete(p))
    return complete[-1] if complete else None


def resolve_load_path(path: str | Path) -> Path:
    """A checkpoint directory, or a checkpoints root holding ``latest``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint.load: no such directory: {path}")
    if (path / "metadata.json").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"checkpoint.load: {path} holds no complete checkpoint")
    return found


def remove_incomplete(root: Path) -> None:
    """Rank 0 deletes saves that a crash or ``kill -9`` interrupted."""
    for tmp in Path(root).glob(".tmp_iter_*"):
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- state dicts
def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The model inside Megatron DDP: checkpoints hold the bare model's keys, so converted
    checkpoints (written without DDP) and trainer checkpoints are interchangeable."""
    return getattr(chunk, "module", chunk)


def model_key(index: int, num_chunks: int) -> str:
    return "model" if num_chunks == 1 else f"model{index}"


def _model_state(chunks: list[torch.nn.Module]) -> dict[str, Any]:
    return {model_key(i, len(chunks)): unwrap(c).sharded_state_dict() for i, c in enumerate(chunks)}


def _rng_state() -> ShardedObject:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": get_cuda_rng_tracker().get_states(),
    }
    shape = (
        ps.get_pipeline_model_parallel_world_size(),
        ps.get_tensor_model_parallel_world_size(),
        ps.get_data_parallel_world_size(),
    )
    offset = (
        ps.get_pipeline_model_parallel_rank(),
        ps.get_tensor_model_parallel_rank(),
        ps.get_data_parallel_rank(),
    )
    return ShardedObject("rng_state", state, shape, offset, replica_id=0)


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def _optimizer_metadata(trainer: Trainer) -> dict[str, Any]:
    if trainer.job.parallel.use_distributed_optimizer and trainer.job.checkpoint.fully_reshardable:
        return {"distrib_optim_sharding_type": "fully_reshardable"}
    return {}


def full_state(
    trainer: Trainer, is_loading: bool, with_optimizer: bool = True, with_rng: bool = True
) -> dict:
    state = _model_state(trainer.model)
    if with_optimizer:
        state["optimizer"] = trainer.optimizer.sharded_state_dict(
            state, is_loading=is_loading, metadata=_optimizer_metadata(trainer)
        )
        state["opt_param_scheduler"] = trainer.scheduler.state_dict()
        state["train_state"] = trainer.state.as_dict()
    if with_rng:
        state["rng_state"] = _rng_state()
    return state


# ---------------------------------------------------------------------------- save / load
def save_checkpoint(trainer: Trainer, root: Path, keep_last: int = 0) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    root = Path(root)
    name = f"iter_{trainer.state.step:07d}"
    tmp, final = root / f".tmp_{name}", root / name
    if dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dist_checkpointing.save(full_state(trainer, is_loading=False), str(tmp))
    dist.barrier()
    if dist.get_rank() == 0:
        meta = {
            "format_version": FORMAT_VERSION,
            "train_state": trainer.state.as_dict(),
            "layout": layout(),
            "stage": trainer.job.train.stage,
            "model": getattr(trainer, "model_cfg_dict", None),
        }
        write_json(tmp / META_FILE, meta)
        if final.exists():  # re-saving a step (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text(root / LATEST_FILE, name + "\n")
        if keep_last > 0:
            complete = sorted(p for p in root.glob("iter_*") if p.is_dir() and is_complete(p))
            for old in complete[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_checkpoint(trainer: Trainer, path: Path, with_optimizer: bool = True) -> dict[str, Any]:
    """Restores what ``path`` holds into the trainer (resharding as needed); returns its meta."""
    path = Path(path)
    meta = read_meta(path)
    saved_layout = meta.get("layout")
    same_layout = saved_layout == layout()
    has_optimizer = bool(meta) and with_optimizer
    sharded = full_state(
        trainer, is_loading=True, with_optimizer=has_optimizer, with_rng=has_optimizer and same_layout
    )
    loaded = dist_checkpointing.load(sharded, str(path))
    for i, chunk in enumerate(trainer.model):
        unwrap(chunk).load_state_dict(loaded[model_key(i, len(trainer.model))], strict=True)
    if has_optimizer:
        trainer.optimizer.load_state_dict(loaded["optimizer"])
        trainer.scheduler.load_state_dict(loaded["opt_param_scheduler"])
        for field, value in loaded["train_state"].items():
            setattr(trainer.state, field, int(value))
        if "rng_state" in loaded:
            _set_rng_state(loaded["rng_state"])
    return meta
