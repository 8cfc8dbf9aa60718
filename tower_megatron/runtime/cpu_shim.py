"""Run Megatron-Core's CUDA-only code paths on CPU.

Megatron-Core hard-codes ``device="cuda"`` / ``torch.cuda.current_device()`` in factories, keeps
its RNG tracker on the CUDA generator, synchronises CUDA streams in the DDP buffers and checks
``param.grad.type() == 'torch.cuda.FloatTensor'`` in gradient clipping and the optimizers. On a
machine without a GPU this module makes those paths run on CPU, unchanged:

* :class:`CudaToCpuMode`, a ``TorchFunctionMode``, rewrites every ``device`` argument that names
  CUDA (``"cuda"``, ``"cuda:0"``, ``torch.device("cuda")`` or a bare int) to CPU, turns
  ``Tensor.cuda()`` into a no-op and reports CPU float tensors as their CUDA type names from
  ``Tensor.type()`` so Megatron's type assertions hold. A mode switches itself off while it handles
  a call, so ``Tensor.backward``/``torch.autograd.backward`` would run the whole autograd graph
  (custom autograd functions, DDP's grad hooks) outside it: the autograd engine entry point is
  wrapped to re-enter a fresh mode.
* ``torch.cuda`` gets CPU stand-ins: the CUDA RNG *is* the CPU generator (so Megatron's RNG tracker
  forks and restores real state and dropout stays reproducible), and streams/events/synchronise
  are no-ops (CPU work is synchronous). These replacements of torch and Megatron-Core internals
  live in :mod:`tower_megatron.runtime.compat`, which checks each target's existence and signature
  before patching it.

Limits, stated: fp32 and bf16 only (no fp16 loss scaling on CPU), no Transformer Engine, Apex,
flash-attention or Triton kernels, no CUDA graphs, no dynamic inference engine; virtual pipeline
parallelism over gloo needs ``batch_p2p_comm=False`` (the trainer sets it). Nothing here is
active unless :func:`install` is called, which the runtime does when the resolved device is CPU
(no CUDA device visible, or ``run.device=cpu``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from tower_megatron.runtime import compat

_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}
_state = threading.local()
_installed = False


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # Megatron passes torch.cuda.current_device() (an int) as a device.
    return isinstance(device, int) and not isinstance(device, bool)


def map_device(device: Any) -> Any:
    """CPU for anything naming a CUDA device; other devices unchanged."""
    return torch.device("cpu") if _is_cuda_device(device) else device


class CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments of every torch call to CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CUDA_TYPE_NAMES.get(name, name)
        if "device" in kwargs:
            kwargs["device"] = map_device(kwargs["device"])
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], torch.device("cpu"), *args[2:])
        return func(*args, **kwargs)


class _SameGeneratorFilter(logging.Filter):
    """Megatron warns when the CPU RNG moves inside a CUDA-RNG fork; on CPU the two are one
    generator by design, so the warning would fire on every dropout call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


def install() -> None:
    """Patches ``torch.cuda`` and Megatron's RNG helpers (through :mod:`compat`, which checks each
    target first) and enters :class:`CudaToCpuMode`.

    Idempotent; per process. Call before building any Megatron object.
    """
    global _installed
    if _installed:
        return
    from megatron.core.tensor_parallel import random as mcore_random

    compat.install_cpu_patches(CudaToCpuMode)
    logging.getLogger(mcore_random.__name__).addFilter(_SameGeneratorFilter())
    mode = CudaToCpuMode()
    mode.__enter__()
    _state.mode = mode
    _installed = True


def uninstall() -> None:
    """Undoes :func:`install` (used by tests that switch runtimes in one process)."""
    global _installed
    if not _installed:
        return
    mode = getattr(_state, "mode", None)
    if mode is not None:
        mode.__exit__(None, None, None)
        _state.mode = None
    compat.restore_all()
    _installed = False


def is_installed() -> bool:
    return _installed
