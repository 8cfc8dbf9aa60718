"""Every workaround for torch or Megatron-Core internals, in one module.

What is replaced, and why, is listed here and nowhere else:

* CPU runtime (:func:`install_cpu_patches`, called by :func:`tower_megatron.runtime.cpu_shim.install`):
  ``torch.cuda`` functions and classes get CPU stand-ins, ``torch.Generator`` maps CUDA devices to
  CPU, the autograd engine's entry point re-enters the CUDA→CPU mode, and Megatron's private CUDA
  RNG helpers use the CPU generator (docs/cpu_runtime.md, "How it works").
* Distributed-optimizer checkpoints (:func:`prepare_distributed_optimizer_for_load`,
  :func:`unshare_step_tensors`, used on GPU too): three gaps of Megatron-Core 0.19's
  ``DistributedOptimizer`` with torch's Adam (docs/cpu_runtime.md, "Distributed-optimizer
  checkpoints").

Each patch first checks that what it replaces exists and, for functions, that it still takes the
parameters the replacement was written for (``inspect.signature``). A renamed or re-signatured
internal after an upgrade raises :class:`CompatError` naming it and the installed torch and
megatron-core versions, instead of being "patched" silently.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

_UNSET = object()
_patched: list[tuple[Any, str, Any]] = []


class CompatError(RuntimeError):
    """An internal of torch or Megatron-Core that a workaround relies on is missing or changed."""


def versions() -> str:
    """``torch X, megatron-core Y`` as installed (for error messages and reports)."""

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return f"torch {torch.__version__}, megatron-core {version('megatron-core')}"


def _owner_name(owner: Any) -> str:
    return getattr(owner, "__qualname__", None) or getattr(owner, "__name__", None) or type(owner).__name__


def parameter_names(func: Callable) -> list[str]:
    """Parameter names of ``func`` (without ``self`` for unbound methods), in order."""
    names = list(inspect.signature(func).parameters)
    return names[1:] if names[:1] == ["self"] else names


def check_target(owner: Any, name: str, params: Sequence[str] | None = None) -> Any:
    """Returns ``owner.name`` after checking it exists and (``params``) takes exactly those
    parameters; raises :class:`CompatError` naming the target and the installed versions."""
    target = f"{getattr(owner, '__module__', '')}.{_owner_name(owner)}.{name}".lstrip(".")
    original = getattr(owner, name, _UNSET)
    if original is _UNSET:
        raise CompatError(
            f"cannot patch {target}: it does not exist in this installation ({versions()}); "
            "the workaround in tower_megatron/runtime/compat.py was written for other versions"
        )
    if params is not None:
        try:
            found = parameter_names(original)
        except (TypeError, ValueError):  # a builtin without a readable signature
            raise CompatError(
                f"cannot patch {target}: its signature is not readable ({versions()})"
            ) from None
        if found != list(params):
            raise CompatError(
                f"cannot patch {target}: it takes ({', '.join(found)}), the workaround expects "
                f"({', '.join(params)}) ({versions()}); re-check tower_megatron/runtime/compat.py"
            )
    return original


def replace(owner: Any, name: str, new: Any, params: Sequence[str] | None | object = _UNSET) -> Any:
    """Sets ``owner.name = new`` after :func:`check_target`; returns the original.

    ``params``: the parameter names the original must take; by default those of ``new`` when it is
    a plain function (a stand-in must accept what callers pass to the real one); ``None`` checks
    existence only (classes, ``*args`` wrappers).
    """
    if params is _UNSET:
        params = parameter_names(new) if inspect.isfunction(new) else None
    original = check_target(owner, name, params)  # type: ignore[arg-type]
    _patched.append((owner, name, original))
    setattr(owner, name, new)
    return original


def restore_all() -> None:
    """Undoes every :func:`replace`, newest first."""
    while _patched:
        owner, name, value = _patched.pop()
        setattr(owner, name, value)


# ------------------------------------------------------------------------------ CPU runtime
class NullStream:
    """Stands in for ``torch.cuda.Stream``: CPU work is already ordered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_stream(self, other: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def record_event(self, event: Any = None) -> NullEvent:
        return event or NullEvent()

    def query(self) -> bool:
        return True

    def __enter__(self) -> NullStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class NullEvent:
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

    def elapsed_time(self, end_event: Any) -> float:
        return 0.0


def _cuda_stand_ins() -> dict[str, Any]:
    """``torch.cuda`` attributes Megatron-Core calls, as CPU stand-ins with the real signatures.

    Each gets its own function object: torch._dynamo refuses two torch.cuda names bound to one
    object ("Duplicate torch object").
    """

    def current_device() -> int:
        return 0

    def device_count() -> int:
        return 1

    def set_device(device: Any) -> None:
        return None

    def synchronize(device: Any = None) -> None:
        return None

    def get_rng_state(device: Any = "cuda") -> torch.Tensor:
        return torch.get_rng_state()  # the CUDA RNG *is* the CPU generator

    def set_rng_state(new_state: torch.Tensor, device: Any = "cuda") -> None:
        torch.set_rng_state(new_state)

    def manual_seed(seed: int) -> None:
        # Not torch.manual_seed: that calls torch.cuda.manual_seed_all, i.e. back into here.
        torch.default_generator.manual_seed(int(seed))

    def manual_seed_all(seed: int) -> None:
        torch.default_generator.manual_seed(int(seed))

    def current_stream(device: Any = None) -> NullStream:
        return NullStream()

    def default_stream(device: Any = None) -> NullStream:
        return NullStream()

    def stream(stream: Any) -> Any:
        return contextlib.nullcontext(stream)

    def empty_cache() -> None:
        return None

    def is_current_stream_capturing() -> bool:
        return False

    def memory_allocated(device: Any = None) -> int:
        return 0

    def max_memory_allocated(device: Any = None) -> int:
        return 0

    defined = dict(locals())
    return {name: fn for name, fn in defined.items() if inspect.isfunction(fn)}


_OriginalGenerator = torch.Generator


class _GeneratorMeta(type(_OriginalGenerator)):
    # Generators made before the patch, by torch itself (torch.default_generator) or by C++ are
    # instances of the original class; Megatron's RNG code checks isinstance(x, torch.Generator).
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _OriginalGenerator)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _OriginalGenerator)


class CudaMappedGenerator(_OriginalGenerator, metaclass=_GeneratorMeta):
    """``torch.Generator(device="cuda")`` (Megatron's inference controller) is a constructor no
    function mode sees: it builds a real CPU generator instead. A subclass with an instance check
    that accepts every generator, so ``isinstance(g, torch.Generator)`` stays true both ways."""

    def __new__(cls, device: Any = "cpu") -> torch.Generator:
        from tower_megatron.runtime.cpu_shim import map_device

        return _OriginalGenerator(device=map_device(device))


def _wrap_engine_run_backward(original: Callable, enter_mode: Callable[[], Any]) -> Callable:
    def engine_run_backward(*args: Any, **kwargs: Any) -> Any:
        with enter_mode():
            return original(*args, **kwargs)

    return engine_run_backward


def _cpu_get_cuda_rng_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False):
    return torch.get_rng_state()


def _cpu_set_cuda_rng_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False):
    torch.set_rng_state(new_state)


def install_cpu_patches(enter_mode: Callable[[], Any]) -> None:
    """The CPU runtime's replacements of torch and Megatron-Core internals (all checked first).

    ``enter_mode``: makes the CUDA→CPU ``TorchFunctionMode`` context; a mode switches itself off
    while it handles a call, so ``Tensor.backward`` would run the whole autograd graph (custom
    autograd functions, DDP's grad hooks) outside it: the engine's entry point re-enters one.
    """
    import torch.autograd.graph as autograd_graph
    from megatron.core.tensor_parallel import random as mcore_random

    # Check everything before changing anything: a failure leaves torch untouched.
    stand_ins = _cuda_stand_ins()
    classes = {"Stream": NullStream, "Event": NullEvent}
    for name, fn in stand_ins.items():
        check_target(torch.cuda, name, parameter_names(fn))
    for name in classes:
        check_target(torch.cuda, name)
    check_target(torch, "Generator")
    engine_params = ["t_outputs", "args", "kwargs"]
    check_target(autograd_graph, "_engine_run_backward", engine_params)
    check_target(mcore_random, "_get_cuda_rng_state", parameter_names(_cpu_get_cuda_rng_state))
    check_target(mcore_random, "_set_cuda_rng_state", parameter_names(_cpu_set_cuda_rng_state))

    for name, fn in {**stand_ins, **classes}.items():
        replace(torch.cuda, name, fn)
    replace(torch.cuda.random, "get_rng_state", torch.cuda.get_rng_state)
    replace(torch.cuda.random, "set_rng_state", torch.cuda.set_rng_state)
    replace(torch, "Generator", CudaMappedGenerator, params=None)
    wrapped = _wrap_engine_run_backward(autograd_graph._engine_run_backward, enter_mode)
    replace(autograd_graph, "_engine_run_backward", wrapped, params=engine_params)
    if hasattr(torch.autograd, "_engine_run_backward"):  # re-exported in some torch versions
        replace(torch.autograd, "_engine_run_backward", wrapped, params=engine_params)
    replace(mcore_random, "_get_cuda_rng_state", _cpu_get_cuda_rng_state)
    replace(mcore_random, "_set_cuda_rng_state", _cpu_set_cuda_rng_state)


# ------------------------------------------------------------------------------ distributed optimizer
_DISTOPT_METHODS = {
    "_get_main_param_and_optimizer_states": ["model_param"],
    "_set_main_param_and_optimizer_states": ["model_param", "tensors"],
    "_init_optimizer_states_with_dummy_values": [],
}


def _distributed_optimizers(optimizer: Any) -> list[Any]:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    parts = getattr(optimizer, "chained_optimizers", [optimizer])
    return [opt for opt in parts if isinstance(opt, DistributedOptimizer)]


def prepare_distributed_optimizer_for_load(optimizer: Any) -> None:
    """Two gaps of Megatron-Core 0.19.2's distributed optimizer with torch's Adam (no TE/Apex):

    * Its loading state dict reads the optimizer state (``state_dict`` asserts one ``step``), which
      torch's Adam creates only at its first step: a resumed run has none yet. Megatron's own
      ``_init_optimizer_states_with_dummy_values`` (one step on zero gradients) creates it; what
      that step writes (Adam moments, weight decay on the main params) is overwritten by the load.
    * torch's Adam keeps ``step`` as a tensor in the per-parameter state, so
      ``_set_main_param_and_optimizer_states`` looks for a ``step`` that the checkpoint's
      parameter state never holds (KeyError 'step'). ``step`` is restored from the saved param
      groups by ``load_state_dict`` just before, so the copy must keep that value: the wrapper
      fills in the current tensors for keys the checkpoint lacks and never takes ``step`` from it
      (and copies without autograd: ``dp_reshardable`` loading otherwise fails on leaf views).
    """
    opts = _distributed_optimizers(optimizer)
    if opts:
        from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

        for name, params in _DISTOPT_METHODS.items():
            check_target(DistributedOptimizer, name, params)
    for opt in opts:
        if not opt.optimizer.state:
            opt._init_optimizer_states_with_dummy_values()
        if getattr(opt, "_tower_load_patched", False):
            continue
        original = opt._set_main_param_and_optimizer_states

        @torch.no_grad()  # the dp_reshardable loader copies into views of leaf parameters
        def set_states(model_param, tensors, _opt=opt, _original=original):
            current = _opt._get_main_param_and_optimizer_states(model_param)
            loaded = {k: v for k, v in tensors.items() if k != "step"}
            _original(model_param, {**current, **loaded})

        opt._set_main_param_and_optimizer_states = set_states  # this instance only
        opt._tower_load_patched = True


def unshare_step_tensors(optimizer: Any) -> None:
    """After loading, the distributed optimizer has handed one ``step`` tensor to every parameter's
    state (``load_state_dict`` builds a single tensor and torch keeps ``step`` uncopied). torch's
    Adam increments each state's ``step`` in place, so a shared one would advance once per
    parameter per step: wrong bias correction, and a different step on each DP rank."""
    for opt in _distributed_optimizers(optimizer):
        for state in opt.optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].clone()
