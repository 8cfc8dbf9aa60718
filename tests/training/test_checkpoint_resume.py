"""Exact resume through real interruptions of the real CLI (`torchrun --nproc-per-node=2`).

One uninterrupted 14-step run (DP=2, a checkpoint every 3 steps, keep_last=2) is the reference.
A second run over the same config is interrupted three ways and restarted with the same command
each time:

1. SIGTERM to rank 1 only: both ranks stop at the same step boundary, save, exit 0.
2. SIGKILL (kill -9) of every process in the middle of saving step 9's checkpoint (after its
   shards are on disk, before the completion mark): the newest complete checkpoint (iter_6, or
   the first stop's if a loaded machine let it run past step 6) and ``latest`` stay intact, the
   interrupted ``.tmp_iter_0000009`` is removed at the next start.
3. SIGUSR1 to rank 0 only: stop, save, exit 0.

Every loss, learning rate and grad norm logged by the interrupted run (steps logged twice after a
restart included) equals the reference's bit for bit (asserted with ``==`` on fp32 CPU runs), which
proves model, Adam state, LR schedule, data position and RNG are all restored.

Run as a script under torchrun (``--kill-during-save STEP CONFIG ...``) this file is the
kill -9 injector: the training CLI's ``train_main`` with a SIGKILL after step STEP's shards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tower_megatron.testing.processes import complete_checkpoints, kill_tree, metrics_records, wait_or_fail

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--monitor-interval=0.1"]
CLI = [*TORCHRUN, "-m", "tower_megatron", "train"]
STEPS = 14
KILL_STEP = 9  # the kill -9 lands inside this step's checkpoint save
# Generous: launches run on a loaded 2-core machine; waits end as soon as the condition holds.
TIMEOUT = 900


# ---------------------------------------------------------------------------- process helpers
def _launch(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    handle = log.open("w")
    return subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)


@contextlib.contextmanager
def _running(cmd: list[str], log: Path):
    """A launch that is killed (with its whole process tree) if the test fails while it runs."""
    proc = _launch(cmd, log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_tree(proc)


def _worker_pid(proc: subprocess.Popen, rank: int) -> int:
    import psutil

    for child in psutil.Process(proc.pid).children():
        if child.environ().get("RANK") == str(rank):
            return child.pid
    raise AssertionError(f"no rank {rank} under torchrun {proc.pid}")


def _signal_at_step(proc: subprocess.Popen, run_dir: Path, min_step: int, rank: int, sig: int) -> None:
    """Sends ``sig`` to one rank once a step ≥ ``min_step`` was logged by this launch."""
    already = len(metrics_records(run_dir))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        new = metrics_records(run_dir)[already:]
        if any(r["step"] >= min_step for r in new):
            os.kill(_worker_pid(proc, rank), sig)
            return
        time.sleep(0.05)
    raise AssertionError(f"run ended or stalled before step {min_step} (exit {proc.poll()})")


def _run(cmd: list[str], log: Path, expect_ok: bool = True) -> int:
    with _running(cmd, log) as proc:
        code = wait_or_fail(proc, log, TIMEOUT)
    if expect_ok:
        assert code == 0, f"exit {code}:\n{log.read_text()[-4000:]}"
    return code


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def resume_env(tmp_path_factory) -> dict:
    from tower_megatron.config import to_yaml
    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

    root = tmp_path_factory.mktemp("resume")
    assets = build_tiny_assets(root / "assets")
    job = tiny_job(
        assets,
        root / "reference",
        f"train.train_steps={STEPS}",
        "checkpoint.save_interval=3",
        "checkpoint.keep_last=2",
        "data.split=98,2,0",  # no empty test split (Megatron loops forever building one)
    )
    config = root / "job.yaml"
    config.write_text(to_yaml(job))
    return {"root": root, "config": str(config)}


@pytest.fixture(scope="module")
def reference(resume_env) -> dict[int, dict]:
    root = resume_env["root"]
    _run([*CLI, resume_env["config"], "run.name=reference"], root / "reference.log")
    records = {r["step"]: r for r in metrics_records(root / "reference")}
    assert sorted(records) == list(range(1, STEPS + 1))
    # keep_last=2: older ones were pruned once iter_12 existed.
    assert complete_checkpoints(root / "reference" / "checkpoints") == ["iter_0000009", "iter_0000012"]
    return records


# ---------------------------------------------------------------------------- the test
def test_interrupted_run_resumes_exactly(resume_env, reference):
    root, config = resume_env["root"], resume_env["config"]
    run_dir, ckpt = root / "interrupted", root / "interrupted" / "checkpoints"
    cli = [*CLI, config, "run.name=interrupted"]

    # 1. SIGTERM reaches rank 1 only; the all-reduced flag stops both at one step boundary.
    with _running(cli, root / "sigterm.log") as proc:
        _signal_at_step(proc, run_dir, 2, rank=1, sig=signal.SIGTERM)
        assert wait_or_fail(proc, root / "sigterm.log", TIMEOUT) == 0, (root / "sigterm.log").read_text()[-4000:]
    stopped = metrics_records(run_dir)[-1]["step"]
    # On a loaded machine the test may notice step 2 late; any stop before the kill step works.
    assert stopped < KILL_STEP, f"the signal came too late (step {stopped}) for the rest of the story"
    last_good = max(stopped, 6)  # the newest complete checkpoint when the kill hits step 9's save
    assert f"iter_{stopped:07d}" in complete_checkpoints(ckpt)
    assert (ckpt / "latest").read_text().strip() == f"iter_{stopped:07d}"

    # 2. kill -9 of every training process while step 9's checkpoint is being written.
    log = root / "kill.log"
    code = _run([*TORCHRUN, __file__, "--kill-during-save", "9", config, "run.name=interrupted"], log, False)
    assert code != 0, log.read_text()[-4000:]
    assert f"resumed from {ckpt / f'iter_{stopped:07d}'}" in log.read_text()
    assert (ckpt / ".tmp_iter_0000009").is_dir(), "the kill did not happen during the save"
    assert any((ckpt / ".tmp_iter_0000009").iterdir()), "the interrupted save wrote nothing"
    assert complete_checkpoints(ckpt)[-1] == f"iter_{last_good:07d}"
    assert (ckpt / "latest").read_text().strip() == f"iter_{last_good:07d}"
    assert max(r["step"] for r in metrics_records(run_dir)) == 8  # step 9 was killed before its log line

    # 3. Restart: the interrupted save is cleaned up; SIGUSR1 to rank 0 only stops it again.
    with _running(cli, root / "sigusr1.log") as proc:
        _signal_at_step(proc, run_dir, last_good + 1, rank=0, sig=signal.SIGUSR1)
        assert wait_or_fail(proc, root / "sigusr1.log", TIMEOUT) == 0, (root / "sigusr1.log").read_text()[-4000:]
    log_text = (root / "sigusr1.log").read_text()
    assert f"resumed from {ckpt / f'iter_{last_good:07d}'}" in log_text
    assert "removed the interrupted save" in log_text
    assert not (ckpt / ".tmp_iter_0000009").exists()
    second_stop = metrics_records(run_dir)[-1]["step"]
    assert last_good + 1 <= second_stop < STEPS

    # 4. Restart to the end.
    _run(cli, root / "final.log")
    records = metrics_records(run_dir)
    assert records[-1]["step"] == STEPS
    assert {r["step"] for r in records} == set(range(1, STEPS + 1))
    assert len(records) > STEPS  # steps re-run after the kill were logged twice
    for record in records:
        want = reference[record["step"]]
        for key in ("train/loss", "train/lr", "train/grad_norm"):
            assert record[key] == want[key], f"step {record['step']} {key}: {record[key]!r} != {want[key]!r}"
    kept = complete_checkpoints(ckpt)
    assert len(kept) == 2 and kept[-1] == "iter_0000012", kept  # keep_last=2


# ---------------------------------------------------------------------------- kill -9 injector
def _kill_during_save(step: int, config: str, overrides: list[str]) -> int:
    """``tower-megatron train`` on this rank, SIGKILLed inside the save of step ``step``: after
    Megatron wrote its shards, before the trainer marks the checkpoint complete."""
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    real_save = dist_checkpointing.save

    def save_then_die(state, directory, *args, **kwargs):
        result = real_save(state, directory, *args, **kwargs)
        if Path(directory).name == f".tmp_iter_{step:07d}":
            dist.barrier()  # both ranks' shards are written: the worst moment to die
            if os.getpgid(0) == os.getpid():  # torchrun gives each worker its own session
                os.killpg(os.getpid(), signal.SIGKILL)  # this rank and its writer helper process
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    dist_checkpointing.save = save_then_die
    from tower_megatron.training.entry import train_main

    return train_main(config, overrides)


if __name__ == "__main__" and sys.argv[1:2] == ["--kill-during-save"]:
    sys.exit(_kill_during_save(int(sys.argv[2]), sys.argv[3], sys.argv[4:]))
