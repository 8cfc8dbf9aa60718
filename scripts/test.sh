#!/usr/bin/env bash
# The test command: set up (or reuse) .venv, then run the CPU test suite. Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# No PYTHONWARNINGS=ignore: pyproject's filterwarnings decides what shows (torch / Megatron-Core
# deprecations do, in the summary, without failing).
export WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec python -m pytest -q "$@"
