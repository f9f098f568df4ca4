#!/usr/bin/env bash
# Runs every test binary of a build and prints one summary line:
#   N passed, N failed
# Each binary is a Criterion suite; its "Synthesis" line is summed up.
# A binary that dies without a synthesis counts as one failure.
# With a fuzz build as second argument, each fuzzer counts as one test.
set -u
build=${1:-build}
export TS_BUILD_DIR
TS_BUILD_DIR=$(cd "$build" && pwd)
export TS_SOURCE_DIR
TS_SOURCE_DIR=$(cd "$(dirname "$0")/.." && pwd)
export LSAN_OPTIONS="suppressions=$TS_SOURCE_DIR/tests/lsan.supp:print_suppressions=0"
# Sanitizer builds run 3-4 times slower: the differential cache test does
# a third of its ops there (the plain build's 150,000 are the check; this
# run is for the sanitizers), so it stays inside the 120 s a test gets.
case "$(basename "$TS_BUILD_DIR")" in
  build) ;;
  *) export TS_CACHE_DIFF_OPS="${TS_CACHE_DIFF_OPS:-50000}" ;;
esac
passed=0; failed=0
log_dir="$TS_BUILD_DIR/test-logs"; mkdir -p "$log_dir"
for t in "$TS_BUILD_DIR"/tests/unit/test_* "$TS_BUILD_DIR"/tests/e2e/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  log="$log_dir/$name.log"
  timeout -k 10 600 "$t" --jobs 2 --timeout 120 >"$log" 2>&1
  rc=$?
  line=$(grep -a 'Synthesis:' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    p=$(sed -E 's/.*Passing: ([0-9]+).*/\1/' <<<"$line")
    f=$(sed -E 's/.*Failing: ([0-9]+).*/\1/' <<<"$line")
    c=$(sed -E 's/.*Crashing: ([0-9]+).*/\1/' <<<"$line")
    passed=$((passed + p)); failed=$((failed + f + c))
    # A suite whose counts are clean but whose process failed (a leak or
    # sanitizer report at exit) counts as one more failure.
    if [ "$rc" -ne 0 ] && [ $((f + c)) -eq 0 ]; then failed=$((failed + 1)); f=1; fi
  else
    p=0; f=1; failed=$((failed + 1))
  fi
  if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
    echo "--- $name (exit $rc) ---"; grep -aE 'FAIL|Assertion|Crash|Timeout|ERROR|Warning|runtime error|AddressSanitizer' "$log" | head -n 40
  fi
  printf '%-28s %s\n' "$name" "${line:-no synthesis (exit $rc)}"
done
# The fuzzers of a fuzz build (second argument), one test each: a few
# seconds on the checked-in corpus (every entry is run first, the
# regressions among them), new inputs into a temporary directory so that
# the corpus stays as checked in. A crash, a sanitizer report or a broken
# differential fails it.
fuzz_build=${2:-}
if [ -n "$fuzz_build" ]; then
  . "$TS_SOURCE_DIR/tests/fuzz/flags.sh"
  for f in "$fuzz_build"/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    log="$log_dir/$name.log"
    work=$(mktemp -d)
    # shellcheck disable=SC2046
    timeout -k 10 120 "$f" $(fuzz_flags "$TS_SOURCE_DIR" "$name") -max_total_time="${TS_FUZZ_SECONDS:-3}" \
      -print_final_stats=1 -artifact_prefix="$log_dir/$name-" \
      "$work" "$TS_SOURCE_DIR/tests/fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    rm -rf "$work"
    runs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    if [ "$rc" -eq 0 ]; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      echo "--- $name (exit $rc) ---"; grep -aE 'fuzz:|ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -n 20
    fi
    printf '%-28s %s\n' "$name" "fuzz: ${runs:-?} runs, $([ "$rc" -eq 0 ] && echo pass || echo FAIL)"
  done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
