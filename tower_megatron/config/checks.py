"""Value checks of the job's own sections (run, parallel, train, optimizer, scheduler,
checkpoint, logging, profiling), beside the dataclasses in :mod:`schema`. Model, data and stage
checks live with their owners (``models/family.py``, ``data/checks.py``, ``Stage.check_config``);
:func:`tower_megatron.config.validate.validate_job` collects them all.

Each function returns a list of messages, each naming its key; none raises.
"""

from __future__ import annotations

import difflib
import math
from pathlib import PurePath

from tower_megatron.config.schema import JobConfig

PRECISIONS = ("fp32", "bf16")
DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root", "WSD")
WSD_STYLES = ("linear", "cosine", "exponential", "minus_sqrt")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("online", "offline", "disabled")
OPTIMIZERS = ("adam", "sgd")


def choice(errors: list[str], key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        errors.append(f"{key}={value!r} is not one of {', '.join(choices)}.{hint}")


def at_least(errors: list[str], key: str, value: float | None, low: float) -> None:
    """``value ≥ low`` (None: unset, not checked)."""
    if value is not None and not value >= low:  # `not >=` also catches NaN
        errors.append(f"{key}={value} must be ≥ {low:g}")


def above(errors: list[str], key: str, value: float | None, low: float) -> None:
    if value is not None and not value > low:
        errors.append(f"{key}={value} must be > {low:g}")


def within(
    errors: list[str], key: str, value: float | None, low: float, high: float, closed_high: bool
) -> None:
    """``low ≤ value < high`` (or ``≤ high``)."""
    if value is None:
        return
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok or math.isnan(value):
        errors.append(f"{key}={value} must be in [{low:g}, {high:g}{']' if closed_high else ')'}")


def check_run(job: JobConfig) -> list[str]:
    errors: list[str] = []
    name = job.run.name
    parts = PurePath(name).parts if name else ()
    if len(parts) != 1 or parts[0] in (".", "..") or PurePath(name).is_absolute() or "\\" in name:
        errors.append(
            f"run.name={name!r} must be one directory name (no '/', '..' or absolute path): the run "
            "directory is <run.output_dir>/<run.name> and must stay inside run.output_dir"
        )
    choice(errors, "run.device", job.run.device, DEVICES)
    above(errors, "run.distributed_timeout_minutes", job.run.distributed_timeout_minutes, 0)
    at_least(errors, "run.peer_failure_timeout_s", job.run.peer_failure_timeout_s, 0)
    return errors


def check_parallel(job: JobConfig, world_size: int) -> tuple[list[str], int]:
    """Layout problems and the data-parallel size (0 when the layout is invalid)."""
    errors: list[str] = []
    par = job.parallel
    tp, pp, cp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size, par.context_parallel_size
    vpp = par.virtual_pipeline_model_parallel_size
    for key, value in (
        ("parallel.tensor_model_parallel_size", tp),
        ("parallel.pipeline_model_parallel_size", pp),
        ("parallel.context_parallel_size", cp),
    ):
        if value < 1:
            errors.append(f"{key}={value} must be ≥ 1")
    dp = 0
    if min(tp, pp, cp) >= 1:
        if world_size % (tp * pp * cp):
            errors.append(
                f"world size {world_size} is not divisible by parallel.tensor_model_parallel_size × "
                f"pipeline_model_parallel_size × context_parallel_size = {tp}×{pp}×{cp}"
            )
        else:
            dp = world_size // (tp * pp * cp)
    if vpp is not None and (vpp < 1 or pp == 1):
        errors.append(
            f"parallel.virtual_pipeline_model_parallel_size={vpp} needs pipeline_model_parallel_size > 1"
        )
    if cp > 1:  # Megatron would accept it, but no stage splits a batch's sequence across CP ranks yet
        errors.append(
            f"parallel.context_parallel_size={cp} is not supported yet (batches are not split across "
            "context-parallel ranks); use 1"
        )
    if par.sequence_parallel and tp == 1:
        errors.append("parallel.sequence_parallel=true needs parallel.tensor_model_parallel_size > 1")
    if par.overlap_param_gather and not par.use_distributed_optimizer:
        errors.append("parallel.overlap_param_gather=true needs parallel.use_distributed_optimizer=true")
    return errors, dp


def check_train(job: JobConfig, dp: int) -> list[str]:
    """Batch sizes, lengths, evaluation and the interleaved schedule's micro-batch rule."""
    errors: list[str] = []
    train, par = job.train, job.parallel
    choice(errors, "train.precision", train.precision, PRECISIONS)
    for key, value in (
        ("train.train_steps", train.train_steps),
        ("train.micro_batch_size", train.micro_batch_size),
        ("train.global_batch_size", train.global_batch_size),
        ("train.seq_length", train.seq_length),
        ("train.eval_steps", train.eval_steps),
    ):
        if value < 1:
            errors.append(f"{key}={value} must be ≥ 1")
    at_least(errors, "train.eval_interval", train.eval_interval, 0)
    pp, vpp = par.pipeline_model_parallel_size, par.virtual_pipeline_model_parallel_size
    if dp and train.micro_batch_size >= 1 and train.global_batch_size % (train.micro_batch_size * dp):
        errors.append(
            f"train.global_batch_size={train.global_batch_size} is not divisible by "
            f"train.micro_batch_size × data-parallel size = {train.micro_batch_size}×{dp}"
        )
    elif dp and train.micro_batch_size >= 1 and vpp and pp > 1:
        # Megatron's interleaved schedule runs micro-batches in groups of PP per virtual stage
        # and refuses a partial last group (schedules.py: "dependency bubbles").
        micro = train.global_batch_size // (train.micro_batch_size * dp)
        if micro % pp:
            errors.append(
                f"train.global_batch_size={train.global_batch_size} gives {micro} micro-batches per "
                f"data-parallel rank, not a multiple of parallel.pipeline_model_parallel_size={pp} "
                "as the interleaved (virtual pipeline) schedule needs"
            )
    return errors


def check_optimizer(job: JobConfig) -> list[str]:
    errors: list[str] = []
    opt = job.optimizer
    choice(errors, "optimizer.name", opt.name, OPTIMIZERS)
    if not opt.lr > 0:
        errors.append(f"optimizer.lr={opt.lr} must be > 0")
    elif opt.min_lr > opt.lr:
        errors.append(f"optimizer.min_lr={opt.min_lr} is larger than optimizer.lr={opt.lr}")
    at_least(errors, "optimizer.min_lr", opt.min_lr, 0)
    at_least(errors, "optimizer.weight_decay", opt.weight_decay, 0)
    within(errors, "optimizer.adam_beta1", opt.adam_beta1, 0, 1, closed_high=False)
    within(errors, "optimizer.adam_beta2", opt.adam_beta2, 0, 1, closed_high=False)
    above(errors, "optimizer.adam_eps", opt.adam_eps, 0)
    at_least(errors, "optimizer.clip_grad", opt.clip_grad, 0)  # 0: no clipping
    return errors


def check_scheduler(job: JobConfig) -> list[str]:
    errors: list[str] = []
    sched, steps = job.scheduler, job.train.train_steps
    choice(errors, "scheduler.decay_style", sched.decay_style, DECAY_STYLES)
    choice(errors, "scheduler.wsd_decay_style", sched.wsd_decay_style, WSD_STYLES)
    if sched.warmup_steps < 0 or sched.warmup_steps > steps:
        errors.append(
            f"scheduler.warmup_steps={sched.warmup_steps} must be within [0, train.train_steps={steps}]"
        )
    if sched.decay_steps is not None:
        if sched.decay_steps < 1:
            errors.append(f"scheduler.decay_steps={sched.decay_steps} must be ≥ 1")
        elif sched.decay_steps <= sched.warmup_steps:
            errors.append(
                f"scheduler.decay_steps={sched.decay_steps} must be larger than "
                f"scheduler.warmup_steps={sched.warmup_steps} (warm-up is part of the decay span)"
            )
    if sched.decay_style == "WSD":
        span = sched.decay_steps or steps
        if not sched.wsd_decay_steps:
            errors.append("scheduler.decay_style=WSD needs scheduler.wsd_decay_steps")
        elif not 1 <= sched.wsd_decay_steps <= span - sched.warmup_steps:
            errors.append(
                f"scheduler.wsd_decay_steps={sched.wsd_decay_steps} must be within [1, decay steps − "
                f"warm-up = {span - sched.warmup_steps}]"
            )
    return errors


def check_checkpoint_and_logging(job: JobConfig) -> list[str]:
    errors: list[str] = []
    if job.checkpoint.keep_last < 0 or job.checkpoint.save_interval < 0:
        errors.append("checkpoint.keep_last and checkpoint.save_interval must be ≥ 0")
    if job.logging.log_interval < 1:
        errors.append(f"logging.log_interval={job.logging.log_interval} must be ≥ 1")
    choice(errors, "logging.wandb.mode", job.logging.wandb.mode, WANDB_MODES)
    above(errors, "logging.peak_tflops", job.logging.peak_tflops, 0)
    prof = job.profiling
    if prof.enabled and not 0 <= prof.start_step < prof.end_step:
        errors.append(
            f"profiling.start_step={prof.start_step} and end_step={prof.end_step} need 0 ≤ start < end"
        )
    return errors
