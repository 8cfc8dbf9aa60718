"""``RewardPool``: rewards scored in worker processes with a time bound per item.

Built on ``pebble.ProcessPool``: each item runs in a worker process under ``timeout_s`` (counted
from when a worker picks it up); a worker that runs over is killed and replaced, and so is one that
dies (segfault, ``os._exit``, out of memory). Either way the item scores 0, is counted
(``timeouts`` / ``crashes``) and the batch goes on, so a slow or broken verifier never stalls or
kills rollouts. A verifier that raises scores 0 and counts as ``errors``. The one failure that is
raised is :class:`~tower_megatron.rewards.sandbox.SandboxUnavailableError`: a code reward with no
sandbox is a setup problem to fix, not a 0 to train on.

Workers start with ``spawn`` (safe in a trainer that holds threads and process groups) and load
the libraries of the rewards named in ``warmup`` (default: all) up front, outside any item's time
bound.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from tower_megatron.rewards.registry import REWARDS, RewardResult, score
from tower_megatron.rewards.sandbox import SandboxLimits, SandboxUnavailableError

COUNTERS = ("scored", "timeouts", "crashes", "errors")


@dataclass
class RewardBatch:
    """Results in input order and this batch's counts (``scored``, ``timeouts``, ``crashes``,
    ``errors``) for the trainer to log."""

    results: list[RewardResult]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.results]


def _init_worker(
    code_limits: SandboxLimits | None, allow_unsandboxed: bool, warmup: Sequence[str], scratch: str
) -> None:
    from tower_megatron.rewards import code_exec

    # Sandbox work dirs of a worker killed mid-item cannot be removed by that worker; inside the
    # pool's scratch dir they go when the pool closes.
    tempfile.tempdir = scratch
    code_exec.configure(code_limits, allow_unsandboxed)
    for name in warmup:  # heavy imports here, not inside the first item's time bound
        reward = REWARDS.get(name)
        if reward.warmup is not None:
            reward.warmup()


def _failed(spec: Mapping, error: str) -> RewardResult:
    name = spec.get("type", "?") if isinstance(spec, Mapping) else "?"
    return RewardResult(0.0, str(name), error=error)


class RewardPool:
    """Scores batches of (response, spec, lang) in ``num_workers`` processes.

    >>> with RewardPool(num_workers=2, timeout_s=30) as pool:       # doctest: +SKIP
    ...     batch = pool.score_batch(["\\\\boxed{2}"], [{"type": "math", "answer": "2"}])
    ...     batch.values, batch.counts["timeouts"]
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 30.0,
        *,
        code_limits: SandboxLimits | None = None,
        allow_unsandboxed: bool = False,
        warmup: Sequence[str] | None = None,
        scorer: Callable[..., RewardResult] = score,
        start_method: str = "spawn",
    ) -> None:
        from pebble import ProcessPool

        warmup = REWARDS.names() if warmup is None else list(warmup)
        for name in warmup:
            REWARDS.get(name)  # an unknown name fails here, listing the known ones
        self.timeout_s = timeout_s
        self.scorer = scorer
        self.totals: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self._scratch = tempfile.mkdtemp(prefix="tower-rewards-")
        self._pool = ProcessPool(
            max_workers=num_workers,
            initializer=_init_worker,
            initargs=(code_limits, allow_unsandboxed, warmup, self._scratch),
            context=multiprocessing.get_context(start_method),
        )

    def score_batch(
        self,
        responses: Sequence[str],
        specs: Sequence[Mapping],
        langs: Sequence[str | None] | None = None,
    ) -> RewardBatch:
        """One result per response, in order; failures are 0 with ``error`` set and counted."""
        if len(responses) != len(specs) or (langs is not None and len(langs) != len(responses)):
            raise ValueError("responses, specs and langs must have the same length")
        langs = list(langs) if langs is not None else [None] * len(responses)
        futures = [
            self._pool.schedule(self.scorer, args=(r, dict(s)), kwargs={"lang": lang}, timeout=self.timeout_s)
            for r, s, lang in zip(responses, specs, langs, strict=True)
        ]
        from pebble import ProcessExpired

        counts: Counter[str] = Counter({name: 0 for name in COUNTERS})
        results: list[RewardResult] = []
        for future, spec in zip(futures, specs, strict=True):
            try:
                results.append(future.result())
                counts["scored"] += 1
            except FutureTimeout:
                results.append(_failed(spec, f"verifier timed out after {self.timeout_s:g} s"))
                counts["timeouts"] += 1
            except ProcessExpired as exc:
                results.append(_failed(spec, f"verifier process died (exit code {exc.exitcode})"))
                counts["crashes"] += 1
            except SandboxUnavailableError:
                for rest in futures:
                    rest.cancel()
                raise
            except Exception as exc:  # a verifier's own error: one 0, not a dead trainer
                results.append(_failed(spec, f"{type(exc).__name__}: {exc}"))
                counts["errors"] += 1
        self.totals.update(counts)
        return RewardBatch(results, dict(counts))

    def close(self) -> None:
        """Ends the workers and removes their scratch dir. ``score_batch`` returns only when all
        its items are done, so no work is lost; stopping (not just closing) also ends a worker
        that is still starting (a replacement running its warmup), which would otherwise write
        into the scratch dir while it is removed."""
        try:
            self._pool.stop()
            self._pool.join()
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
