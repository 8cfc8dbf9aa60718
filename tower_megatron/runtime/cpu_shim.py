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
  are no-ops (CPU work is synchronous).

Limits, stated: fp32 and bf16 only (no fp16 loss scaling on CPU), no Transformer Engine, Apex,
flash-attention or Triton kernels, no CUDA graphs, no dynamic inference engine; virtual pipeline
parallelism over gloo needs ``batch_p2p_comm=False`` (the trainer sets it). Nothing here is
active unless :func:`install` is called, which the runtime does only when CUDA is absent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}
_state = threading.local()
_installed = False
_patched: list[tuple[Any, str, Any]] = []


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # Megatron passes torch.cuda.current_device() (an int) as a device.
    return isinstance(device, int) and not isinstance(device, bool)


def _map_device(device: Any) -> Any:
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
            kwargs["device"] = _map_device(kwargs["device"])
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], torch.device("cpu"), *args[2:])
        return func(*args, **kwargs)


# ---------------------------------------------------------------- torch.cuda stand-ins
class _NullStream:
    """Stands in for ``torch.cuda.Stream``: CPU work is already ordered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_stream(self, other: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def record_event(self, event: Any = None) -> _NullEvent:
        return event or _NullEvent()

    def query(self) -> bool:
        return True

    def __enter__(self) -> _NullStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class _NullEvent:
    """Stands in for ``torch.cuda.Event``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, stream: Any = None) -> None:
        pass

    def wait(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, other: Any) -> float:
        return 0.0


def _cpu_get_rng_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False):
    return torch.get_rng_state()


def _cpu_set_rng_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False):
    torch.set_rng_state(new_state)


def _cuda_stand_ins() -> dict[str, Any]:
    # Each attribute gets its own function object: torch._dynamo refuses two torch.cuda names
    # bound to one object ("Duplicate torch object").
    def current_device() -> int:
        return 0

    def device_count() -> int:
        return 1

    def set_device(device: Any) -> None:
        return None

    def synchronize(device: Any = None) -> None:
        return None

    def get_rng_state(device: Any = "cuda") -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(state: torch.Tensor, device: Any = "cuda") -> None:
        torch.set_rng_state(state)

    def manual_seed(seed: int) -> None:
        # Not torch.manual_seed: that calls torch.cuda.manual_seed_all, i.e. back into here.
        torch.default_generator.manual_seed(int(seed))

    def manual_seed_all(seed: int) -> None:
        torch.default_generator.manual_seed(int(seed))

    def current_stream(device: Any = None) -> _NullStream:
        return _NullStream()

    def default_stream(device: Any = None) -> _NullStream:
        return _NullStream()

    def stream(s: Any = None):
        return contextlib.nullcontext(s)

    def empty_cache() -> None:
        return None

    def is_current_stream_capturing() -> bool:
        return False

    def memory_allocated(device: Any = None) -> int:
        return 0

    def max_memory_allocated(device: Any = None) -> int:
        return 0

    return {
        "current_device": current_device,
        "device_count": device_count,
        "set_device": set_device,
        "synchronize": synchronize,
        "get_rng_state": get_rng_state,
        "set_rng_state": set_rng_state,
        "manual_seed": manual_seed,
        "manual_seed_all": manual_seed_all,
        "current_stream": current_stream,
        "default_stream": default_stream,
        "stream": stream,
        "Stream": _NullStream,
        "Event": _NullEvent,
        "empty_cache": empty_cache,
        "is_current_stream_capturing": is_current_stream_capturing,
        "memory_allocated": memory_allocated,
        "max_memory_allocated": max_memory_allocated,
    }


def _patch(owner: Any, name: str, value: Any) -> None:
    _patched.append((owner, name, getattr(owner, name, None)))
    setattr(owner, name, value)


_OriginalGenerator = torch.Generator


class _CpuGenerator:
    """``torch.Generator(device="cuda")`` is a constructor no function mode sees."""

    def __new__(cls, device: Any = "cpu"):
        return _OriginalGenerator(device=_map_device(device))


def _wrap_engine_run_backward(original: Any) -> Any:
    def engine_run_backward(*args: Any, **kwargs: Any) -> Any:
        with CudaToCpuMode():
            return original(*args, **kwargs)

    return engine_run_backward


class _SameGeneratorFilter(logging.Filter):
    """Megatron warns when the CPU RNG moves inside a CUDA-RNG fork; on CPU the two are one
    generator by design, so the warning would fire on every dropout call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


def install() -> None:
    """Patches ``torch.cuda`` and Megatron's RNG helpers and enters :class:`CudaToCpuMode`.

    Idempotent; per process. Call before building any Megatron object.
    """
    global _installed
    if _installed:
        return
    for name, value in _cuda_stand_ins().items():
        _patch(torch.cuda, name, value)
    _patch(torch.cuda.random, "get_rng_state", torch.cuda.get_rng_state)
    _patch(torch.cuda.random, "set_rng_state", torch.cuda.set_rng_state)
    _patch(torch, "Generator", _CpuGenerator)
    import torch.autograd.graph as autograd_graph

    wrapped = _wrap_engine_run_backward(autograd_graph._engine_run_backward)
    _patch(autograd_graph, "_engine_run_backward", wrapped)
    _patch(torch.autograd, "_engine_run_backward", wrapped)

    from megatron.core.tensor_parallel import random as mcore_random

    _patch(mcore_random, "_get_cuda_rng_state", _cpu_get_rng_state)
    _patch(mcore_random, "_set_cuda_rng_state", _cpu_set_rng_state)
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
    while _patched:
        owner, name, value = _patched.pop()
        setattr(owner, name, value)
    _installed = False


def is_installed() -> bool:
    return _installed
