#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, integration tests on real Flower runtimes included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# Two workers (FEDMETA_TEST_WORKERS): the simulation tests spend much of their time starting Ray and
# waiting; a test file stays on one worker (its module fixtures run once).
exec .venv/bin/python -m pytest -p no:cacheprovider -rA --durations=15 \
    -n "${FEDMETA_TEST_WORKERS:-2}" --dist loadfile "$@"
