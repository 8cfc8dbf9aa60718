"""Throughput: model FLOP/s from Megatron-LM's FLOPs-per-token formula
(:func:`tower_megatron.models.flops_per_token`), and MFU against the device's dense peak.

The device is the run's (``Runtime.device``), never whatever GPU happens to be visible: a
``run.device=cpu`` run on a GPU host reports FLOP/s only, as on any CPU (no meaningful peak).
Runs before the loggers (priority 10) and adds its scalars to the step's metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tower_megatron.training.callbacks.base import CALLBACKS, Callback

if TYPE_CHECKING:
    from tower_megatron.training.trainer import Trainer

# Dense peak TFLOP/s per GPU (vendor data sheets, SXM parts, no sparsity).
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp8": 1979.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp8": 1979.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp8": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp8": 733.0, "fp32": 91.6},
    "B200": {"bf16": 2250.0, "fp8": 4500.0, "fp32": 80.0},
}


def device_peak_tflops(precision: str, device: torch.device | str) -> float | None:
    """The dense peak of ``device`` for ``precision``, or None (CPU / unknown GPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for model, peaks in PEAK_TFLOPS.items():
        if model in name:
            return peaks.get(precision)
    return None


@CALLBACKS.register("throughput")
class ThroughputMonitor(Callback):
    priority = 10

    def __init__(
        self,
        flops_per_token: float,
        precision: str,
        peak_tflops: float | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """``peak_tflops``: per device (default: looked up for ``device``, by default the
        trainer's ``runtime.device`` at the start of training)."""
        self.flops_per_token = flops_per_token
        self.precision = precision
        self.device = device
        self.peak = peak_tflops
        self._peak_given = peak_tflops is not None

    def on_train_start(self, trainer: Trainer) -> None:
        if not self._peak_given:
            self.peak = device_peak_tflops(self.precision, self.device or trainer.runtime.device)

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        tokens_per_s = metrics.get("train/tokens_per_s")
        if not tokens_per_s or not self.flops_per_token:
            return
        tflops = self.flops_per_token * tokens_per_s / 1e12
        metrics["train/tflops_per_s"] = tflops
        metrics["train/tflops_per_s_per_device"] = tflops / trainer.runtime.world_size
        if self.peak:
            metrics["train/mfu"] = tflops / (self.peak * trainer.runtime.world_size)
