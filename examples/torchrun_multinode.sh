#!/bin/bash
# Multi-node training without a scheduler: run this script once on every node.
#
#   # node 0 (its address is MASTER_ADDR), then nodes 1..N-1 with their NODE_RANK:
#   NNODES=4 NODE_RANK=0 MASTER_ADDR=10.0.0.1 examples/torchrun_multinode.sh \
#       configs/cpt_gemma2_2b.yaml run.name=cpt-gemma2-2b-a
#   NNODES=4 NODE_RANK=1 MASTER_ADDR=10.0.0.1 examples/torchrun_multinode.sh \
#       configs/cpt_gemma2_2b.yaml run.name=cpt-gemma2-2b-a
#   ...
#
# Every node must see the same paths (shared file system for data, checkpoints and the run
# directory) and pass the same config and overrides. To stop cleanly, send SIGUSR1 (or SIGTERM)
# to the torchrun process on any node: the workers finish the step, save, and exit; running the
# same command again resumes from that checkpoint.
# On one machine it also works as a CPU smoke test of the launch path:
#   NNODES=1 NPROC_PER_NODE=2 examples/torchrun_multinode.sh configs/cpt_tiny_cpu.yaml \
#       parallel.tensor_model_parallel_size=2
set -euo pipefail

: "${NNODES:?set NNODES (number of nodes)}"
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
if [[ -z ${NPROC_PER_NODE:-} ]]; then
    # One worker per GPU; on a machine without GPUs, one (set NPROC_PER_NODE for more).
    NPROC_PER_NODE=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)
    [[ $NPROC_PER_NODE -gt 0 ]] || NPROC_PER_NODE=1
fi
CONFIG=${1:?usage: torchrun_multinode.sh CONFIG [key=value ...]}
shift

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCHRUN=${TORCHRUN:-$HERE/.venv/bin/torchrun}
[[ -x $TORCHRUN ]] || TORCHRUN=torchrun

export CUDA_DEVICE_MAX_CONNECTIONS=1 # Megatron's TP communication overlap needs one work queue
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

exec "$TORCHRUN" \
    --nnodes="$NNODES" \
    --node-rank="$NODE_RANK" \
    --nproc-per-node="$NPROC_PER_NODE" \
    --master-addr="$MASTER_ADDR" \
    --master-port="$MASTER_PORT" \
    --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \
    --shutdown-timeout="${SHUTDOWN_TIMEOUT:-110}" \
    -m tower_megatron train "$CONFIG" "$@"
