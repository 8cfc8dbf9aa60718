"""Metric loggers: console (with a progress bar), ``metrics.jsonl``, TensorBoard, W&B.

Each logs the same dict of scalars the trainer produces (loss, lr, grad norm, tokens/s, MFU or
FLOP/s, validation losses per language); only the main rank writes.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tower_megatron.training.callbacks.base import CALLBACKS, MetricLogger

if TYPE_CHECKING:
    from tower_megatron.training.trainer import Trainer

_CONSOLE_KEYS = (
    ("train/loss", "loss", "{:.4f}"),
    ("train/lr", "lr", "{:.2e}"),
    ("train/grad_norm", "gnorm", "{:.3f}"),
    ("train/tokens_per_s", "tok/s", "{:,.0f}"),
    ("train/mfu", "mfu", "{:.1%}"),
    ("train/tflops_per_s", "TFLOP/s", "{:.3g}"),
)


@CALLBACKS.register("console")
class ConsoleLogger(MetricLogger):
    """One line per logged step; a tqdm bar over steps when ``logging.progress_bar``."""

    def __init__(self, log_interval: int = 1, progress_bar: bool = True) -> None:
        super().__init__(log_interval)
        self.progress_bar = progress_bar
        self._bar: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.runtime.is_main and self.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=trainer.job.train.train_steps,
                initial=trainer.state.step,
                desc=f"{trainer.job.train.stage} {trainer.job.run.name}",
                unit="step",
                dynamic_ncols=True,
            )

    def on_step_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(1)
        super().on_step_end(trainer, metrics)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        parts = [f"step {step}"]
        for key, label, fmt in _CONSOLE_KEYS:
            if key in metrics:
                parts.append(f"{label} {fmt.format(metrics[key])}")
        parts += [f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("valid/")]
        line = " | ".join(parts)
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@CALLBACKS.register("jsonl")
class JsonlLogger(MetricLogger):
    """``<run_dir>/metrics.jsonl``: one JSON object per logged step (appended, so a resumed run
    continues the same file)."""

    def __init__(self, path: Path, log_interval: int = 1) -> None:
        super().__init__(log_interval)
        self.path = Path(path)
        self._handle: Any = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        # One open file for the run (opening it per step cost ~0.4% of a small model's step);
        # flushed per record, so a killed run keeps every line it logged.
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        self._handle.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@CALLBACKS.register("tensorboard")
class TensorBoardLogger(MetricLogger):
    def __init__(self, log_dir: Path, log_interval: int = 1) -> None:
        super().__init__(log_interval)
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@CALLBACKS.register("wandb")
class WandbLogger(MetricLogger):
    """Weights & Biases; ``mode=offline`` writes a syncable run under ``<run_dir>/wandb``.

    The W&B run id is kept in the run directory so a resumed job continues the same W&B run.
    """

    def __init__(self, run_dir: Path, project: str, config: dict, log_interval: int = 1, **init: Any) -> None:
        super().__init__(log_interval)
        self.run_dir, self.project, self.config, self.init = Path(run_dir), project, config, init
        self._run: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.runtime.is_main:
            return
        import wandb

        id_file = self.run_dir / "wandb_run_id"
        # Our own id (W&B's generator moved between releases): 8 base-36 characters, as W&B's.
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        self._run = wandb.init(
            project=self.project,
            dir=str(self.run_dir),
            id=run_id,
            resume="allow",
            config=self.config,
            **{k: v for k, v in self.init.items() if v},
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
