"""``run_distributed``: run a function on N real processes joined by a gloo process group.

The one helper every distributed test uses (after OLMo-core's ``run_distributed_test``). Each
process gets torchrun's environment variables, so code under test initialises exactly as it does
under ``torchrun``. Return values come back per rank; an exception on any rank fails the call
with that rank's traceback.
"""

from __future__ import annotations

import os
import queue
import traceback
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp

from tower_megatron.runtime.distributed import free_port


def _worker(rank: int, world_size: int, port: int, func, kwargs, results) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        results.put((rank, "ok", func(**kwargs)))
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))
        raise
    finally:
        from tower_megatron.runtime import shutdown_runtime

        try:
            shutdown_runtime()
        except Exception:
            pass


def run_distributed(
    func: Callable[..., Any],
    world_size: int = 2,
    timeout: float = 1500.0,  # a bound for a hung rank, generous for a loaded machine
    **kwargs: Any,
) -> list[Any]:
    """Runs ``func(**kwargs)`` on ``world_size`` spawned processes; returns results by rank.

    ``func`` must be importable by name (a module-level function) because processes are spawned.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(rank, world_size, port, func, kwargs, results))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    collected: dict[int, Any] = {}
    errors: list[str] = []
    try:
        for _ in range(world_size):
            rank, status, value = _next_result(results, procs, timeout)
            if status == "ok":
                collected[rank] = value
            else:
                errors.append(f"rank {rank} failed:\n{value}")
                break
    except queue.Empty:
        errors.append(f"timed out after {timeout:.0f}s waiting for {world_size} ranks")
    finally:
        for proc in procs:
            proc.join(timeout=5 if errors else timeout)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if errors:
        raise RuntimeError("\n".join(errors))
    bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if bad:
        raise RuntimeError(f"a rank exited with code {bad[0]}")
    return [collected[r] for r in range(world_size)]


def _next_result(results: Any, procs: list, timeout: float) -> tuple[int, str, Any]:
    """The next rank's result; a rank that died without reporting one (a crash, a signal, the
    OOM killer) fails the call at once instead of after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return results.get(timeout=2.0)
        except queue.Empty:
            dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if dead:
                rank, code = dead[0]
                return rank, "error", f"rank {rank} died with exit code {code} without a result"
            if time.monotonic() > deadline:
                raise
