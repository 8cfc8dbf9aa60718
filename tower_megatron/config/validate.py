"""Semantic checks of a training job before any process group or file exists.

Types and key names are checked by the loader. The value checks live with what they check —
the job's own sections in :mod:`tower_megatron.config.checks`, the model in
:mod:`tower_megatron.models.config_checks`, the data in :mod:`tower_megatron.data.checks`, a
stage's options in its ``Stage.check_config`` — and :func:`validate_job` only collects them, so
every problem is reported at once, each naming its key. It also checks the run directory an
earlier run left (a fresh start over its checkpoints, a resume with another model shape), so an
incompatible job fails before it overwrites anything there.
"""

from __future__ import annotations

import os
from pathlib import Path

from tower_megatron.config import checks
from tower_megatron.config.loader import ConfigError
from tower_megatron.config.schema import JobConfig

# Re-exported for callers that imported the choices from here.
PRECISIONS, DECAY_STYLES, DEVICES = checks.PRECISIONS, checks.DECAY_STYLES, checks.DEVICES

# Resolved model fields that decide tensor shapes: a resume with another value cannot load.
SHAPE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "kv_channels",
    "vocab_size",
    "add_bias_linear",
    "add_qkv_bias",
    "untie_embeddings_and_output_weights",
)


def validate_job(
    job: JobConfig, world_size: int, cuda_available: bool | None = None, check_data: bool = True
) -> None:
    """Raises :class:`ConfigError` listing every problem; returns quietly for a runnable job.

    ``check_data=False`` skips the stage's checks of its data files, for a recipe that validates
    every stage before an earlier stage has written them (they are checked when the stage starts).
    """
    import torch

    from tower_megatron.data.checks import tokenizer_vocab_size
    from tower_megatron.models.config_checks import check_model_config
    from tower_megatron.training.stage import STAGES, load_stage_plugins

    load_stage_plugins()
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    errors = checks.check_run(job)
    if job.run.device == "cuda" and not cuda_available:
        errors.append("run.device=cuda but no CUDA device is visible")
    on_cpu = job.run.device == "cpu" or (job.run.device == "auto" and not cuda_available)
    layout_errors, dp = checks.check_parallel(job, world_size)
    errors += layout_errors
    if job.train.stage not in STAGES:
        errors.append(f"train.stage: {STAGES.unknown_message(job.train.stage)}")
    vocab_size = tokenizer_vocab_size(job.data, errors)
    errors += check_model_config(job.model, job.parallel, job.train, vocab_size, on_cpu)
    errors += checks.check_train(job, dp)
    errors += checks.check_optimizer(job)
    errors += checks.check_scheduler(job)
    errors += checks.check_checkpoint_and_logging(job)
    if job.checkpoint.load and not Path(job.checkpoint.load).exists():
        errors.append(f"checkpoint.load: no such directory: {job.checkpoint.load}")
    if job.train.stage in STAGES:  # each stage checks the data it reads, then its own options
        stage = STAGES.get(job.train.stage)
        if check_data:
            errors += stage.check_data(job, vocab_size)
        errors += stage.check_config(job, world_size)
    if not errors:  # the run directory only matters for an otherwise runnable job
        errors += check_run_directory(job, vocab_size)
    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigError("\n  - ".join([f"{len(errors)} problems in the config:", *errors]))


def check_run_directory(job: JobConfig, vocab_size: int | None) -> list[str]:
    """What an earlier run in ``<run.output_dir>/<run.name>`` rules out for this one."""
    from tower_megatron.training.checkpoint_policy import fresh_start_problem
    from tower_megatron.training.checkpointing import latest_checkpoint, read_meta

    run_dir = Path(job.run.output_dir) / job.run.name
    for path in (Path(job.run.output_dir), run_dir):
        if path.exists() and not path.is_dir():
            return [f"run.output_dir: {path} exists and is not a directory"]
    ckpt_root = run_dir / "checkpoints"
    existing = next(p for p in (ckpt_root, *ckpt_root.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):  # a read-only mount or directory
        return [f"run.output_dir: cannot write checkpoints under {ckpt_root} ({existing} is not writable)"]
    problem = fresh_start_problem(ckpt_root, job.checkpoint.resume)
    if problem:
        return [problem]
    latest = latest_checkpoint(ckpt_root) if job.checkpoint.resume and ckpt_root.is_dir() else None
    meta = read_meta(latest) if latest is not None else {}
    saved_fmt = meta.get("optimizer_format")
    if saved_fmt and (saved_fmt != "plain") != job.parallel.use_distributed_optimizer:
        return [
            f"the run directory {run_dir} holds checkpoints with a "
            f"{'distributed' if saved_fmt != 'plain' else 'non-distributed'} optimizer state "
            f"({latest.name}); this job has parallel.use_distributed_optimizer="
            f"{str(job.parallel.use_distributed_optimizer).lower()}: resume with the saved setting"
        ]
    saved = meta.get("model")
    if not saved:
        return []
    import dataclasses

    from tower_megatron.models import resolve_model_config

    current = dataclasses.asdict(resolve_model_config(job.model, vocab_size))
    diff = [
        f"{k}={saved[k]} vs {current[k]}" for k in SHAPE_FIELDS if k in saved and saved[k] != current.get(k)
    ]
    if diff:
        return [
            f"the run directory {run_dir} holds checkpoints of another model ({latest.name}; checkpoint "
            f"vs this job: {', '.join(diff)}); use another run.name, or checkpoint.resume=false in a "
            "new run directory"
        ]
    return []
