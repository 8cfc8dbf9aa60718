"""Helpers of the reward tests: a verifier that misbehaves (module-level, so spawned pool workers
import it by name) and a look at the host's process table."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tower_megatron.rewards import RewardResult, score


def crash_or_score(response: str, spec: dict, *, lang: str | None = None) -> RewardResult:
    """Dies like a segfaulting verifier on 'CRASH', hangs on 'HANG', raises on 'RAISE'; else the
    real reward."""
    if response == "CRASH":
        os._exit(139)
    if response == "HANG":
        time.sleep(600)
    if response == "RAISE":
        raise ValueError("verifier bug")
    return score(response, spec, lang=lang)


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def wait_gone(marker: str, seconds: float = 15.0) -> list[int]:
    """Polls until no process carries ``marker`` (a killed PID namespace is reaped
    asynchronously); returns those still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
