"""``benchmarks/gpu_smoke.py --cpu``: the GPU smoke script runs end to end here (shapes shrunk,
TE/FP8 parts reported as skipped), so it is not first run on a rented GPU; its memory part holds
the planner to the probe's measurement (state bytes equal, activations within 10%)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_smoke.py"


def test_gpu_smoke_cpu_mode(tmp_path):
    out = tmp_path / "gpu_smoke.json"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu", "--output", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu"
    parts = result["parts"]
    assert parts["te_parity"] == {"status": "skipped", "reason": "--cpu: no GPU"}
    assert parts["bf16_vs_fp8"]["status"] == "partial"
    assert parts["bf16_vs_fp8"]["runs"]["fp8"] == {"status": "skipped", "reason": "--cpu: no GPU"}
    assert len(parts["bf16_vs_fp8"]["runs"]["fp32"]["losses"]) == 4
    assert parts["throughput"]["fp8"]["status"] == "skipped"
    assert parts["throughput"]["fp32"]["status"] == "ok" and parts["throughput"]["fp32"]["mfu"] is None
    assert set(parts["memory"]) == {"small-fp32", "gemma-fp32"}
    for name, entry in parts["memory"].items():
        assert entry["state_equal"], (name, entry)
        assert abs(entry["activations_ratio"] - 1) <= 0.10, (name, entry)
