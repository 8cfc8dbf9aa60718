#!/usr/bin/env bash
# The demo command: set up (or reuse) .venv, then run the whole Tower+ recipe on the tiny model on
# CPU over the embedded data (token files → CPT → SFT → WPO → GRPO, eval after each stage, Pareto
# report, plots, summary.md) into runs/recipes/tiny-cpu/. Rerunning skips finished stages and
# resumes an interrupted one. Extra key=value arguments override the recipe, e.g.
#   ./scripts/demo.sh stage_overrides.cpt=[train.train_steps=20]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
export PYTHONWARNINGS=ignore WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec tower-megatron recipe configs/recipes/tiny-cpu.yaml "$@"
