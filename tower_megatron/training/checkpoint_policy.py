"""What a save may delete, what a fresh start may reuse, and what a resumed run takes from the
config rather than from the checkpoint. The mechanics of saving and loading are in
:mod:`tower_megatron.training.checkpointing`; the rules are here, each with its reason.

* **Pruning** (``checkpoint.keep_last``) removes only checkpoints *older* than the one just saved.
  A newer ``iter_*`` directory was not written by this run's past and is never touched.
* **Fresh start** (``checkpoint.resume=false``) in a run directory that already holds complete
  checkpoints is refused before anything is written: mixing two runs' checkpoints in one
  directory makes ``latest``, pruning and the next resume ambiguous.
* **Resume with a changed schedule or optimizer**: the config wins. The step counter, model,
  Adam moments and data position come from the checkpoint; learning rate, schedule length,
  warm-up, decay style, weight decay, Adam betas and eps come from the config, so raising
  ``train.train_steps`` stretches the decay, and a new ``optimizer.lr`` applies from the resumed
  step on. Every value that differs from the checkpoint's is printed once.
* **The write-results queue**: Megatron-Core's filesystem writer hands its results through a
  ``multiprocessing.Manager`` queue, which starts a helper process at the first save. Saves here
  are synchronous, so an in-process :class:`queue.Queue` does the same job with no helper process
  to be killed by a pre-emption signal sent to the process group, or to outlive a ``kill -9``.
"""

from __future__ import annotations

import errno
import queue
import shutil
from pathlib import Path
from typing import Any

from tower_megatron.config.loader import ConfigError

# Scheduler state keys that also key Megatron's optimizer parameter groups.
_GROUP_KEYS = ("max_lr", "min_lr", "start_wd", "end_wd")


def use_in_process_write_queue() -> None:
    """Makes Megatron's synchronous ``dist_checkpointing.save`` start no helper process."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        filesystem_async._results_queue = queue.Queue()


def disk_full(path: Path, min_free: int = 1 << 20) -> OSError | None:
    """An ``ENOSPC`` error naming ``path`` when its filesystem is (nearly) full, else None.

    A failed save rarely says so itself: torch's zip writer reports a full disk as "enforce fail
    at inline_container.cc: unexpected pos", wrapped in Megatron's and DCP's exceptions.
    """
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= min_free:
        return None
    return OSError(errno.ENOSPC, f"No space left on device ({free} bytes free)", str(path))


def prunable(complete: list[Path], just_saved: Path, keep_last: int, step_of) -> list[Path]:
    """Checkpoints ``keep_last`` may remove after saving ``just_saved``: only older ones."""
    if keep_last <= 0:
        return []
    step = step_of(just_saved)
    older = [p for p in complete if step_of(p) < step]
    return older[: max(0, len(older) - (keep_last - 1))]


def fresh_start_problem(ckpt_root: Path, resume: bool) -> str | None:
    """Why a ``checkpoint.resume=false`` run cannot start in this run directory, or None."""
    from tower_megatron.training.checkpointing import complete_checkpoints

    if resume:
        return None
    found = complete_checkpoints(ckpt_root) if Path(ckpt_root).is_dir() else []
    if not found:
        return None
    names = ", ".join(p.name for p in found[-3:])
    return (
        f"checkpoint.resume=false but {ckpt_root} holds checkpoints of an earlier run ({names}); "
        "a fresh run would mix with and prune them. Choose another run.name, or move that "
        "directory away yourself"
    )


def check_fresh_start(ckpt_root: Path, resume: bool) -> None:
    problem = fresh_start_problem(ckpt_root, resume)
    if problem:
        raise ConfigError(problem)


def _param_group_lists(obj: Any) -> list[list[dict]]:
    if isinstance(obj, dict):
        found = []
        for key, value in obj.items():
            if key == "param_groups" and isinstance(value, list):
                found.append(value)
            else:
                found.extend(_param_group_lists(value))
        return found
    if isinstance(obj, (list, tuple)):
        return [g for item in obj for g in _param_group_lists(item)]
    return []


def align_saved_param_groups(optimizer_state: dict, saved_sched: dict, scheduler: Any) -> None:
    """Rewrites the saved optimizer's parameter-group keys (``max_lr``, ``min_lr``, ``start_wd``,
    ``end_wd``) to this job's values, so Megatron matches groups by their role instead of failing
    with "Could not find parameter group" when the config changed one of them."""
    mapping = {k: (saved_sched.get(k), getattr(scheduler, k)) for k in _GROUP_KEYS}
    for groups in _param_group_lists(optimizer_state):
        for group in groups:
            for key, (old, new) in mapping.items():
                if key in group and old is not None and group[key] == old:
                    group[key] = new


def schedule_changes(saved_sched: dict, scheduler: Any) -> list[str]:
    """``name: checkpoint -> config`` for every schedule value the config changed."""
    names = {
        "max_lr": "optimizer.lr",
        "min_lr": "optimizer.min_lr",
        "lr_warmup_steps": "scheduler.warmup_steps",
        "lr_decay_steps": "decay steps (scheduler.decay_steps or train.train_steps)",
        "lr_decay_style": "scheduler.decay_style",
        "start_wd": "optimizer.weight_decay",
    }
    return [
        f"{label}: {saved_sched[key]} -> {getattr(scheduler, key)}"
        for key, label in names.items()
        if key in saved_sched and saved_sched[key] != getattr(scheduler, key)
    ]


def restore_schedule(scheduler: Any, saved_sched: dict) -> list[str]:
    """Loads the step count from the checkpoint and keeps the config's schedule (Megatron's
    ``override_opt_param_scheduler``); returns what changed."""
    changes = schedule_changes(saved_sched, scheduler)
    override = scheduler.override_opt_param_scheduler, scheduler.use_checkpoint_opt_param_scheduler
    scheduler.override_opt_param_scheduler, scheduler.use_checkpoint_opt_param_scheduler = True, False
    try:
        scheduler.load_state_dict(saved_sched)
    finally:
        scheduler.override_opt_param_scheduler, scheduler.use_checkpoint_opt_param_scheduler = override
    return changes


def apply_optimizer_hyperparameters(optimizer: Any, job: Any) -> list[str]:
    """Loading puts the checkpoint's Adam betas and eps into the parameter groups; the config's
    values win (as for the schedule). Returns what changed."""
    opt = job.optimizer
    wanted = {"betas": (opt.adam_beta1, opt.adam_beta2), "eps": opt.adam_eps}
    changes: set[str] = set()
    for group in optimizer.param_groups:
        for key, value in wanted.items():
            if key not in group:  # SGD has neither
                continue
            old = tuple(group[key]) if key == "betas" else group[key]
            if old != value:
                changes.add(f"optimizer.{'adam_beta1/2' if key == 'betas' else 'adam_eps'}: {old} -> {value}")
                group[key] = value
    return sorted(changes)
