#!/usr/bin/env bash
# Create or reuse the project's Python 3.12+ virtual environment (.venv) and install the package
# with its dev extras. Sourced by scripts/demo.sh and scripts/test.sh; safe to run repeatedly:
# it reinstalls only when setup.py changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TOWER_VENV:-$ROOT/.venv}"

version_ok() {  # is "$1" a Python >= 3.12?
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.12 python3.13 python3.14 python3 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && version_ok "$(command -v "$candidate")"; then
      command -v "$candidate"; return 0
    fi
  done
  # pyenv keeps interpreters outside PATH unless selected: look at its versions directly.
  local pyenv_root
  pyenv_root="$( (command -v pyenv >/dev/null 2>&1 && pyenv root) || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
  for candidate in $(ls -d "$pyenv_root"/versions/3.1[2-9]* 2>/dev/null | sort -V); do
    if [ -x "$candidate/bin/python" ] && version_ok "$candidate/bin/python"; then
      echo "$candidate/bin/python"; return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! version_ok "$VENV/bin/python"; then
  if ! PY="$(find_python)"; then
    cat >&2 <<'MSG'
tower-megatron needs Python 3.12 or newer (megatron-core >= 0.17 requires it), and none was found
on PATH or under pyenv. Install one, then re-run this command, e.g.:
  pyenv install 3.12            # with pyenv
  sudo apt install python3.12 python3.12-venv   # Debian/Ubuntu
  uv python install 3.12        # with uv
or point PYTHON=/path/to/python3.12 at an existing interpreter.
MSG
    exit 1
  fi
  echo "[bootstrap] creating $VENV with $PY" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.tower-megatron-installed"
HASH="$(cat "$ROOT/setup.py" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$HASH" ]; then
  echo "[bootstrap] installing tower-megatron and its dependencies into $VENV (first time: a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
  echo "$HASH" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
