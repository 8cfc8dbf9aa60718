"""Semantic checks of a training job, all in one place, before any process group or file exists.

Types and key names are checked by the loader; this module checks values and combinations
(divisibility of the parallel layout, batch sizes, choices, files that must exist). Every problem
found is reported at once, each naming its key.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from tower_megatron.config.loader import ConfigError
from tower_megatron.config.schema import JobConfig

PRECISIONS = ("fp32", "bf16")
DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root", "WSD")
WSD_STYLES = ("linear", "cosine", "exponential", "minus_sqrt")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("online", "offline", "disabled")
OPTIMIZERS = ("adam", "sgd")
TOKENIZER_TYPES = ("sentencepiece", "huggingface")


def _choice(errors: list[str], key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        errors.append(f"{key}={value!r} is not one of {', '.join(choices)}.{hint}")


def _registered(errors: list[str], key: str, name: str, registry) -> None:
    if name not in registry:
        errors.append(f"{key}: {registry.unknown_message(name)}")


def validate_job(job: JobConfig, world_size: int, cuda_available: bool | None = None) -> None:
    """Raises :class:`ConfigError` listing every problem; returns quietly for a runnable job."""
    import torch

    from tower_megatron.models import MODEL_FAMILIES, resolve_model_config
    from tower_megatron.training.stage import STAGES, load_stage_plugins

    load_stage_plugins()
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    errors: list[str] = []
    par, train, opt, sched = job.parallel, job.train, job.optimizer, job.scheduler
    tp, pp, cp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size, par.context_parallel_size
    vpp = par.virtual_pipeline_model_parallel_size

    # ---- choices and registered names
    _choice(errors, "train.precision", train.precision, PRECISIONS)
    _choice(errors, "scheduler.decay_style", sched.decay_style, DECAY_STYLES)
    _choice(errors, "scheduler.wsd_decay_style", sched.wsd_decay_style, WSD_STYLES)
    _choice(errors, "run.device", job.run.device, DEVICES)
    _choice(errors, "logging.wandb.mode", job.logging.wandb.mode, WANDB_MODES)
    _choice(errors, "optimizer.name", opt.name, OPTIMIZERS)
    _choice(errors, "data.tokenizer.type", job.data.tokenizer.type, TOKENIZER_TYPES)
    _registered(errors, "train.stage", train.stage, STAGES)
    _registered(errors, "model.arch", job.model.arch, MODEL_FAMILIES)

    # ---- parallel layout
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
    if par.sequence_parallel and tp == 1:
        errors.append("parallel.sequence_parallel=true needs parallel.tensor_model_parallel_size > 1")
    if par.overlap_param_gather and not par.use_distributed_optimizer:
        errors.append("parallel.overlap_param_gather=true needs parallel.use_distributed_optimizer=true")
    if job.run.device == "cuda" and not cuda_available:
        errors.append("run.device=cuda but no CUDA device is visible")
    on_cpu = job.run.device == "cpu" or (job.run.device == "auto" and not cuda_available)
    if job.model.fp8.format is not None:
        _choice(errors, "model.fp8.format", job.model.fp8.format, ("e4m3", "hybrid"))
        if on_cpu:
            errors.append(
                "model.fp8.format is set but this run is on CPU: FP8 needs Transformer Engine on a GPU"
            )
        if job.model.fp8.param and not par.use_distributed_optimizer:
            errors.append("model.fp8.param=true needs parallel.use_distributed_optimizer=true")
    if on_cpu and job.model.transformer_impl == "transformer_engine":
        errors.append("model.transformer_impl=transformer_engine needs a GPU; use auto or local on CPU")

    # ---- model shape versus layout
    if job.model.arch in MODEL_FAMILIES:
        try:
            model = resolve_model_config(job.model)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            errors.append(f"model: {exc}")
            model = None
        if model is not None and min(tp, pp) >= 1:
            stages = pp * (vpp or 1)
            if model.num_layers % stages:
                errors.append(
                    f"model.num_layers={model.num_layers} is not divisible by pipeline_model_parallel_size"
                    f"{' × virtual_pipeline_model_parallel_size' if vpp else ''} = {stages}"
                )
            if model.num_attention_heads % tp:
                errors.append(
                    f"model.num_attention_heads={model.num_attention_heads} is not divisible by TP={tp}"
                )
            if model.num_query_groups and model.num_query_groups % tp:
                errors.append(f"model.num_query_groups={model.num_query_groups} is not divisible by TP={tp}")
            if model.max_position_embeddings and train.seq_length > model.max_position_embeddings:
                errors.append(
                    f"train.seq_length={train.seq_length} exceeds model.max_position_embeddings={model.max_position_embeddings}"
                )

    # ---- batch, schedule, optimizer
    for key, value in (
        ("train.train_steps", train.train_steps),
        ("train.micro_batch_size", train.micro_batch_size),
        ("train.global_batch_size", train.global_batch_size),
        ("train.seq_length", train.seq_length),
        ("logging.log_interval", job.logging.log_interval),
    ):
        if value < 1:
            errors.append(f"{key}={value} must be ≥ 1")
    if dp and train.micro_batch_size >= 1 and train.global_batch_size % (train.micro_batch_size * dp):
        errors.append(
            f"train.global_batch_size={train.global_batch_size} is not divisible by "
            f"train.micro_batch_size × data-parallel size = {train.micro_batch_size}×{dp}"
        )
    if opt.lr <= 0:
        errors.append(f"optimizer.lr={opt.lr} must be > 0")
    if opt.min_lr > opt.lr:
        errors.append(f"optimizer.min_lr={opt.min_lr} is larger than optimizer.lr={opt.lr}")
    if sched.warmup_steps < 0 or sched.warmup_steps > train.train_steps:
        errors.append(
            f"scheduler.warmup_steps={sched.warmup_steps} must be within [0, train.train_steps={train.train_steps}]"
        )
    if sched.decay_style == "WSD" and not sched.wsd_decay_steps:
        errors.append("scheduler.decay_style=WSD needs scheduler.wsd_decay_steps")
    if job.checkpoint.keep_last < 0 or job.checkpoint.save_interval < 0:
        errors.append("checkpoint.keep_last and checkpoint.save_interval must be ≥ 0")
    if job.logging.wandb.project is None and job.logging.wandb.mode == "offline":
        pass  # offline without a project simply disables W&B

    # ---- files that must exist
    tok = job.data.tokenizer.path
    if not tok:
        errors.append("data.tokenizer.path is not set")
    elif not Path(tok).exists():
        errors.append(f"data.tokenizer.path: no such file or directory: {tok}")
    if job.checkpoint.load and not Path(job.checkpoint.load).exists():
        errors.append(f"checkpoint.load: no such directory: {job.checkpoint.load}")
    _check_data_files(job, errors)

    if errors:
        raise ConfigError("\n  - ".join([f"{len(errors)} problem(s) in the config:", *errors]))


def _check_data_files(job: JobConfig, errors: list[str]) -> None:
    from tower_megatron.data.gpt_datasets import dataset_spec

    mixture = getattr(job.data, "mixture", None)
    has_mixture = mixture is not None and getattr(mixture, "sources", None)
    if not job.data.paths and not has_mixture:
        errors.append("no training data: set data.paths (IndexedDataset prefixes) or data.mixture")
        return
    try:
        dataset_spec(job.data)
    except (ValueError, FileNotFoundError) as exc:
        errors.append(str(exc))
    for name, prefix in job.data.valid_paths.items():
        for suffix in (".bin", ".idx"):
            if not Path(prefix + suffix).is_file():
                errors.append(f"data.valid_paths.{name}: missing {prefix + suffix}")
