"""torch.profiler over a window of steps; writes a Chrome trace per rank into ``<run_dir>/profile``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tower_megatron.config.schema import ProfilingConfig
from tower_megatron.training.callbacks.base import CALLBACKS, Callback

if TYPE_CHECKING:
    from tower_megatron.training.trainer import Trainer


@CALLBACKS.register("profiler")
class ProfilerCallback(Callback):
    priority = 1

    def __init__(self, out_dir: Path, cfg: ProfilingConfig) -> None:
        self.out_dir, self.cfg = Path(out_dir), cfg
        self._prof: Any = None

    def _start(self, trainer: Trainer) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.runtime.device.type == "cuda":  # the run's device, not any visible GPU
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(
            activities=activities, profile_memory=self.cfg.memory, record_shapes=True
        )
        self._prof.__enter__()

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.state.step + 1 == self.cfg.start_step:
            self._start(trainer)

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        step = trainer.state.step
        if self._prof is None and step + 1 == self.cfg.start_step:
            self._start(trainer)
        elif self._prof is not None and step >= self.cfg.end_step:
            self._stop(trainer)

    def _stop(self, trainer: Trainer) -> None:
        self._prof.__exit__(None, None, None)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._prof.export_chrome_trace(str(self.out_dir / f"trace_rank{trainer.runtime.rank}.json"))
        self._prof = None

    def on_train_end(self, trainer: Trainer) -> None:
        if self._prof is not None:
            self._stop(trainer)
