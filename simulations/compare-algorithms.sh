#!/usr/bin/env bash
# Run one preset for every client algorithm over seeds 0-4 and compare them (the README's held-out tables).
#   bash simulations/compare-algorithms.sh point-nav-heldout [OUT_DIR] [SEEDS] [extra --run-config overrides]
# e.g. bash simulations/compare-algorithms.sh grid-heldout results/grid-heldout 0-4
# OUT_DIR must not hold the runs of an earlier invocation: fedmeta run refuses a run directory that holds a run.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:?usage: compare-algorithms.sh PRESET [OUT_DIR] [SEEDS] [OVERRIDES]}"
out="${2:-results/$preset}"
seeds="${3:-0-4}"
extra="${4:-}"
bash scripts/setup.sh
for algorithm in memrl independent fedavg fedavg-ft fedprox ditto; do
  .venv/bin/fedmeta run "$preset" --no-plots --seeds "$seeds" \
      --run-config "algorithm='$algorithm' run-dir='$(pwd)/$out/$algorithm' $extra"
done
.venv/bin/fedmeta compare "$out"/memrl "$out"/independent "$out"/fedavg "$out"/fedavg-ft "$out"/fedprox "$out"/ditto \
    --out "$out/comparison"
