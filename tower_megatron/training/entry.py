"""``tower-megatron train``: config → validated job → runtime → components → Trainer.fit()."""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from tower_megatron.config import JobConfig, load_config, to_yaml
from tower_megatron.config.validate import validate_job
from tower_megatron.utils.atomic import write_text


def load_job(config_path: str | None, overrides: list[str]) -> JobConfig:
    job = load_config(JobConfig, config_path, overrides)
    validate_job(job, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    return job


def train_main(config_path: str, overrides: list[str]) -> int:
    job = load_job(config_path, overrides)
    try:
        result = run_training(job)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"tower-megatron train: {exc.strerror} ({exc.filename})", file=sys.stderr, flush=True)
        return 1
    return 0 if result["state"].step >= job.train.train_steps or result["stop_reason"] else 1


def run_dir_of(job: JobConfig) -> Path:
    return Path(job.run.output_dir) / job.run.name


def run_training(job: JobConfig, extra_callbacks: list[Any] = ()) -> dict[str, Any]:
    """Runs a validated job in this process (one rank of the world). Returns the final train
    state, the stop reason and the history of logged metrics (rank 0 holds every value).

    The order matters: nothing is written before the runtime starts (validation ran in
    :func:`load_job`); the stage prepares its data on the main rank before any rank reads it; the
    trained model is built before the stage's extra (frozen) models so they can copy it.
    """
    from tower_megatron.data.tokenizer import build_tokenizer
    from tower_megatron.models import resolve_model_config
    from tower_megatron.runtime import init_runtime
    from tower_megatron.runtime.watchdog import is_comm_failure, start_peer_watchdog
    from tower_megatron.training.builder import build_optimizer, build_scheduler
    from tower_megatron.training.callbacks.setup import HistoryCallback, build_callbacks
    from tower_megatron.training.checkpointing import (
        latest_checkpoint,
        load_checkpoint,
        remove_incomplete,
        resolve_load_path,
    )
    from tower_megatron.training.models import ModelFactory
    from tower_megatron.training.stage import build_stage
    from tower_megatron.training.trainer import Trainer

    # A bad checkpoint.load fails here, before any process group starts or anything is written.
    load_path = resolve_load_path(job.checkpoint.load) if job.checkpoint.load else None
    par = job.parallel
    runtime = init_runtime(
        tp=par.tensor_model_parallel_size,
        pp=par.pipeline_model_parallel_size,
        vpp=par.virtual_pipeline_model_parallel_size,
        cp=par.context_parallel_size,
        seed=job.run.seed,
        device=job.run.device,
        timeout_minutes=job.run.distributed_timeout_minutes,
    )
    # From here on a dead peer makes this rank exit (naming it) instead of hanging in a collective.
    watchdog = start_peer_watchdog(runtime.rank, runtime.world_size, job.run.peer_failure_timeout_s)
    run_dir = run_dir_of(job)
    ckpt_root = run_dir / "checkpoints"
    tokenizer = build_tokenizer(job.data.tokenizer)
    stage = build_stage(job, tokenizer, runtime)
    if runtime.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        for tmp in remove_incomplete(ckpt_root):
            print(f"removed the interrupted save {tmp}", flush=True)
        stage.prepare_data(run_dir)
    dist.barrier()

    latest = latest_checkpoint(ckpt_root) if job.checkpoint.resume else None
    model_cfg = resolve_model_config(job.model, tokenizer.vocab_size)
    factory = ModelFactory(job, model_cfg)
    # Weights that a checkpoint overwrites are not worth drawing (minutes per rank at 72B).
    built = factory.build_trainable(initialize=latest is None and load_path is None)
    optimizer = build_optimizer(job, built.chunks)
    scheduler = build_scheduler(job, optimizer)
    train_ds, valid_sets = stage.build_datasets(job.data.cache_dir or str(run_dir / "data_cache"))
    history = HistoryCallback()
    callbacks = [*build_callbacks(job, run_dir, model_cfg, runtime), history, *extra_callbacks]
    trainer = Trainer(
        job,
        runtime,
        stage,
        built.chunks,
        optimizer,
        scheduler,
        train_ds,
        valid_sets,
        callbacks,
        run_dir,
        model_config=dataclasses.asdict(model_cfg),
    )

    # Resuming this run's own newest complete checkpoint wins over checkpoint.load (which only
    # seeds a fresh run), so a preempted job restarted with the same command continues.
    if latest is not None:
        load_checkpoint(trainer, latest)
        if runtime.is_main:
            print(f"resumed from {latest} at step {trainer.state.step}", flush=True)
    elif load_path is not None:
        load_checkpoint(trainer, load_path, with_optimizer=job.checkpoint.load_optimizer)
        if runtime.is_main:
            print(f"loaded {load_path} (step {trainer.state.step})", flush=True)
    # Extra models (a frozen reference) copy the weights the run starts from; on resume the
    # stage's own checkpointed state says where its reference came from.
    stage.build_models(factory)
    try:
        stage.setup(trainer)
        if runtime.is_main:  # only now: a job that failed to start leaves the run's config.yaml alone
            write_text(run_dir / "config.yaml", to_yaml(job))
        trainer.fit()
    except Exception as exc:
        if watchdog is not None and is_comm_failure(exc):  # a peer died? exit naming it
            watchdog.blame_peer()
        raise
    finally:
        stage.teardown(trainer)  # e.g. GRPO's reward workers, also after an error
    if watchdog is not None:
        watchdog.stop()
    return {"state": trainer.state, "stop_reason": trainer.stop_reason, "history": history.records}
