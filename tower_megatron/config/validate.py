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
TRANSFORMER_IMPLS = ("auto", "local", "transformer_engine")
FP8_FORMATS = ("e4m3", "hybrid")
FP8_RECIPES = ("delayed", "tensorwise", "blockwise", "mxfp8")
RECOMPUTE = ("selective", "full")


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
    _choice(errors, "model.transformer_impl", job.model.transformer_impl, TRANSFORMER_IMPLS)
    if job.model.recompute_granularity is not None:
        _choice(errors, "model.recompute_granularity", job.model.recompute_granularity, RECOMPUTE)
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
    fp8 = job.model.fp8
    if fp8.format is not None:
        _choice(errors, "model.fp8.format", fp8.format, FP8_FORMATS)
        _choice(errors, "model.fp8.recipe", fp8.recipe, FP8_RECIPES)
        if on_cpu:
            errors.append(
                f"model.fp8.format={fp8.format!r} but this run is on CPU: FP8 needs Transformer Engine "
                "on a GPU (unset model.fp8.format for CPU runs)"
            )
        if job.model.fp8.param and not par.use_distributed_optimizer:
            errors.append("model.fp8.param=true needs parallel.use_distributed_optimizer=true")
    if on_cpu and job.model.transformer_impl == "transformer_engine":
        errors.append("model.transformer_impl=transformer_engine needs a GPU; use auto or local on CPU")

    # ---- model shape versus layout
    if job.model.arch in MODEL_FAMILIES:
        try:
            model = resolve_model_config(job.model, _tokenizer_vocab_size(job, errors))
        except (ValueError, FileNotFoundError, KeyError) as exc:
            text = str(exc)
            if not text.startswith("model."):
                key = (
                    "model.preset"
                    if "preset" in text
                    else "model.hf_config"
                    if job.model.hf_config
                    else "model"
                )
                text = f"{key}: {text}"
            errors.append(text)
            model = None
        if model is not None and min(tp, pp) >= 1:
            stages = pp * (vpp or 1)
            if model.num_layers % stages:
                errors.append(
                    f"model.num_layers={model.num_layers} is not divisible by "
                    + (
                        f"parallel.pipeline_model_parallel_size × virtual_pipeline_model_parallel_size "
                        f"= {pp}×{vpp}"
                        if vpp
                        else f"parallel.pipeline_model_parallel_size={pp}"
                    )
                )
            if model.num_attention_heads % tp:
                errors.append(
                    f"model.num_attention_heads={model.num_attention_heads} is not divisible by "
                    f"parallel.tensor_model_parallel_size={tp}"
                )
            elif model.num_query_groups and model.num_query_groups % tp:
                # Only when the heads divide: with plain multi-head attention groups == heads and
                # a second message would repeat the first.
                errors.append(
                    f"model.num_query_groups={model.num_query_groups} is not divisible by "
                    f"parallel.tensor_model_parallel_size={tp}"
                )
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
    if opt.lr <= 0:
        errors.append(f"optimizer.lr={opt.lr} must be > 0")
    elif opt.min_lr > opt.lr:
        errors.append(f"optimizer.min_lr={opt.min_lr} is larger than optimizer.lr={opt.lr}")
    if sched.warmup_steps < 0 or sched.warmup_steps > train.train_steps:
        errors.append(
            f"scheduler.warmup_steps={sched.warmup_steps} must be within [0, train.train_steps={train.train_steps}]"
        )
    if sched.decay_style == "WSD" and not sched.wsd_decay_steps:
        errors.append("scheduler.decay_style=WSD needs scheduler.wsd_decay_steps")
    if job.checkpoint.keep_last < 0 or job.checkpoint.save_interval < 0:
        errors.append("checkpoint.keep_last and checkpoint.save_interval must be ≥ 0")

    # ---- files that must exist (the tokenizer was checked with the model above)
    if job.checkpoint.load and not Path(job.checkpoint.load).exists():
        errors.append(f"checkpoint.load: no such directory: {job.checkpoint.load}")
    _check_data_files(job, errors)

    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigError("\n  - ".join([f"{len(errors)} problems in the config:", *errors]))


def _tokenizer_vocab_size(job: JobConfig, errors: list[str]) -> int | None:
    """The tokenizer's vocabulary size (so an embedding too small for it fails here, before the
    run directory exists), or None after recording why the tokenizer is unusable."""
    from tower_megatron.resources import resolve

    tok = job.data.tokenizer
    if not tok.path:
        errors.append("data.tokenizer.path is not set")
        return None
    if not Path(resolve(tok.path)).exists():
        errors.append(f"data.tokenizer.path: no such file or directory: {tok.path}")
        return None
    if tok.type not in TOKENIZER_TYPES:
        return None  # already reported as a bad choice
    from tower_megatron.data.tokenizer import build_tokenizer

    try:
        return int(build_tokenizer(tok).vocab_size)
    except Exception as exc:  # any library's load failure is a config problem here
        errors.append(f"data.tokenizer.path: cannot load {tok.path} as {tok.type}: {exc}")
        return None


def _check_data_files(job: JobConfig, errors: list[str]) -> None:
    from tower_megatron.data.gpt_datasets import dataset_spec, missing_token_files, mixture_enabled

    if not job.data.paths and not mixture_enabled(job.data):
        errors.append("no training data: set data.paths (IndexedDataset prefixes) or data.mixture")
        return
    if mixture_enabled(job.data) and _stats_will_be_built(job, errors):
        return
    try:
        dataset_spec(job.data)
    except (ValueError, FileNotFoundError) as exc:
        errors.append(str(exc))
    for name, prefix in job.data.valid_paths.items():
        missing = missing_token_files(prefix)
        if missing:  # one message per set, whether one or both files are absent
            errors.append(f"data.valid_paths.{name}: missing {' and '.join(missing)}")


def _stats_will_be_built(job: JobConfig, errors: list[str]) -> bool:
    """A mixture whose ``stats.json`` is missing but whose ``preprocess`` recipe will build it at
    start-up: check that recipe now instead (the token files cannot be checked yet)."""
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig
    from tower_megatron.data.mixture import _stats_path
    from tower_megatron.resources import resolve

    mix = job.data.mixture
    if not mix.preprocess or all(_stats_path(s).is_file() for s in mix.stats):
        return False
    try:
        load_config(PreprocessConfig, resolve(mix.preprocess))
    except ConfigError as exc:
        errors.append(f"data.mixture.preprocess: {exc}")
    return True
