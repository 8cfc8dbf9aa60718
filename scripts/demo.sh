#!/usr/bin/env bash
# The demo command: set up (or reuse) .venv, then run a tiny continued-pretraining job on CPU over
# the embedded multilingual corpus (token files are built on first use). Extra key=value
# arguments override the recipe, e.g. ./scripts/demo.sh train.train_steps=20
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
export PYTHONWARNINGS=ignore
exec tower-megatron train configs/cpt_tiny_cpu.yaml "$@"
