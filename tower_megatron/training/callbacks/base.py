"""Callbacks: everything optional around the loop (logging, checkpoints, profiling, preemption).

The trainer calls each hook on every callback in ``priority`` order (lower first); callbacks
never change the numbers a step computes. Loggers act on the main rank only; checkpointing and
signal handling run on every rank (they are collective).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tower_megatron.registry import Registry

if TYPE_CHECKING:
    from tower_megatron.training.trainer import Trainer

CALLBACKS: Registry[type[Callback]] = Registry("callback")


class Callback:
    priority = 50
    # Set to a reason to stop the whole run at the next step boundary (e.g. from a signal
    # handler). The trainer ORs requests across ranks inside the step's loss all-reduce, so all
    # ranks stop on the same step; the checkpoint callback then sees ``trainer.should_stop``.
    stop_request: str | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        pass

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}


class MetricLogger(Callback):
    """Base for loggers: writes every ``log_interval`` steps and every evaluation, main rank only."""

    priority = 80

    def __init__(self, log_interval: int = 1) -> None:
        self.log_interval = max(1, log_interval)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.runtime.is_main and (
            trainer.state.step % self.log_interval == 0 or trainer.state.step == trainer.job.train.train_steps
        ):
            self.log(trainer.state.step, metrics)

    def on_eval_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.runtime.is_main:
            self.log(trainer.state.step, metrics)
