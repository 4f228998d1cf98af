#!/usr/bin/env bash
# Set up (if needed) and run the main job: the default experiment (MEMRL grid navigation).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fedmeta run "$@"
