#!/usr/bin/env bash
# Create .venv with the pinned, tested dependency set (idempotent: a stamp skips a repeat install).
# torch is installed first as the CPU build 2.13.0, so nothing pulls CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), "fedmeta needs Python 3.11 or 3.12"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.fedmeta-setup-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0" -c constraints.txt
  .venv/bin/python -m pip install -q -e ".[dev]" -c constraints.txt
  rm -f .venv/.fedmeta-setup-*
  touch "$stamp"
fi
