"""``tower-megatron launch``: the exact commands a 2-node × 8-GPU job would run (torchrun and
sbatch, checked by bash's parser), the flag spelling, errors, and a real local launch through
torchrun on CPU (2 workers, TP=2) that trains and writes per-rank logs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tower_megatron.cli import main

RECIPE = "configs/cpt_gemma2_9b.yaml"  # TP 4: 16 GPUs hold 4 replicas

TORCHRUN_2x8 = """\
# 2 node(s) × 8 GPUs = 16 ranks; run this on every node (c10d rendezvous at node001:29500).
# Logs: logs/cpt-gemma2-9b/<host>/ (one directory per node, one file per rank).
export CUDA_DEVICE_MAX_CONNECTIONS=1
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
export TORCH_NCCL_AVOID_RECORD_STREAMS=1
export NCCL_NVLS_ENABLE=0
export NCCL_DEBUG=WARN
export OMP_NUM_THREADS=8
export NCCL_IB_HCA=mlx5
mkdir -p logs/cpt-gemma2-9b
python -m tower_megatron.runtime.torchrun \\
    --nnodes=2 \\
    --nproc-per-node=8 \\
    --rdzv-backend=c10d \\
    --rdzv-endpoint=node001:29500 \\
    --rdzv-id=cpt-gemma2-9b \\
    --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \\
    --shutdown-timeout=110 \\
    --log-dir=logs/cpt-gemma2-9b/$(hostname) \\
    --redirects=3 \\
    --tee=3 \\
    -m tower_megatron train configs/cpt_gemma2_9b.yaml train.train_steps=100
"""

SBATCH_2x8 = """\
#!/bin/bash
# Written by `tower-megatron launch configs/cpt_gemma2_9b.yaml`: 2 × 8 GPUs.
# USR1 arrives at this script before the time limit (or from `scancel --signal=USR1 --batch`):
# it is forwarded to the job step, the trainer saves and stops, and the job is requeued;
# the requeued job resumes from that checkpoint.
#SBATCH --job-name=cpt-gemma2-9b
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/cpt-gemma2-9b/%x-%j.out
#SBATCH --partition=gpu
set -euo pipefail
mkdir -p logs/cpt-gemma2-9b
export CUDA_DEVICE_MAX_CONNECTIONS=1
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
export TORCH_NCCL_AVOID_RECORD_STREAMS=1
export NCCL_NVLS_ENABLE=0
export NCCL_DEBUG=WARN
export OMP_NUM_THREADS=8
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=29500
export MASTER_ADDR MASTER_PORT
PREEMPTED=0
forward_usr1() { PREEMPTED=1; scancel --signal=USR1 "$SLURM_JOB_ID" || true; }
trap forward_usr1 USR1
srun --kill-on-bad-exit=1 --cpu-bind=none --output=logs/cpt-gemma2-9b/%x-%j-%N.out python -m tower_megatron.runtime.torchrun \\
    --nnodes="$SLURM_JOB_NUM_NODES" \\
    --nproc-per-node=8 \\
    --rdzv-backend=c10d \\
    --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" \\
    --rdzv-id="$SLURM_JOB_ID" \\
    --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \\
    --shutdown-timeout=110 \\
    -m tower_megatron train configs/cpt_gemma2_9b.yaml optimizer.lr=2e-5 &
SRUN_PID=$!
set +e
while true; do wait "$SRUN_PID"; RC=$?; kill -0 "$SRUN_PID" 2>/dev/null || break; done
set -e
if [[ $PREEMPTED == 1 ]]; then scontrol requeue "$SLURM_JOB_ID"; fi
exit "$RC"
"""


def test_torchrun_dry_run_2_nodes(capsys):
    args = ["launch.nodes=2", "launch.gpus_per_node=8", "launch.dry_run=true", "launch.master_addr=node001"]
    assert main(["launch", RECIPE, *args, "launch.env.NCCL_IB_HCA=mlx5", "train.train_steps=100"]) == 0
    assert capsys.readouterr().out == TORCHRUN_2x8


def test_flags_spell_the_same_job(capsys):
    flags = ["--", "--nodes", "2", "--gpus-per-node=8", "--dry-run", "--master-addr", "node001"]
    assert main(["launch", RECIPE, *flags, "launch.env.NCCL_IB_HCA=mlx5", "train.train_steps=100"]) == 0
    assert capsys.readouterr().out == TORCHRUN_2x8


def test_sbatch_dry_run_2_nodes_parses_in_bash(capsys, tmp_path):
    args = ["--", "--nodes", "2", "--slurm", "--dry-run", "--time", "04:00:00", "--partition", "gpu"]
    assert main(["launch", RECIPE, *args, "optimizer.lr=2e-5"]) == 0
    text = capsys.readouterr().out
    assert text == SBATCH_2x8
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_sbatch_without_slurm_writes_the_script(tmp_path, capsys):
    script = tmp_path / "job.sbatch"
    code = main(["launch", RECIPE, "launch.nodes=2", "launch.scheduler=slurm", f"launch.script={script}"])
    assert code == 1 and "sbatch` is not on PATH" in capsys.readouterr().out  # no Slurm here
    assert script.read_text().startswith("#!/bin/bash\n# Written by `tower-megatron launch")


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["launch.nodes=1"],
            "launch.nodes × launch.gpus_per_node = 8 GPUs is not divisible by TP × PP × CP = 32",
        ),
        (["launch.scheduler=pbs"], "launch.scheduler='pbs' is not one of torchrun, slurm, nemo_run"),
        (["launch.nodez=4"], "unknown config key 'launch.nodez'"),
    ],
)
def test_errors(args, message, capsys):
    assert main(["launch", "configs/cpt_qwen2.5_72b_fp8.yaml", *args]) == 2
    assert message in capsys.readouterr().err


def test_nemo_run_is_optional(capsys):
    pytest.importorskip("omegaconf")
    try:
        import nemo_run  # noqa: F401
    except ImportError:
        assert main(["launch", RECIPE, "launch.nodes=2", "--", "--nemo-run", "--dry-run"]) == 2
        assert "pip install 'tower-megatron[launch]'" in capsys.readouterr().err
    else:  # with NeMo-Run installed: its own dry run of the Slurm executor
        assert main(["launch", RECIPE, "launch.nodes=2", "--", "--nemo-run", "--dry-run"]) == 0


def test_local_launch_trains_through_torchrun(tmp_path):
    """launch.nodes=1 without dry_run runs (the torchrun wrapper) here: 2 CPU workers, TP=2, 2 steps."""
    from tower_megatron.testing.tiny import build_tiny_assets

    assets = build_tiny_assets(tmp_path / "assets")
    recipe = {
        "run": {"name": "tiny", "output_dir": str(tmp_path / "runs"), "device": "cpu"},
        "model": {
            "num_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "max_position_embeddings": 128,
        },
        "parallel": {"tensor_model_parallel_size": 2},
        "train": {
            "train_steps": 2,
            "micro_batch_size": 2,
            "global_batch_size": 4,
            "seq_length": 64,
            "precision": "fp32",
        },
        "data": {
            "tokenizer": {"type": "sentencepiece", "path": assets.tokenizer},
            "paths": list(assets.prefixes.values()),
        },
        "logging": {"progress_bar": False, "tensorboard": False},
        "checkpoint": {"save_at_end": False},
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))
    torchrun = f"{sys.executable} -m tower_megatron.runtime.torchrun"  # the default, this venv's python
    args = [
        "launch.gpus_per_node=2",
        f"launch.torchrun={torchrun}",
        f"launch.log_dir={tmp_path / 'logs'}",
        "launch.env.OMP_NUM_THREADS=1",
    ]
    assert main(["launch", str(config), *args]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train/loss" in m] == [1, 2]
    rank_logs = sorted(p.parent.name for p in (tmp_path / "logs/tiny").glob("*/*/attempt_0/*/stdout.log"))
    assert rank_logs == ["0", "1"]
