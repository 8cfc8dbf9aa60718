"""The callbacks a job's ``logging``/``checkpoint``/``profiling`` sections ask for."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tower_megatron.config.model import ModelConfig
from tower_megatron.config.schema import JobConfig
from tower_megatron.models import flops_per_token
from tower_megatron.training.callbacks.base import Callback
from tower_megatron.training.callbacks.checkpoint import CheckpointCallback, PreemptionCallback
from tower_megatron.training.callbacks.loggers import (
    ConsoleLogger,
    JsonlLogger,
    TensorBoardLogger,
    WandbLogger,
)
from tower_megatron.training.callbacks.throughput import ThroughputMonitor

if TYPE_CHECKING:
    from tower_megatron.training.trainer import Trainer


class HistoryCallback(Callback):
    """Keeps every step's and evaluation's metrics in memory (tests, notebooks, the CLI summary)."""

    priority = 90

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.records.append({"step": trainer.state.step, **metrics})

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.records.append({"step": trainer.state.step, **metrics})


def build_callbacks(job: JobConfig, run_dir: Path, model: ModelConfig, runtime: Any = None) -> list[Callback]:
    log = job.logging
    callbacks: list[Callback] = [
        # Megatron-LM counts the logits of the padded vocabulary (they are computed too).
        ThroughputMonitor(
            flops_per_token(model, job.train.seq_length, vocab_size=_padded_vocab(job, model)),
            job.train.precision,
            log.peak_tflops,
        ),
        CheckpointCallback(
            run_dir / "checkpoints",
            job.checkpoint.save_interval,
            job.checkpoint.keep_last,
            job.checkpoint.save_at_end,
        ),
    ]
    if job.checkpoint.save_on_signal:
        callbacks.append(PreemptionCallback())
    if log.console:
        callbacks.append(ConsoleLogger(log.log_interval, log.progress_bar))
    if log.jsonl:
        callbacks.append(JsonlLogger(run_dir / "metrics.jsonl", log.log_interval))
    if log.tensorboard:
        callbacks.append(TensorBoardLogger(run_dir / "tensorboard", log.log_interval))
    if log.wandb.project and log.wandb.mode != "disabled":
        callbacks.append(
            WandbLogger(
                run_dir,
                log.wandb.project,
                config=dataclasses.asdict(job),
                log_interval=log.log_interval,
                entity=log.wandb.entity,
                name=log.wandb.name or job.run.name,
                mode=log.wandb.mode,
                tags=list(log.wandb.tags),
            )
        )
    if job.profiling.enabled:
        from tower_megatron.training.callbacks.profiler import ProfilerCallback

        callbacks.append(ProfilerCallback(run_dir / "profile", job.profiling))
    return callbacks


def _padded_vocab(job: JobConfig, model: ModelConfig) -> int:
    from tower_megatron.models import pad_vocab

    return pad_vocab(model.vocab_size, model.make_vocab_size_divisible_by, job.parallel.tensor_model_parallel_size)
