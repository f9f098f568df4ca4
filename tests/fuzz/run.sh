#!/usr/bin/env bash
# make fuzz: runs each fuzzer of a build for a long time, one after the
# other, niced (other builds share the machine).
#   tests/fuzz/run.sh BUILD SECONDS [NAME...]
# FUZZ_RUNS=N stops a harness after N executions if that comes first.
# A harness works on BUILD/corpus/NAME (the inputs it finds, kept between
# runs), seeded from tests/fuzz/corpus/NAME; a crash is saved as
# BUILD/artifacts/NAME-crash-*, with the log beside it. Ends with one line
# per harness: its executions and whether it found anything.
set -u
build=${1:-build-fuzz}
seconds=${2:-600}
shift 2 2>/dev/null || shift $#
src=$(cd "$(dirname "$0")/../.." && pwd)
. "$src/tests/fuzz/flags.sh"
export TS_SOURCE_DIR=$src
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in "$build"/fuzz/fuzz_*; do names+=("$(basename "$f")"); done
fi
failed=0
for name in "${names[@]}"; do
  mkdir -p "$build/corpus/$name" "$build/artifacts"
  log="$build/artifacts/$name.log"
  start=$(date +%s)
  # shellcheck disable=SC2046
  nice -n 10 "$build/fuzz/$name" $(fuzz_flags "$src" "$name") -max_total_time="$seconds" \
    ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -print_final_stats=1 -artifact_prefix="$build/artifacts/$name-" \
    "$build/corpus/$name" "$src/tests/fuzz/corpus/$name" >"$log" 2>&1
  rc=$?
  runs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "$name: ${runs:-?} executions in $(( $(date +%s) - start )) s, exit $rc (log: $log)"
  if [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    grep -aE 'fuzz:|ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -n 8
  fi
done
[ "$failed" -eq 0 ]
