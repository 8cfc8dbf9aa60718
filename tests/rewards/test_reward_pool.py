"""RewardPool: results in order and equal to direct scoring; crashing, hanging and raising
verifiers score 0 and are counted while the pool and this process go on."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from reward_helpers import crash_or_score, wait_gone

from tower_megatron.rewards import RewardPool, SandboxLimits, SandboxUnavailableError, score

MATH = {"type": "math", "answer": "1/2"}
CODE = {"type": "code", "tests": ["assert square(3) == 9"]}
SQUARE = "```python\ndef square(x):\n    return x * x\n```"


def test_pool_matches_direct_scoring_and_survives_broken_verifiers():
    responses = ["so \\boxed{0.5}", "CRASH", SQUARE, "HANG", "RAISE", "The answer is 3",
                 "```python\ndef square(x):\n    return x + x\n```"]
    specs = [MATH, MATH, CODE, MATH, MATH, MATH, CODE]
    # bounds generous enough for a loaded machine; HANG waits out the pool's whole timeout
    limits = SandboxLimits(wall_time_s=12, cpu_time_s=5, memory_mb=256)
    with RewardPool(num_workers=2, timeout_s=15, scorer=crash_or_score, code_limits=limits,
                    warmup=["math"]) as pool:
        batch = pool.score_batch(responses, specs)
        assert batch.counts == {"scored": 4, "timeouts": 1, "crashes": 1, "errors": 1}
        assert batch.values == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        for i in (0, 2, 5, 6):  # what the workers computed is what scoring here gives
            assert batch.results[i].to_dict() == _without_timing(score(responses[i], specs[i]).to_dict(),
                                                                batch.results[i].to_dict())
        assert "died" in batch.results[1].error and "timed out" in batch.results[3].error
        assert batch.results[4].error == "ValueError: verifier bug"
        # the pool replaced its dead workers and keeps scoring
        again = pool.score_batch(["\\boxed{1/2}"], [MATH])
        assert again.values == [1.0] and again.counts["scored"] == 1
        assert pool.totals["crashes"] == 1 and pool.totals["scored"] == 5


def _without_timing(expected: dict, got: dict) -> dict:
    """The sandbox's wall time differs between two runs of the same program; all else must not."""
    if "wall_s" in expected["details"]:
        expected["details"]["wall_s"] = got["details"]["wall_s"]
    return expected


def test_pool_raises_when_the_code_sandbox_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("TOWER_MEGATRON_BWRAP", str(tmp_path / "missing-bwrap"))  # inherited by workers
    with RewardPool(num_workers=1, timeout_s=20, warmup=()) as pool, pytest.raises(
        SandboxUnavailableError, match="refuses"
    ):
        pool.score_batch([SQUARE], [CODE])


def test_unknown_warmup_name_lists_the_rewards():
    with pytest.raises(KeyError, match="Known: code, combined, ifeval, math, translation"):
        RewardPool(num_workers=1, warmup=["maths"])


def test_a_timed_out_code_item_takes_its_sandbox_down():
    """The pool's bound is shorter than the sandbox's: killing the worker must kill the box and the
    processes in it (bwrap dies with its parent, the PID namespace with bwrap)."""
    marker = f"pool-box-{uuid.uuid4().hex}"
    body = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}])"
    limits = SandboxLimits(wall_time_s=120, cpu_time_s=120, memory_mb=256)
    with RewardPool(num_workers=1, timeout_s=3, code_limits=limits, warmup=["code"]) as pool:
        batch = pool.score_batch([f"```python\n{body}\n```"], [CODE])
        assert batch.counts["timeouts"] == 1 and batch.values == [0.0]
        assert wait_gone(marker) == []
        scratch = Path(pool._scratch)
        # the killed worker's sandbox dir stays until the pool closes
        assert [p.name.startswith("tower-sandbox-") for p in scratch.iterdir()] == [True]
    assert not scratch.exists()

