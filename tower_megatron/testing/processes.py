"""Helpers for tests that launch the real CLI as processes (``torchrun``, ``preprocess``) and
interrupt it: kill a whole launch tree, wait or fail with the log's tail, read what the run left
(``metrics.jsonl`` lines, complete checkpoints), and a small tmpfs for full-disk cases."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path


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
    """The exit code; past ``timeout`` the tree is killed and the test fails with the log's tail."""
    import pytest

    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail(f"{proc.args} did not finish in {timeout:.0f}s:\n{log.read_text()[-4000:]}")


def metrics_records(run_dir: Path) -> list[dict]:
    """The complete lines of ``<run_dir>/metrics.jsonl`` (a line being written is left out)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def complete_checkpoints(ckpt: Path) -> list[str]:
    """Names of the ``iter_*`` directories holding a completion mark (``tower_meta.json``)."""
    return sorted(p.name for p in Path(ckpt).glob("iter_*") if (p / "tower_meta.json").is_file())


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """``path`` (created here) as a tmpfs of ``size`` (``600k``, ``1m``) while the block runs; the
    test is skipped where mounting needs root."""
    import pytest

    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
