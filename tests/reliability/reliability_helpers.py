"""Process and run-directory helpers shared by the reliability tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launch and everything under it (a failed test leaves nothing running)."""
    import psutil

    if proc.poll() is not None:
        return
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def wait_or_fail(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail(f"{proc.args} did not finish in {timeout:.0f}s:\n{log.read_text()[-4000:]}")


def records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def complete_checkpoints(ckpt: Path) -> list[str]:
    return sorted(p.name for p in Path(ckpt).glob("iter_*") if (p / "tower_meta.json").is_file())
