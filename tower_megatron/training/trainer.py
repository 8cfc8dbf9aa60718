"""The one training loop. It knows parallelism, micro-batching, the optimizer step and when to
evaluate; a :class:`~tower_megatron.training.stage.Stage` says what a step computes and
callbacks do everything else (logging, checkpoints, profiling, preemption)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.pipeline_parallel import get_forward_backward_func

from tower_megatron.config.schema import JobConfig
from tower_megatron.runtime import Runtime
from tower_megatron.training.batches import make_loader
from tower_megatron.training.builder import sync_params
from tower_megatron.training.callbacks.base import Callback
from tower_megatron.training.stage import Stage


@dataclass
class TrainState:
    """What a checkpoint must restore besides weights and optimizer to continue exactly."""

    step: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Trainer:
    def __init__(
        self,
        job: JobConfig,
        runtime: Runtime,
        stage: Stage,
        model: list[torch.nn.Module],
        optimizer: Any,
        scheduler: Any,
        train_dataset: Any,
        valid_datasets: dict[str, Any],
        callbacks: list[Callback],
        run_dir: Path,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        self.job, self.runtime, self.stage = job, runtime, stage
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_dataset, self.valid_datasets = train_dataset, valid_datasets
        self.callbacks = sorted(callbacks, key=lambda cb: cb.priority)
        self.run_dir = run_dir
        # The resolved architecture, stored in checkpoints so conversion and shape checks know it.
        self.model_config = model_config
        self.state = TrainState()
        self.should_stop = False
        self.stop_reason = ""
        self._train_iter: Any = None
        self._fb = get_forward_backward_func()
        train = job.train
        self.num_microbatches = train.global_batch_size // (train.micro_batch_size * runtime.dp)

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainState:
        self._call("on_train_start")
        while self.state.step < self.job.train.train_steps and not self.should_stop:
            metrics = self.train_step()
            self._call("on_step_end", metrics)
            interval = self.job.train.eval_interval
            if interval and self.state.step % interval == 0 and not self.should_stop:
                self.evaluate()
        # With the distributed optimizer's overlapped param gather the last update reaches the
        # weights only at the next forward: gather it now, before anything reads them.
        sync_params(self.model)
        self._call("on_train_end")
        return self.state

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def stop(self, reason: str) -> None:
        self.should_stop, self.stop_reason = True, reason

    # ------------------------------------------------------------------ building blocks
    # Stages compose their train_step from these; the default (Stage.train_step) is
    # forward_backward over one global batch, then optimizer_step.
    def _forward_step(self, data_iterator, model):
        batch = next(data_iterator)
        if not self.runtime.is_cpu:  # loaders yield CPU tensors; the model is on this rank's GPU
            batch = to_device(batch, self.runtime.device)
        return self.stage.forward_step(batch, model)

    def make_iterator(self, dataset: Any, consumed: int = 0, collate_fn: Any = None) -> Any:
        """One loader per model chunk: the interleaved schedule pulls each chunk's micro-batches
        from that chunk's own iterator, so every chunk must see the same stream."""
        loaders = [
            make_loader(
                dataset,
                self.job.train.micro_batch_size,
                ps.get_data_parallel_rank(),
                self.runtime.dp,
                consumed_samples=consumed,
                num_workers=self.job.data.num_workers,
                collate_fn=collate_fn or self.stage.collate,
            )
            for _ in self.model
        ]
        return loaders if len(loaders) > 1 else loaders[0]

    def train_iterator(self) -> Any:
        """The training stream, positioned after the samples consumed so far (kept across steps)."""
        if self._train_iter is None:
            self._train_iter = self.make_iterator(self.train_dataset, self.state.consumed_samples)
        return self._train_iter

    def run_schedule(
        self,
        data_iterator: Any,
        num_microbatches: int,
        forward_only: bool,
        forward_step: Any = None,
        shape: tuple[int, int] | None = None,
        model: list[torch.nn.Module] | None = None,
    ) -> list[dict]:
        """Megatron's pipeline schedule over ``num_microbatches`` micro-batches with
        ``forward_step`` (default: the stage's); ``shape`` is ``(seq_length, micro_batch_size)``
        of the activations sent between pipeline ranks (default: the stage's); ``model`` the
        chunks to run (default: the trained ones; a frozen reference, forward-only)."""
        seq_length, micro_batch = shape or self.stage.pipeline_shape()
        step = self._forward_step if forward_step is None else forward_step
        chunks = self.model if model is None else model
        return self._fb(
            forward_step_func=step,
            data_iterator=data_iterator,
            model=chunks if len(chunks) > 1 else chunks[0],
            num_microbatches=num_microbatches,
            seq_length=seq_length,
            micro_batch_size=micro_batch,
            forward_only=forward_only,
        )

    def forward_backward(self, data_iterator: Any, num_microbatches: int, **kwargs: Any) -> list[dict]:
        """Zeroes the gradients, then forward and backward over the micro-batches."""
        for chunk in self.model:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        return self.run_schedule(data_iterator, num_microbatches, forward_only=False, **kwargs)

    def optimizer_step(self) -> float | None:
        """One optimizer and scheduler step on the accumulated gradients; returns the grad norm."""
        updated, grad_norm, _ = self.optimizer.step()
        if updated:
            self.scheduler.step(increment=1)
        return float(grad_norm) if grad_norm is not None else None

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        start = time.perf_counter()
        out = self.stage.train_step(self)
        # Callbacks' stop requests (e.g. a preemption signal on one rank) ride in the loss
        # all-reduce: every rank learns of any request on the same step, with no extra collective.
        requests = [cb.stop_request for cb in self.callbacks if cb.stop_request]
        keys = self.stage.loss_keys
        sums = _world_sums(out.losses, keys, self.runtime.device, stop_votes=len(requests))
        reduced = {k: s / c if c > 0 else float("nan") for k, (s, c) in zip(keys, sums, strict=False)}
        if sums[-1][0] > 0 and not self.should_stop:
            self.stop(requests[0] if requests else "stop requested on another rank")
        elapsed = time.perf_counter() - start
        samples = out.samples if out.samples is not None else self.job.train.global_batch_size
        tokens = out.tokens if out.tokens is not None else samples * self.stage.tokens_per_sample()
        self.state.step += 1
        self.state.consumed_samples += samples
        self.state.consumed_tokens += tokens
        loss = reduced[keys[0]]
        if self.job.train.exit_on_nan and not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {self.state.step}")
        metrics = {f"train/{_metric_name(k)}": v for k, v in reduced.items()}
        metrics.update(
            {
                "train/loss": loss,
                "train/lr": self.optimizer.param_groups[0]["lr"],
                "train/grad_norm": out.grad_norm if out.grad_norm is not None else float("nan"),
                "train/step_time_s": elapsed,
                "train/tokens_per_s": tokens / elapsed,
                "train/consumed_tokens": float(self.state.consumed_tokens),
            }
        )
        metrics.update(out.metrics)
        return metrics

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss on each named validation set (``valid/loss/<name>``) and their token-weighted mean.

        Each set is read from its start (the same samples every time, so curves are comparable):
        ``eval_steps`` global batches, or fewer when the set is smaller.
        """
        for chunk in self.model:
            chunk.eval()
        train = self.job.train
        per_micro = train.micro_batch_size * self.runtime.dp
        metrics: dict[str, float] = {}
        keys = self.stage.loss_keys
        total = torch.zeros(2, dtype=torch.float64)
        for name, dataset in self.valid_datasets.items():
            num_micro = min(train.eval_steps * self.num_microbatches, len(dataset) // per_micro)
            if len(self.model) > 1:  # the interleaved schedule needs a multiple of PP micro-batches
                num_micro -= num_micro % self.runtime.pp
            if num_micro == 0:
                continue
            losses = self.run_schedule(self.make_iterator(dataset, 0), num_micro, forward_only=True)
            sums = reduce_loss_sums(losses, keys, self.runtime.device)
            if sums[keys[0]][1] > 0:
                metrics[f"valid/loss/{name}"] = float(sums[keys[0]][0] / sums[keys[0]][1])
                total += sums[keys[0]]
            for key in keys[1:]:  # a stage's other reports (DPO reward accuracy, ...) per set
                if sums[key][1] > 0:
                    metrics[f"valid/{_metric_name(key)}/{name}"] = float(sums[key][0] / sums[key][1])
        if total[1] > 0:
            metrics["valid/loss"] = float(total[0] / total[1])
            metrics["valid/ppl"] = float(math.exp(min(metrics["valid/loss"], 50.0)))
        for chunk in self.model:
            chunk.train()
        self._call("on_eval_end", metrics)
        return metrics


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested dict/list/tuple) batch moved to ``device``; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _metric_name(key: str) -> str:
    return key.replace(" ", "_")


def _world_sums(
    losses: list[dict[str, torch.Tensor]],
    keys: tuple[str, ...],
    device: torch.device,
    stop_votes: int = 0,
) -> list[list[float]]:
    """Per key ``[sum, count]`` over micro-batches, summed over every rank of the world, then
    ``[stop votes, 0]``: one all-reduce and one device-to-host copy a step (the step time of a
    small model is sensitive to every extra collective and tensor op).

    Only the last pipeline stage holds losses (the others contribute zeros); TP/CP ranks hold
    copies, which scale sum and count alike, so the ratio is the exact per-token mean over the
    global batch.
    """
    rows = []
    for key in keys:
        parts = [item[key].detach().view(2) for item in losses or () if key in item]
        if parts:
            rows.append(torch.stack(parts).to(device, torch.float64).sum(0))
        else:
            rows.append(torch.zeros(2, dtype=torch.float64, device=device))
    rows.append(torch.tensor([float(stop_votes), 0.0], dtype=torch.float64, device=device))
    flat = torch.stack(rows)
    dist.all_reduce(flat)
    return flat.tolist()


def reduce_loss_sums(
    losses: list[dict[str, torch.Tensor]], keys: tuple[str, ...], device: torch.device
) -> dict[str, torch.Tensor]:
    """Per key ``[sum, count]`` (float64, CPU) over micro-batches and every rank of the world."""
    sums = _world_sums(losses, keys, device)
    return {key: torch.tensor(sums[i], dtype=torch.float64) for i, key in enumerate(keys)}
