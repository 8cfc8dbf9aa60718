"""Measured per-rank memory of a real training run, to hold the planner's arithmetic to account.

:class:`MemoryProbe` is a trainer callback. It counts, on its own rank:

- parameters: bytes of the unique storages behind the model's parameters (with the distributed
  optimizer that is Megatron DDP's padded parameter buffer);
- gradients: bytes of Megatron DDP's gradient buffers (``grad_data`` of every buffer);
- optimizer state: bytes of the unique storages in the optimizer's ``state`` (Adam moments and
  ``step`` counters) plus the fp32 main copies of half-precision parameters;
- activations: the peak, over a step, of the bytes of unique storages autograd keeps for
  backward, seen through :func:`torch.autograd.graph.saved_tensors_hooks` (parameters excluded).
  A storage counts from the first time it is saved until the last saved reference is released,
  so pipeline micro-batches in flight and recomputation during backward are included.

Works on CPU and GPU alike; on GPU ``torch.cuda.max_memory_allocated`` is recorded as well.
"""

from __future__ import annotations

from typing import Any

import torch

from tower_megatron.training.callbacks.base import Callback


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


class _SavedTensorCounter:
    """Live bytes of unique storages saved for backward (and their peak)."""

    def __init__(self, excluded: set[int]) -> None:
        self.excluded = excluded
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0
        self.uncounted = 0  # saved tensors whose storage could not be read

    def pack(self, tensor: torch.Tensor) -> Any:
        try:
            ptr, nbytes = _storage_key(tensor)
        except (RuntimeError, NotImplementedError):  # tensor subclasses without one storage (FP8)
            self.uncounted += 1
            return tensor
        if ptr in self.excluded or nbytes == 0 or tensor.device.type == "meta":
            return tensor
        return _Packed(self, tensor, ptr, nbytes)

    @staticmethod
    def unpack(packed: Any) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Packed) else packed

    def acquire(self, ptr: int, nbytes: int) -> None:
        if ptr not in self.refs:
            self.refs[ptr], self.sizes[ptr] = 0, nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self.refs[ptr] += 1

    def release(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            del self.refs[ptr]
            self.live -= self.sizes.pop(ptr)


class _Packed:
    """What autograd stores instead of the tensor; its release is the storage's last use."""

    __slots__ = ("counter", "tensor", "ptr")

    def __init__(self, counter: _SavedTensorCounter, tensor: torch.Tensor, ptr: int, nbytes: int) -> None:
        self.counter, self.tensor, self.ptr = counter, tensor, ptr
        counter.acquire(ptr, nbytes)

    def __del__(self) -> None:
        self.counter.release(self.ptr)


def _unique_bytes(tensors: list[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        ptr, nbytes = _storage_key(t)
        seen[ptr] = nbytes
    return sum(seen.values())


def model_memory(chunks: list[torch.nn.Module]) -> dict[str, int]:
    """Parameter and gradient-buffer bytes of this rank's model chunks (Megatron DDP wrapped)."""
    params = [p for chunk in chunks for p in chunk.parameters()]
    buffers = [
        b
        for chunk in chunks
        for b in [*getattr(chunk, "buffers", []), *getattr(chunk, "expert_parallel_buffers", [])]
    ]
    return {
        "params": _unique_bytes(params),
        "grads": sum(b.grad_data.nbytes for b in buffers),
    }


def optimizer_memory(optimizer: Any) -> int:
    """Adam state and fp32 main parameters held by this rank's (Megatron) optimizer."""
    inner = [getattr(o, "optimizer", None) for o in getattr(optimizer, "chained_optimizers", [optimizer])]
    tensors: list[torch.Tensor] = []
    for opt in inner:
        if opt is None:
            continue
        for state in opt.state.values():
            tensors.extend(v for v in state.values() if isinstance(v, torch.Tensor))
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        for group in getattr(opt, "shard_fp32_from_float16_groups", None) or getattr(
            opt, "fp32_from_float16_groups", []
        ):
            tensors.extend(group)
    return _unique_bytes(tensors)


class MemoryProbe(Callback):
    """Records this rank's measured memory after every step in :attr:`records`."""

    priority = 5

    def __init__(self) -> None:
        self.records: list[dict[str, int]] = []
        self._counter: _SavedTensorCounter | None = None
        self._hooks: Any = None

    def on_train_start(self, trainer: Any) -> None:
        excluded = set()
        for chunk in trainer.model:
            for param in chunk.parameters():
                try:
                    excluded.add(_storage_key(param)[0])
                except (RuntimeError, NotImplementedError):  # FP8 parameter subclasses
                    pass
        self._counter = _SavedTensorCounter(excluded)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._counter.pack, self._counter.unpack)
        self._hooks.__enter__()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        assert self._counter is not None
        record = {
            **model_memory(trainer.model),
            "optimizer": optimizer_memory(trainer.optimizer),
            "activations": self._counter.peak,
        }
        if torch.cuda.is_available():
            record["max_memory_allocated"] = int(torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        if self._counter.uncounted:
            record["uncounted_saved_tensors"] = self._counter.uncounted
        self.records.append(record)
        self._counter.peak = self._counter.live

    def on_train_end(self, trainer: Any) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None
