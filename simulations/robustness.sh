#!/usr/bin/env bash
# The README's robustness table: 3 of 10 point-nav clients attack (huge, zero, sign-flip, noise,
# random-action) or none do (clean), for each aggregator, over seeds 0-2, with the default guards;
# then the mean with the guards off.  Each run is `fedmeta run point-nav-robust` with fault-injection
# overrides.
#   bash simulations/robustness.sh [OUT_DIR] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/robustness}"
seeds="${2:-0-2}"  # a range low-high
run() {  # run NAME OVERRIDES: every seed into $out/NAME/s<seed>; a failed run is recorded, not fatal
  for seed in $(seq "${seeds%-*}" "${seeds#*-}"); do
    dir="$(pwd)/$out/$1/s$seed"
    [ -f "$dir/summary.json" ] || [ -f "$dir/FAILED" ] && continue  # done in an earlier invocation
    rm -rf -- "$dir"  # an interrupted earlier attempt: fedmeta run refuses a directory that holds a run
    code=0
    .venv/bin/fedmeta run point-nav-robust --no-plots --run-config "seed=$seed run-dir='$dir' $2" || code=$?
    if [ "$code" != 0 ]; then mkdir -p "$dir"; echo "exit $code" > "$dir/FAILED"; fi
  done
}
for aggregator in mean median krum; do
  run "clean-$aggregator" "fed.aggregator='$aggregator'"
  for attack in huge zero sign-flip noise random-action; do
    run "$attack-$aggregator" "fed.aggregator='$aggregator' faults.kind='$attack' faults.clients='0,1,2'"
  done
done
for attack in clean huge zero sign-flip noise random-action; do
  faults=""; [ "$attack" != clean ] && faults="faults.kind='$attack' faults.clients='0,1,2'"
  run "$attack-unguarded" "fed.clip-factor=0 fed.reject-factor=0 fed.center-factor=0 fed.quarantine-after=0 $faults"
done
.venv/bin/python simulations/robustness_table.py "$out" | tee "$out/table.md"
