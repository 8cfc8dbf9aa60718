"""Checkpoint cadence and preemption: save every N steps, at the end, and when the cluster
sends SIGTERM/SIGUSR1 (Slurm's pre-emption warning); then stop cleanly."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tower_megatron.training.callbacks.base import CALLBACKS, Callback
from tower_megatron.training.checkpointing import save_checkpoint

if TYPE_CHECKING:
    from tower_megatron.training.trainer import Trainer


@CALLBACKS.register("checkpoint")
class CheckpointCallback(Callback):
    priority = 60  # after the step's metrics exist, before loggers flush

    def __init__(self, root: Path, save_interval: int, keep_last: int, save_at_end: bool) -> None:
        self.root = Path(root)
        self.save_interval = save_interval
        self.keep_last = keep_last
        self.save_at_end = save_at_end
        self.last_saved_step = -1

    def save(self, trainer: Trainer) -> None:
        if self.last_saved_step == trainer.state.step:
            return
        start = time.perf_counter()
        path = save_checkpoint(trainer, self.root, self.keep_last)
        self.last_saved_step = trainer.state.step
        if trainer.runtime.is_main:
            print(f"saved checkpoint {path} in {time.perf_counter() - start:.1f}s", flush=True)

    def on_train_start(self, trainer: Trainer) -> None:
        self.last_saved_step = trainer.state.step  # a resumed run needs no save of where it began

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.should_stop or (self.save_interval and trainer.state.step % self.save_interval == 0):
            self.save(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.save_at_end and trainer.state.step > 0:
            self.save(trainer)


@CALLBACKS.register("preemption")
class PreemptionCallback(Callback):
    """Turns SIGTERM/SIGUSR1 into a clean stop at the next step boundary.

    A signal may reach only some ranks: the handler sets :attr:`stop_request`, which the trainer
    ORs across the world inside the step's loss all-reduce (no extra collective a step); all
    ranks then stop on the same step and the checkpoint callback saves.
    """

    priority = 5

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        self.received = signum
        self.stop_request = f"signal {signal.Signals(signum).name}"

    def on_train_start(self, trainer: Trainer) -> None:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_end(self, trainer: Trainer) -> None:
        # After a pre-emption signal the process is on its way out, and more of the same signal
        # follow (Slurm signals every process and torchrun forwards its own copy to the worker's
        # group): the default action would kill it during shutdown and turn exit 0 into -15.
        keep = self.received is not None
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if keep else previous)
