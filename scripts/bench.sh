#!/usr/bin/env bash
# Runs the issue-2 benchmark workloads with therasync-bench and prints their
# JSON lines (one per run, then a "stat":"median" line per workload).
#   scripts/bench.sh [BUILD_DIR]        (make bench passes build/)
# Each workload starts its own therasyncd on free loopback ports in a fresh
# temporary data dir. Environment overrides: RUNS (default 3), INGEST_N,
# UPDATE_N, UPDATE_DOCS, COLDSTART_N, MAX_SECONDS (per workload, default 900).
# Diagnostics (the daemon's log) go to stderr; stdout holds only JSON lines.
set -u
build=${1:-build}
bench="$build/therasync-bench"
[ -x "$bench" ] || { echo "bench.sh: $bench is not built (make first)" >&2; exit 2; }
[ -x "$build/therasyncd" ] || { echo "bench.sh: $build/therasyncd is not built" >&2; exit 2; }
runs=${RUNS:-3}
max=${MAX_SECONDS:-900}
rc=0
run() {
  # timeout is a second bound on top of the bench's own --max-seconds.
  timeout -k 10 $((max + 60)) "$bench" --runs "$runs" --max-seconds "$max" "$@" || rc=1
}
run --workload ingest --n "${INGEST_N:-100000}" --clients 8 --inflight 64
run --workload update --n "${UPDATE_N:-100000}" --docs "${UPDATE_DOCS:-100000}" --clients 8 --inflight 64
run --workload coldstart --n "${COLDSTART_N:-1000000}"
exit $rc
