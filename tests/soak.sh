#!/usr/bin/env bash
# Soak: run the end-to-end suite (tests/e2e/test_e2e_sandbox.py and the quick fault-injection tests)
# ROUNDS times in a row (default 10) while two CPU-bound processes load the machine, and count the
# failing rounds. Timing-sensitive tests show up here as failures. Usage: tests/soak.sh [ROUNDS]
set -u
cd "$(dirname "$0")/.."
rounds=${1:-10}
pytest=.venv/bin/pytest
load=()
stop_load() {
  for pid in "${load[@]}"; do kill "$pid" 2>/dev/null; done
}
trap stop_load EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
for _ in 1 2; do
  python3 -c 'while 1: pass' &
  load+=($!)
done
failures=0
started=$(date +%s)
for round in $(seq 1 "$rounds"); do
  t0=$(date +%s)
  if "$pytest" -q -p no:cacheprovider tests/e2e/test_e2e_sandbox.py tests/e2e/test_faults.py; then
    result=pass
  else
    result=FAIL
    failures=$((failures + 1))
  fi
  echo "soak: round $round/$rounds: $result ($(($(date +%s) - t0)) s)"
done
echo "soak: $failures failing round(s) of $rounds, under 2 CPU-bound load processes, in $(($(date +%s) - started)) s"
[ "$failures" -eq 0 ]
