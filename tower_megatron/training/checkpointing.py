"""Checkpoints through Megatron-Core ``dist_checkpointing`` (``torch_dist`` format).

Layout of ``<run_dir>/checkpoints``::

    iter_0000010/        a complete checkpoint (model, optimizer, scheduler, RNG, train state)
    iter_0000020/
    latest               text file naming the newest complete checkpoint (for people and tools)
    .tmp_iter_0000030/   a save in progress (or killed): never read, removed at the next start

A save writes into ``.tmp_iter_N``; after every rank finished, rank 0 writes ``tower_meta.json``
(the completion mark), renames the directory, then rewrites ``latest`` atomically. A ``kill -9``
at any moment therefore leaves every earlier checkpoint intact, and resuming picks the newest
directory that carries the mark. Loading reshards across TP/PP/DP (``dist_checkpointing``); the
RNG state is restored only on an identical layout.

Optimizer formats (recorded in the meta so a checkpoint loads whatever the current config says):
``plain`` (Megatron's non-distributed optimizer), ``fully_reshardable`` and ``dp_reshardable``
(the distributed optimizer; the latter reshards across DP only). Megatron's default distributed
format, ``fully_sharded_model_space``, is never used: it cannot be saved on this stack
("flattened_range is not supported").
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core import parallel_state as ps
from megatron.core.dist_checkpointing.core import CheckpointingException
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, ShardedTensorFactory
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from tower_megatron.config.loader import ConfigError
from tower_megatron.models.checkpoint import load_model_checkpoint
from tower_megatron.runtime import runtime_device
from tower_megatron.runtime.compat import prepare_distributed_optimizer_for_load, unshare_step_tensors
from tower_megatron.training.builder import sync_params
from tower_megatron.training.checkpoint_policy import (
    align_saved_param_groups,
    apply_optimizer_hyperparameters,
    disk_full,
    prunable,
    restore_schedule,
    use_in_process_write_queue,
)
from tower_megatron.utils.atomic import replace_path, write_json, write_text

if TYPE_CHECKING:
    from tower_megatron.training.trainer import Trainer

META_FILE = "tower_meta.json"
LATEST_FILE = "latest"
FORMAT_VERSION = 2
TMP_PREFIX = ".tmp_"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be loaded into this job (missing, incomplete, other model shape,
    incompatible optimizer format). A ConfigError so the CLI prints one line, not a traceback."""


def layout() -> dict[str, int]:
    return {
        "tp": ps.get_tensor_model_parallel_world_size(),
        "pp": ps.get_pipeline_model_parallel_world_size(),
        "dp": ps.get_data_parallel_world_size(),
        "vpp": ps.get_virtual_pipeline_model_parallel_world_size() or 1,
    }


# ---------------------------------------------------------------------------- discovery
def is_complete(path: Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {}


def checkpoint_step(path: Path) -> int:
    return int(Path(path).name.rsplit("_", 1)[-1])


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete ``iter_<step>`` directories under ``root``, oldest first."""
    found = [p for p in Path(root).glob("iter_*") if p.name[5:].isdigit() and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``.

    The completion mark, not ``latest``, decides: a kill between the rename and the rewrite of
    ``latest`` leaves a newer complete checkpoint than the pointer names, and it is valid.
    """
    complete = complete_checkpoints(root)
    return complete[-1] if complete else None


def resolve_load_path(path: str | Path) -> Path:
    """``checkpoint.load``: a checkpoint directory, or a checkpoints root (its newest complete one).

    Raises :class:`CheckpointError` naming the path when nothing complete is there.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint.load: no such directory: {path}")
    # Without the trainer's mark (converted checkpoints): dist_checkpointing writes metadata.json
    # in its finalize step, after all shards.
    dist_ckpt = (path / "metadata.json").is_file() and not path.name.startswith(TMP_PREFIX)
    if is_complete(path) or dist_ckpt:
        return path
    found = latest_checkpoint(path)
    if found is not None:
        return found
    if path.name.startswith(TMP_PREFIX) or any(path.glob("*.distcp")):
        raise CheckpointError(
            f"checkpoint.load: {path} is an incomplete checkpoint (an interrupted save: no "
            f"{META_FILE} / metadata.json); point at a complete iter_* directory"
        )
    partial = sorted(p.name for p in path.glob(f"{TMP_PREFIX}iter_*"))
    hint = f" (only interrupted saves: {', '.join(partial)})" if partial else ""
    raise CheckpointError(f"checkpoint.load: {path} holds no complete checkpoint{hint}")


def remove_incomplete(root: Path) -> list[Path]:
    """Rank 0 deletes saves that a crash or ``kill -9`` interrupted; returns what it removed."""
    removed = [tmp for tmp in Path(root).glob(f"{TMP_PREFIX}*") if tmp.is_dir()]
    for tmp in removed:
        shutil.rmtree(tmp, ignore_errors=True)
    return removed


# ---------------------------------------------------------------------------- state dicts
def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The model inside Megatron DDP: checkpoints hold the bare model's keys, so converted
    checkpoints (written without DDP) and trainer checkpoints are interchangeable."""
    return getattr(chunk, "module", chunk)


def model_key(index: int, num_chunks: int) -> str:
    return "model" if num_chunks == 1 else f"model{index}"


def _model_state(chunks: list[torch.nn.Module]) -> dict[str, Any]:
    return {model_key(i, len(chunks)): unwrap(c).sharded_state_dict() for i, c in enumerate(chunks)}


def _sharded_tensors(state: Any) -> list[ShardedTensor]:
    out: list[ShardedTensor] = []
    for value in nested_values(state):
        if isinstance(value, ShardedTensorFactory):
            out.extend(_sharded_tensors(value.build()))
        elif isinstance(value, ShardedTensor):
            out.append(value)
    return out


def _rng_state() -> ShardedObject:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        # On the CPU runtime torch.cuda's RNG is the CPU generator, saved above already.
        "cuda": torch.cuda.get_rng_state() if runtime_device().type == "cuda" else None,
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
    if state.get("cuda") is not None and runtime_device().type == "cuda":
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["tracker"])


# ---------------------------------------------------------------------------- optimizer
# The distributed-optimizer load fixes (Megatron-Core internals) live with every other such
# workaround in runtime/compat.py, which checks the internals they touch before patching.
def optimizer_format(trainer: Trainer) -> str:
    """The format this job saves its optimizer in."""
    if not trainer.job.parallel.use_distributed_optimizer:
        return "plain"
    return "fully_reshardable" if trainer.job.checkpoint.fully_reshardable else "dp_reshardable"


def full_state(
    trainer: Trainer,
    is_loading: bool,
    with_optimizer: bool = True,
    with_rng: bool = True,
    fmt: str | None = None,
) -> dict:
    state = _model_state(trainer.model)
    if with_optimizer:
        fmt = fmt or optimizer_format(trainer)
        metadata = {} if fmt == "plain" else {"distrib_optim_sharding_type": fmt}
        state["optimizer"] = trainer.optimizer.sharded_state_dict(
            state, is_loading=is_loading, metadata=metadata
        )
        state["opt_param_scheduler"] = trainer.scheduler.state_dict()
        state["train_state"] = trainer.state.as_dict()
        # The stage's own resume state (GRPO's prompt sampler, ...), same on every rank.
        state["stage_state"] = trainer.stage.state_dict()
    if with_rng:
        state["rng_state"] = _rng_state()
    return state


# ---------------------------------------------------------------------------- save
def save_checkpoint(trainer: Trainer, root: Path, keep_last: int = 0) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    root = Path(root)
    name = f"iter_{trainer.state.step:07d}"
    tmp, final = root / f"{TMP_PREFIX}{name}", root / name
    if dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    use_in_process_write_queue()  # no helper process for a pre-emption signal to kill
    # With overlap_param_gather the last step's updated weights are gathered only by the next
    # forward pass: without this the saved model tensors would be one step stale.
    sync_params(trainer.model)
    try:
        dist_checkpointing.save(full_state(trainer, is_loading=False), str(tmp))
    except BaseException as exc:  # torch DCP's CheckpointException derives from BaseException
        full = disk_full(tmp)
        if full is not None:  # the .tmp_ directory is removed at the next start
            raise full from exc
        raise
    dist.barrier()  # every rank's shards are on disk before the mark
    if dist.get_rank() == 0:
        meta = {
            "format_version": FORMAT_VERSION,
            "train_state": trainer.state.as_dict(),
            "layout": layout(),
            "optimizer_format": optimizer_format(trainer),
            "stage": trainer.job.train.stage,
            "model": trainer.model_config,
        }
        write_json(tmp / META_FILE, meta)
        # Re-saving a step moves the old one aside under a .tmp_ name, which start-up cleans.
        replace_path(tmp, final, aside=root / f"{TMP_PREFIX}old_{name}")
        write_text(root / LATEST_FILE, name + "\n")
        for old in prunable(complete_checkpoints(root), final, keep_last, checkpoint_step):
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


# ---------------------------------------------------------------------------- load
def _config_diff(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> str:
    """`` (checkpoint vs this job: hidden_size=64 vs 32)`` from the two model configs."""
    if not saved or not current:
        return ""
    diff = [
        f"{k}={saved[k]} vs {current[k]}" for k in sorted(current) if k in saved and saved[k] != current[k]
    ]
    return f" (checkpoint vs this job: {', '.join(diff[:5])})" if diff else ""


def _check_model_matches(trainer: Trainer, path: Path, meta: dict[str, Any]) -> None:
    """Compares every model tensor's global shape with the checkpoint's before loading anything,
    so a checkpoint of another model fails with the tensor's name, not deep inside torch DCP."""
    try:
        saved = dist_checkpointing.load_tensors_metadata(str(path))
    except Exception as exc:  # unreadable metadata: an incomplete or foreign directory
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    problems: set[str] = set()
    for sh in _sharded_tensors(_model_state(trainer.model)):
        if sh.key not in saved:
            problems.add(f"{sh.key} is missing from the checkpoint")
            continue
        have, want = tuple(saved[sh.key].global_shape), tuple(sh.global_shape)
        # Vocabulary padding depends on TP (allow_shape_mismatch): compare the other axes only.
        skip = sh.prepend_axis_num + 1 if sh.allow_shape_mismatch else 0
        if have[skip:] != want[skip:] or len(have) != len(want):
            problems.add(f"{sh.key} has shape {list(have)} in the checkpoint, {list(want)} in this model")
    if problems:
        listed = sorted(problems)
        more = f" (and {len(listed) - 3} more)" if len(listed) > 3 else ""
        diff = _config_diff(meta.get("model"), trainer.model_config)
        raise CheckpointError(
            f"checkpoint {path} does not fit this model{diff}: {'; '.join(listed[:3])}{more}"
        )


def _check_optimizer_format(trainer: Trainer, meta: dict[str, Any], path: Path) -> str:
    saved_fmt = meta.get("optimizer_format") or optimizer_format(trainer)
    current = optimizer_format(trainer)
    if (saved_fmt == "plain") != (current == "plain"):
        raise CheckpointError(
            f"checkpoint {path} holds {'a distributed' if saved_fmt != 'plain' else 'a non-distributed'} "
            f"optimizer state; this job has parallel.use_distributed_optimizer="
            f"{str(current != 'plain').lower()}. Use the saved setting, or load the weights only "
            f"(checkpoint.load=... checkpoint.load_optimizer=false)"
        )
    saved_layout, now = meta.get("layout") or {}, layout()
    if saved_fmt == "dp_reshardable" and any(saved_layout.get(k) != now[k] for k in ("tp", "pp", "vpp")):
        raise CheckpointError(
            f"checkpoint {path} stores the distributed optimizer as dp_reshardable "
            f"(checkpoint.fully_reshardable=false), which loads only at the saved TP/PP/VPP "
            f"{saved_layout}; this job runs {now}. Load the weights only (checkpoint.load_optimizer=false)"
        )
    return saved_fmt


def load_checkpoint(trainer: Trainer, path: Path, with_optimizer: bool = True) -> dict[str, Any]:
    """Restores what ``path`` holds into the trainer (resharding as needed); returns its meta.

    Checkpoints without the tower meta (converted from Hugging Face) give weights only.
    """
    path = Path(path)
    meta = read_meta(path)
    _check_model_matches(trainer, path, meta)
    has_optimizer = bool(meta.get("train_state")) and with_optimizer
    fmt = _check_optimizer_format(trainer, meta, path) if has_optimizer else None
    if not has_optimizer:
        # Weights only (converted from Hugging Face, or load_optimizer=false): the models package
        # loader tolerates _extra_state entries the file lacks (TE's FP8 metadata).
        try:
            load_model_checkpoint(trainer.model, path)
        except CheckpointingException as exc:
            raise CheckpointError(f"loading weights from {path} failed: {exc}") from exc
        # bf16 runs keep fp32 main copies of the weights inside the optimizer, which still hold
        # the initialisation; without this the first step would copy them over the loaded weights.
        trainer.optimizer.reload_model_params()
        return meta
    if fmt != "plain":
        prepare_distributed_optimizer_for_load(trainer.optimizer)
    same_layout = meta.get("layout") == layout()
    sharded = full_state(trainer, is_loading=True, with_optimizer=True, with_rng=same_layout, fmt=fmt)
    try:
        loaded = dist_checkpointing.load(sharded, str(path))
    except CheckpointingException as exc:
        raise CheckpointError(f"loading checkpoint {path} failed: {exc}") from exc
    for i, chunk in enumerate(trainer.model):
        unwrap(chunk).load_state_dict(loaded[model_key(i, len(trainer.model))], strict=True)
    saved_sched = loaded["opt_param_scheduler"]
    align_saved_param_groups(loaded["optimizer"], saved_sched, trainer.scheduler)
    trainer.optimizer.load_state_dict(loaded["optimizer"])
    unshare_step_tensors(trainer.optimizer)
    changes = apply_optimizer_hyperparameters(trainer.optimizer, trainer.job)
    changes += restore_schedule(trainer.scheduler, saved_sched)
    if changes and dist.get_rank() == 0:
        print(f"resume from {path}: the config changed {'; '.join(changes)}; the config's values "
              "apply from this step on", flush=True)  # fmt: skip
    for field, value in loaded["train_state"].items():
        setattr(trainer.state, field, int(value))
    if loaded.get("stage_state"):
        trainer.stage.load_state_dict(loaded["stage_state"])
    if "rng_state" in loaded:
        _set_rng_state(loaded["rng_state"])
    return meta
