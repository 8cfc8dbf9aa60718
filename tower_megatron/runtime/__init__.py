"""Process groups, Megatron parallel state, device selection (GPU or the CPU shim), seeds."""

from tower_megatron.runtime.distributed import (
    Runtime,
    free_port,
    init_runtime,
    resolve_device,
    runtime_device,
    shutdown_runtime,
)

__all__ = ["Runtime", "free_port", "init_runtime", "resolve_device", "runtime_device", "shutdown_runtime"]
