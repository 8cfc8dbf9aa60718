"""A dead rank never hangs the job (issue 13 item 4).

Two ranks of the real ``tower-megatron train`` are started one process per rank, as ``srun``
starts them (no torchrun to notice a dead worker). Once step 3 was logged (after the step-2
checkpoint), rank 1 is killed (SIGKILL) or frozen (SIGSTOP). Rank 0 must exit with the watchdog's
code, naming rank 1, and leave the last complete checkpoint intact and named by ``latest``. The
process-group timeout is 10 minutes, longer than the test waits, so only the watchdog can end
the frozen case.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tower_megatron.runtime import free_port
from tower_megatron.runtime.watchdog import PEER_FAILURE_EXIT
from tower_megatron.testing.processes import complete_checkpoints, kill_tree, metrics_records

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 300  # far below the 10-minute process-group timeout the job is given


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> tuple[Path, str]:
    from tower_megatron.config import to_yaml
    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

    root = tmp_path_factory.mktemp("deadrank")
    assets = build_tiny_assets(root / "assets")
    job = tiny_job(
        assets,
        root / "run",
        "train.train_steps=500",
        "checkpoint.save_interval=2",
        "data.split=98,2,0",
        "run.distributed_timeout_minutes=10",
        "run.peer_failure_timeout_s=10",
    )
    path = root / "job.yaml"
    path.write_text(to_yaml(job))
    return root, str(path)


def _rank(rank: int, config: str, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [sys.executable, "-m", "tower_megatron", "train", config]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _run_and_stop_rank1(root: Path, path: str, sig: int) -> tuple[int, str]:
    """Starts both ranks, sends ``sig`` to rank 1 once step 3 was logged; returns rank 0's exit
    code and log."""
    run_dir = root / "run"
    port = free_port()
    log0 = root / f"rank0_{sig}.log"
    procs = [_rank(0, path, port, log0), _rank(1, path, port, root / f"rank1_{sig}.log")]
    try:
        already = len(metrics_records(run_dir))
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not any(r["step"] >= 3 for r in metrics_records(run_dir)[already:]):
            assert all(p.poll() is None for p in procs), log0.read_text()[-3000:]
            time.sleep(0.05)
        procs[1].send_signal(sig)
        try:
            code = procs[0].wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank 0 still running {WAIT_S}s after rank 1 got signal {sig}")
    finally:
        for proc in procs:
            kill_tree(proc)
    return code, log0.read_text()


def _last_checkpoint_intact(run_dir: Path, log: str) -> None:
    ckpt = run_dir / "checkpoints"
    kept = complete_checkpoints(ckpt)
    assert kept, log[-3000:]
    assert (ckpt / "latest").read_text().strip() == kept[-1]
    assert int(kept[-1].rsplit("_", 1)[1]) % 2 == 0  # a save_interval=2 checkpoint


@pytest.mark.slow
def test_killed_rank_is_named_by_the_survivor(config):
    """kill -9: gloo on one host sees the closed connection at once; the survivor names the rank."""
    root, path = config
    code, log = _run_and_stop_rank1(root, path, signal.SIGKILL)
    assert code == PEER_FAILURE_EXIT, log[-3000:]
    assert "rank 1 stopped responding" in log
    _last_checkpoint_intact(root / "run", log)


@pytest.mark.slow
def test_frozen_rank_does_not_hang_the_survivor(config):
    """SIGSTOP: the peer's connections stay open (as when its host vanishes from the network), so
    only the heartbeat tells; without the watchdog rank 0 would wait the 10-minute timeout."""
    root, path = config
    code, log = _run_and_stop_rank1(root, path, signal.SIGSTOP)
    assert code == PEER_FAILURE_EXIT, log[-3000:]
    assert "rank 1 stopped responding" in log
    _last_checkpoint_intact(root / "run", log)
