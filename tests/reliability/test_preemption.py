"""Pre-emption as clusters deliver it, on 2 workers under the launcher (issue 14 item 2, issue 13).

A reference run of STEPS steps is compared bit for bit with a run that is stopped three ways and
restarted with the same command each time:

1. SIGTERM to the launcher process only (what ``kill PID`` of ``torchrun`` does): the launcher
   forwards it to each worker's process group, the workers stop at one step boundary, save, and
   the launcher exits 0. Before that, a checkpoint was saved at step 2 and no worker has a child
   process (Megatron's write-results Manager would be one, and dies with the group).
2. SIGUSR1 to every process of the job at once (what Slurm's ``scancel --signal`` / pre-emption
   warning does to a job step).
3. SIGTERM to the launcher's whole process group (``kill -TERM -PGID``, a shell's job control).

Each stop must leave a complete checkpoint at the stop step named by ``latest``, exit code 0, and
the final records must equal the reference's exactly (loss, lr, grad norm).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tower_megatron.testing.processes import complete_checkpoints, kill_tree, metrics_records, wait_or_fail

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = [
    sys.executable,
    "-m",
    "tower_megatron.runtime.torchrun",
    "--nproc-per-node=2",
    "--monitor-interval=0.1",
]
STEPS = 30
TIMEOUT = 400


def _launch(config: str, name: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [*LAUNCHER, "-m", "tower_megatron", "train", config, f"run.name={name}"],
        cwd=REPO,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group, as a batch job's launcher has
    )


def _workers(proc: subprocess.Popen) -> list:
    import psutil

    return [c for c in psutil.Process(proc.pid).children() if "RANK" in c.environ()]


def _wait_for_step(proc: subprocess.Popen, run_dir: Path, already: int, min_step: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r["step"] >= min_step for r in metrics_records(run_dir)[already:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before step {min_step} (exit {proc.poll()})")


def _stopped_cleanly(proc: subprocess.Popen, log: Path, run_dir: Path) -> int:
    code = wait_or_fail(proc, log, TIMEOUT)
    assert code == 0, f"launcher exit {code}:\n{log.read_text()[-4000:]}"
    stopped = metrics_records(run_dir)[-1]["step"]
    assert stopped < STEPS, "the signal came after the run ended"
    ckpt = run_dir / "checkpoints"
    assert f"iter_{stopped:07d}" in complete_checkpoints(ckpt), log.read_text()[-3000:]
    assert (ckpt / "latest").read_text().strip() == f"iter_{stopped:07d}"
    return stopped


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    from tower_megatron.config import to_yaml
    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

    root = tmp_path_factory.mktemp("preempt")
    assets = build_tiny_assets(root / "assets")
    job = tiny_job(
        assets,
        root / "reference",
        f"train.train_steps={STEPS}",
        "checkpoint.save_interval=2",
        "checkpoint.keep_last=2",
        "data.split=98,2,0",
    )
    config = root / "job.yaml"
    config.write_text(to_yaml(job))
    return {"root": root, "config": str(config)}


@pytest.mark.slow
def test_signals_to_launcher_and_group_save_and_resume_exactly(env):
    import psutil

    root, config = env["root"], env["config"]
    run_dir = root / "run"

    # Reference: one uninterrupted run under the same launcher.
    log = root / "reference.log"
    proc = _launch(config, "reference", log)
    try:
        assert wait_or_fail(proc, log, TIMEOUT) == 0, log.read_text()[-4000:]
    finally:
        kill_tree(proc)
    reference = {r["step"]: r for r in metrics_records(root / "reference")}
    assert sorted(reference) == list(range(1, STEPS + 1))

    # 1. SIGTERM to the launcher only, after the step-2 checkpoint exists.
    log = root / "launcher_sigterm.log"
    proc = _launch(config, "run", log)
    try:
        _wait_for_step(proc, run_dir, 0, 3)
        workers = _workers(proc)
        assert len(workers) == 2
        helpers = [c for w in workers for c in w.children(recursive=True)]
        assert helpers == [], f"a worker has helper processes after saving: {helpers}"
        os.kill(proc.pid, signal.SIGTERM)
        first = _stopped_cleanly(proc, log, run_dir)
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        kill_tree(proc)
    assert "exiting 0" in log.read_text()

    # 2. SIGUSR1 to every process of the job at once (Slurm).
    log = root / "slurm_sigusr1.log"
    proc = _launch(config, "run", log)
    try:
        _wait_for_step(proc, run_dir, len(metrics_records(run_dir)), first + 2)
        for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
            os.kill(p.pid, signal.SIGUSR1)
        second = _stopped_cleanly(proc, log, run_dir)
    finally:
        kill_tree(proc)
    assert f"resumed from {run_dir / 'checkpoints' / f'iter_{first:07d}'}" in log.read_text()
    assert second > first

    # 3. SIGTERM to the launcher's process group.
    log = root / "group_sigterm.log"
    proc = _launch(config, "run", log)
    try:
        _wait_for_step(proc, run_dir, len(metrics_records(run_dir)), second + 2)
        os.killpg(proc.pid, signal.SIGTERM)
        _stopped_cleanly(proc, log, run_dir)
    finally:
        kill_tree(proc)

    # 4. To the end; every logged value equals the reference's.
    log = root / "final.log"
    proc = _launch(config, "run", log)
    try:
        assert wait_or_fail(proc, log, TIMEOUT) == 0, log.read_text()[-4000:]
    finally:
        kill_tree(proc)
    got = metrics_records(run_dir)
    assert {r["step"] for r in got} == set(range(1, STEPS + 1))
    for record in got:
        want = reference[record["step"]]
        for key in ("train/loss", "train/lr", "train/grad_norm"):
            assert record[key] == want[key], f"step {record['step']} {key}: {record[key]!r} != {want[key]!r}"
